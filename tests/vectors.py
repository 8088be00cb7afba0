"""The providers' published test vectors, read from docs/providers.md (the repository's own copy)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

PROVIDERS_DOC = Path(__file__).resolve().parent.parent / "docs" / "providers.md"


def _load() -> dict[str, str]:
    block = re.search(r"```vectors\n(.*?)```", PROVIDERS_DOC.read_text(encoding="utf-8"), flags=re.S)
    if block is None:
        raise LookupError(f"{PROVIDERS_DOC} has no ```vectors block")
    vectors: dict[str, str] = {}
    for line in block.group(1).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition(": ")
            vectors[name.strip()] = value.strip()
    return vectors


VECTORS = _load()

SHOPIFY_SECRET = VECTORS["shopify_callback.secret"]
SHOPIFY_QUERY = VECTORS["shopify_callback.query"]
SHOPIFY_PARAMS = parse_qsl(SHOPIFY_QUERY)
SHOPIFY_HMAC = VECTORS["shopify_callback.hmac"]
SHOPIFY_NO_STATE_PARAMS = parse_qsl(VECTORS["shopify_callback_no_state.query"])
SHOPIFY_NO_STATE_HMAC = VECTORS["shopify_callback_no_state.hmac"]

PROOF_TOKEN = VECTORS["appsecret_proof.token"]
PROOF_SECRET = VECTORS["appsecret_proof.secret"]
PROOF = VECTORS["appsecret_proof.proof"]

SIGNED_REQUEST_SECRET = VECTORS["signed_request.secret"]
SIGNED_REQUEST = VECTORS["signed_request.value"]
SIGNED_REQUEST_PAYLOAD: dict = json.loads(VECTORS["signed_request.payload"])
