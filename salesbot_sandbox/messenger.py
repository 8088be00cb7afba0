"""Messenger's stand-in: the Send API (a Graph call with a Page token, so it builds on Facebook's
checks), signed `messages` webhooks from shoppers to the bot, and a page showing the conversations."""

from __future__ import annotations

import hashlib
import hmac
import html
import json

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from salesbot_sandbox.common import (
    MessengerMessage,
    graph_error,
    html_page,
    random_text,
)
from salesbot_sandbox.facebook import FacebookStandIn


class MessengerStandIn(FacebookStandIn):
    def sent_messages(self, page_id: str | None = None) -> list[MessengerMessage]:
        """What bots sent through the Send API (optionally for one Page), in order."""
        return [m for m in self.messages if m.direction == "out" and page_id in (None, m.page_id)]

    def messenger_webhook(self, *, page_id: str, psid: str, text: str) -> tuple[bytes, dict[str, str]]:
        """A Messenger `messages` event, as Meta delivers it: JSON, X-Hub-Signature-256 over the raw body."""
        now_ms = int(self.clock() * 1000)
        event = {"sender": {"id": psid}, "recipient": {"id": page_id}, "timestamp": now_ms,
                 "message": {"mid": f"m_{random_text(24)}", "text": text}}
        body = json.dumps({"object": "page", "entry": [{"id": page_id, "time": now_ms, "messaging": [event]}]},
                          separators=(",", ":")).encode()
        digest = hmac.new(self.config.facebook_app_secret.encode(), body, hashlib.sha256).hexdigest()
        return body, {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}

    async def send_messenger_message(self, path: str, *, page_id: str, psid: str, text: str,
                                     client: httpx.AsyncClient | None = None) -> httpx.Response:
        """A shopper writes to the Page: the signed webhook goes to `path` on the service (where the bot is)."""
        body, headers = self.messenger_webhook(page_id=page_id, psid=psid, text=text)
        self.messages.append(MessengerMessage("in", page_id, psid, text))
        return await self.deliver(path, body, headers, client=client)

    async def deliver(self, path: str, body: bytes, headers: dict[str, str], *,
                      client: httpx.AsyncClient | None = None) -> httpx.Response:
        """POST a webhook built above to the service, as the provider would."""
        if not self.config.service_base_url:
            raise RuntimeError("SandboxConfig.service_base_url is not set, so there is nowhere to deliver to")
        url = self.config.service_base_url.rstrip("/") + path
        if client is not None:
            return await client.post(url, content=body, headers=headers)
        async with httpx.AsyncClient(timeout=10.0) as own:
            return await own.post(url, content=body, headers=headers)

    async def facebook_send(self, request: Request) -> Response:
        """The Send API: a Page token with its proof, a recipient and a text; what was sent is recorded."""
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        _, token = caller
        if token.kind != "PAGE" or token.page_id is None:
            return graph_error("(#230) Requires pages_messaging permission to manage the object", code=230)
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        recipient = payload.get("recipient") if isinstance(payload, dict) else None
        message = payload.get("message") if isinstance(payload, dict) else None
        psid = recipient.get("id") if isinstance(recipient, dict) else None
        text = message.get("text") if isinstance(message, dict) else None
        if not isinstance(psid, str) or not psid:
            return graph_error("(#100) The parameter recipient is required", code=100)
        if not isinstance(text, str) or not text:
            return graph_error("(#100) The parameter message must have a text or an attachment", code=100)
        self.messages.append(MessengerMessage("out", token.page_id, psid, text))
        return JSONResponse({"recipient_id": psid, "message_id": f"m_{random_text(24)}"})

    async def messenger_page(self, request: Request) -> Response:
        """The conversations the demo had, as a shopper would see them in Messenger."""
        names = dict(self.config.pages)
        def who(m: MessengerMessage) -> str:
            return names.get(m.page_id, m.page_id) if m.direction == "out" else f"Shopper {m.psid}"

        rows = "".join(f'<li class="{m.direction}"><b>{html.escape(who(m))}</b>: {html.escape(m.text)}</li>'
                       for m in self.messages)
        return html_page("Messenger (sandbox)", f'<h1>Messenger (sandbox)</h1><ol id="messages">{rows}</ol>'
                     '<p><a href="/">Back to the service</a></p>')

