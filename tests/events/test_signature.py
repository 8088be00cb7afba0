"""The webhook's signature, as a receiver checks it: Stripe's scheme, computed here independently."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import time

import pytest

from service.events import signature_header, verify_signature
from tests.command import ROOT

SECRET = "whsec-receiver-0123456789abcdefghijklmnop"
BODY = b'{"id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","kind":"marked_dead","subject":"101"}'


def signed(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def test_the_header_is_t_and_v1_over_timestamp_dot_body() -> None:
    now = int(time.time())
    assert signature_header(BODY, SECRET, timestamp=now) == signed(BODY, now)
    assert verify_signature(BODY, signed(BODY, now), SECRET)
    assert verify_signature(BODY.decode(), signed(BODY, now), SECRET)  # the body as text is the same bytes


def test_a_tampered_body_is_refused() -> None:
    now = int(time.time())
    header = signed(BODY, now)
    assert not verify_signature(BODY.replace(b"marked_dead", b"connected"), header, SECRET)
    assert not verify_signature(BODY + b" ", header, SECRET)


def test_a_replay_older_than_the_tolerance_is_refused() -> None:
    now = int(time.time())
    old = signed(BODY, now - 301)
    assert not verify_signature(BODY, old, SECRET)
    assert verify_signature(BODY, old, SECRET, tolerance=400)
    assert verify_signature(BODY, signed(BODY, now - 299), SECRET)
    assert not verify_signature(BODY, signed(BODY, now + 301), SECRET)  # nor one dated in the future
    # The timestamp is signed: moving it to now breaks the signature.
    moved = old.replace(f"t={now - 301}", f"t={now}")
    assert not verify_signature(BODY, moved, SECRET)


@pytest.mark.parametrize(
    "header",
    [None, "", "v1=abc", "t=,v1=abc", "t=12x,v1=abc", "t=1,t=2,v1=abc", "garbage", "t=%d"],
)
def test_malformed_headers_are_refused(header: str | None) -> None:
    if header == "t=%d":
        header = f"t={int(time.time())}"  # no v1 at all
    assert not verify_signature(BODY, header, SECRET)


def test_another_secret_is_refused_and_any_matching_v1_is_enough() -> None:
    now = int(time.time())
    assert not verify_signature(BODY, signed(BODY, now, "another-secret-0123456789abcdefghij"), SECRET)
    rotating = signed(BODY, now, "old-secret-0123456789abcdefghijklmn") + "," + signed(BODY, now).split(",")[1]
    assert verify_signature(BODY, rotating, SECRET)


def test_a_receiver_imports_verify_signature_without_the_services_database_code() -> None:
    probe = (
        "import sys; from service.events import verify_signature; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'cryptography', 'starlette', 'httpx'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout == "[]\n"
