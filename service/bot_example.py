"""An example Messenger bot on the vault: the pattern to copy when you write your own.

    MESSENGER_VERIFY_TOKEN=... .venv/bin/python -m service.bot_example [--host 127.0.0.1] [--port 8000]

Settings come from the environment and .env, as the service reads them (README, "From the bot"); the
verify token is the one you type into the Meta app's webhook settings. `salesbot demo` runs this bot at
/bot, against its stand-ins, and its page has a button that writes to a Page as a shopper.

For each message a shopper sends to a connected Page, the bot looks up the Page (`page_connection`),
asks the Page's store for a few products through `shopify_client` (the token refreshed and renewed for
it) and answers through `graph_client` (the Page token and its appsecret_proof added for it).

What to keep when you write your own:
- Check X-Hub-Signature-256 over the raw body before reading anything from it; refuse otherwise.
- Answer Meta 200 once the event is handled (or logged as failed), and to a signed event you cannot read
  (logged): anything else makes Meta send the whole batch again.
- Answer each message once: Meta redelivers, so message ids seen in the last 10 minutes are skipped (in
  this process; bots in several processes would keep them in a shared table).
- Log what failed by its error code and the Page, never a token (the vault's errors never carry one), and
  run without an access log: the webhook check's query string carries hub.verify_token.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from service.errors import NotConfigured, ServiceError
from service.printable import escape_logs
from service.providers.facebook import messenger_signature_valid
from service.settings import Settings
from service.vault import TokenStore

logger = logging.getLogger("salesbot.bot_example")
MAX_BODY = 1024 * 1024  # Messenger batches at most a few events a delivery
SEEN_FOR = 600.0  # seconds a message id is remembered: Meta redelivers within minutes
MAX_SEEN = 10_000  # and at most this many, the oldest forgotten first


class Seen:
    """Message ids answered recently: a redelivery of one is skipped. Bounded in time and in size."""

    def __init__(self, window: float = SEEN_FOR, limit: int = MAX_SEEN) -> None:
        self.window, self.limit = window, limit
        self._ids: OrderedDict[str, float] = OrderedDict()

    def first_time(self, message_id: str, now: float | None = None) -> bool:
        """True the first time an id is offered within the window (and remembers it); False after."""
        now = time.monotonic() if now is None else now
        while self._ids and (len(self._ids) >= self.limit or next(iter(self._ids.values())) <= now - self.window):
            self._ids.popitem(last=False)
        if message_id in self._ids:
            return False
        self._ids[message_id] = now
        return True


PRODUCTS = (
    "query Products($first: Int!) { products(first: $first) { edges { node { title "
    "priceRangeV2 { minVariantPrice { amount currencyCode } } } } } }"
)


def create_bot(settings: Settings, *, verify_token: str, store: TokenStore | None = None) -> Starlette:
    """The bot's app: GET and POST /webhook. Without `store`, its lifespan opens one from the settings."""
    if settings.facebook_app_secret is None:
        raise NotConfigured("FACEBOOK_APP_SECRET is not set: the bot cannot check that a webhook comes from Meta.")
    app_secret = str(settings.facebook_app_secret)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if store is not None:
            yield  # the caller's, set below and closed by the caller
            return
        async with TokenStore.open(settings) as opened:  # a store of the bot's own, from settings alone
            app.state.store = opened
            yield

    async def verify(request: Request) -> Response:
        # Meta's subscription check: echo hub.challenge when hub.verify_token is ours.
        params = request.query_params
        given = params.get("hub.verify_token", "")
        if params.get("hub.mode") != "subscribe" or not hmac.compare_digest(given.encode(), verify_token.encode()):
            return PlainTextResponse("Forbidden", status_code=403)
        return PlainTextResponse(params.get("hub.challenge", ""))

    seen = Seen()

    async def receive(request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return PlainTextResponse("Payload too large", status_code=413)
        if not messenger_signature_valid(body, request.headers.get("x-hub-signature-256"), app_secret):
            return PlainTextResponse("Forbidden", status_code=403)
        # Signed by Meta from here on: whatever it holds is answered 200, or Meta sends the batch again.
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict) or event.get("object") != "page":
            logger.warning("a signed delivery that is not a Page event (%d bytes): ignored", len(body))
            return PlainTextResponse("EVENT_RECEIVED")
        messages, skipped = _messages(event)
        if skipped:
            logger.warning("a signed delivery with %d unreadable messaging item(s): those were ignored", skipped)
        for message_id, page_id, psid, text in messages:
            if not seen.first_time(message_id):
                continue  # a redelivery: answered already
            try:
                await answer(request.app.state.store, page_id, psid, text)
            except ServiceError as error:
                logger.warning("could not answer on Page %s: %s", page_id, error.code)
            except Exception as error:  # unreachable, an unreadable answer: its text may hold a URL, so its class
                logger.warning("could not answer on Page %s: %s", page_id, type(error).__name__)
        return PlainTextResponse("EVENT_RECEIVED")

    app = Starlette(
        routes=[Route("/webhook", verify, methods=["GET"]), Route("/webhook", receive, methods=["POST"])],
        lifespan=lifespan,
    )
    if store is not None:
        app.state.store = store
    return app


async def answer(store: TokenStore, page_id: str, psid: str, text: str) -> None:
    """Answer one shopper's message on a Page with a few of its store's products."""
    page = await store.page_connection(page_id)
    if page is None:
        logger.warning("a message for Page %s, which has no token stored", page_id)
        return
    if page.shop is None:
        reply = "Thanks for your message! This shop is not open on Messenger yet."
    else:
        async with store.shopify_client(page.shop) as shopify:
            response = await shopify.post("graphql.json", json={"query": PRODUCTS, "variables": {"first": 3}})
        reply = _reply(page.shop, response.json())
    async with store.graph_client(page_id) as graph:
        await graph.post(
            "me/messages",
            json={"recipient": {"id": psid}, "messaging_type": "RESPONSE", "message": {"text": reply}},
        )


def _reply(shop: str, body: Any) -> str:
    edges = body.get("data", {}).get("products", {}).get("edges", []) if isinstance(body, dict) else []
    items = []
    for edge in edges:
        node = edge.get("node", {})
        price = node.get("priceRangeV2", {}).get("minVariantPrice", {})
        items.append(f"{node.get('title')} ({price.get('amount')} {price.get('currencyCode')})")
    if not items:
        return "Thanks for your message! Someone from the shop will answer soon."
    return f"Thanks for your message! A few things from {shop}: " + ", ".join(items) + "."


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _messages(event: dict[str, Any]) -> tuple[list[tuple[str, str, str, str]], int]:
    """(message id, page id, sender's PSID, text) of each text message in a delivery, and how many items
    could not be read; echoes of our own and events that are not messages (reads, deliveries) are skipped."""
    found, unreadable = [], 0
    entries = event.get("entry")
    if not isinstance(entries, list):
        return [], 1
    for entry in entries:
        if not isinstance(entry, dict):
            unreadable += 1
            continue
        for item in _list(entry.get("messaging")):
            message = _dict(_dict(item).get("message"))
            if not message or message.get("is_echo"):
                continue
            message_id, text = message.get("mid"), message.get("text")
            psid, page_id = _dict(item.get("sender")).get("id"), _dict(item.get("recipient")).get("id")
            if not all(isinstance(value, str) for value in (message_id, text, psid, page_id)):
                unreadable += 1
            elif page_id.isascii() and page_id.isdigit():
                found.append((message_id, page_id, psid, text))
            else:
                unreadable += 1
    return found, unreadable


async def _body(request: Request) -> bytes | None:
    """The raw body (what the signature covers), or None past MAX_BODY: read no further than that."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="An example Messenger bot on the salesbot vault.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--env-file", default=None, help="a settings file read after the environment")
    args = parser.parse_args(argv)
    verify_token = os.environ.get("MESSENGER_VERIFY_TOKEN", "")
    if not verify_token:
        print(
            "bot_example: set MESSENGER_VERIFY_TOKEN (what you type into the Meta app's webhook settings).",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_bot(Settings.load(args.env_file), verify_token=verify_token)
    except ServiceError as error:
        print(f"bot_example: {error.message}", file=sys.stderr)
        return 2
    escape_logs()  # a text or an id a shopper sent never starts a forged log line
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # No access log: Meta's webhook check puts hub.verify_token in the query string, which it would print.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
