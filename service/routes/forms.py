"""What the browser session carries from one page to the next: the CSRF token every form sends back,
and messages shown once on the status page (DESIGN.md, "The browser session")."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import outcomes
from service.errors import CsrfFailed, InvalidInput, ServiceError
from service.routes.common import read_body, read_form, wants_json

CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 16 * 1024  # a form of ours: a token, a few ids
# Messages wait in the session's row on the server (service/sessions.py), not in the cookie; still a few,
# each cut short, so a row stays small whatever a provider named things.
MAX_MESSAGES = 5
MAX_MESSAGE_LENGTH = 600
OK, WARNING, ERROR = "ok", "warning", "error"


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use. Forms carry it; a page of another site cannot read it."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def _too_large() -> InvalidInput:
    return InvalidInput("The form is larger than any form of ours.", status_code=413)


async def checked_form(request: Request) -> FormData:
    """The POSTed form, once its CSRF token is this session's (compared in constant time); otherwise
    CsrfFailed (403) before the caller has done anything."""
    body = await read_body(request, limit=MAX_FORM_BYTES, too_large=_too_large)
    form = await read_form(request, body)
    expected = request.session.get("csrf")
    sent = form.getlist(CSRF_FIELD)
    if (
        not isinstance(expected, str)
        or len(sent) != 1
        or not isinstance(sent[0], str)
        or not hmac.compare_digest(sent[0].encode(), expected.encode())
    ):
        raise CsrfFailed(
            "This form cannot be accepted: it did not come from this browser's current page. Reload the page "
            "and try again."
        )
    return form


def flash(request: Request, text: str, *, kind: str = OK, code: str | None = None) -> None:
    """Show `text` once, on the next status page this browser opens."""
    messages = request.session.get("messages")
    if not isinstance(messages, list):
        messages = []
    messages = [*messages, {"kind": kind, "code": code, "text": text[:MAX_MESSAGE_LENGTH]}][-MAX_MESSAGES:]
    request.session["messages"] = messages


def take_messages(request: Request) -> list[dict[str, Any]]:
    """The messages waiting for this browser, removed from its session: each is shown once."""
    messages = request.session.pop("messages", None)
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict) and isinstance(message.get("text"), str)]


def back_to_status(request: Request, text: str, *, kind: str = OK, code: str | None = None) -> Response:
    """End a step on the status page with a message."""
    flash(request, text, kind=kind, code=code)
    return RedirectResponse("/", status_code=303)


def refused(request: Request, error: ServiceError, *, kind: str = ERROR) -> Response:
    """A refusal the merchant can act on (another account owns it, they cancelled): a message on the status
    page for a person in a browser; the error itself, with its status, for a script."""
    if wants_json(request):
        raise error  # answered, and logged as an outcome, by the app's error handler
    outcomes.failed(request.scope["path"], error.code)
    return back_to_status(request, error.message, kind=kind, code=error.code)
