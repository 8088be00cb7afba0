"""Facebook's stand-in: the login dialog, Graph's token endpoint, /me and /me/accounts with Page tokens,
debug_token with granular scopes, removing the app, and what Facebook does to a Page's token
(password changed, app removed, data access ending, a permission taken back)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from salesbot_sandbox.base import SandboxState
from salesbot_sandbox.common import (
    CODE_TTL,
    EXPIRED,
    FACEBOOK_DATA_ACCESS_TTL,
    FACEBOOK_LONG_TTL,
    FACEBOOK_SHORT_TTL,
    PAGE_SCOPES,
    PAGE_TASKS,
    REVOKED,
    UNPARSEABLE,
    IssuedCode,
    IssuedToken,
    Revocation,
    b64url,
    graph_error,
    hidden_fields,
    html_page,
    mount_prefix,
    random_text,
    same,
    split_scopes,
    with_query,
)


class FacebookStandIn(SandboxState):
    def valid_facebook_tokens(self) -> set[str]:
        return self._valid("facebook")

    def revoke_facebook_user(self) -> None:
        """A password change or app removal: user and Page tokens die, Graph answers 190/460."""
        for t in self.tokens.values():
            if t.provider == "facebook":
                t.revoked = True

    def _page_tokens_of(self, page_id: str) -> list[IssuedToken]:
        return [t for t in self.tokens.values() if t.provider == "facebook" and t.page_id == page_id]

    def invalidate_page_token(self, page_id: str, *, subcode: int = 460) -> None:
        """The Page's tokens die as Facebook kills them: Graph and debug_token answer 190 with `subcode`
        (458 app removed, 459 checkpoint, 460 password changed, 463 expired, 464 unconfirmed, 467 invalid)."""
        for t in self._page_tokens_of(page_id):
            t.revoked, t.revoked_subcode = True, subcode

    def end_data_access(self, page_id: str, *, at: float) -> None:
        """Facebook's data access for the Page's tokens ends at `at` (Unix time): debug_token says so."""
        for t in self._page_tokens_of(page_id):
            t.data_access_expires_at = at

    def withhold_permission(self, page_id: str, scope: str = "pages_messaging") -> None:
        """The user took back `scope` for this Page only (granular_scopes no longer names it)."""
        self.withheld.setdefault(scope, set()).add(page_id)

    # What the demo's form can make Facebook do to a Page's token, in the words it shows.
    PAGE_EVENTS = {
        "password_changed": "Change the Facebook password (its tokens die)",
        "app_removed": "Remove the app from the Facebook account",
        "data_access_ending": "Let data access run out in 10 days",
        "messaging_withheld": "Take back pages_messaging for this Page",
    }

    def page_event(self, page_id: str, event: str) -> None:
        if event == "password_changed":
            self.invalidate_page_token(page_id, subcode=460)
        elif event == "app_removed":
            self.invalidate_page_token(page_id, subcode=458)
        elif event == "data_access_ending":
            self.end_data_access(page_id, at=self.clock() + 10 * 86400)
        elif event == "messaging_withheld":
            self.withhold_permission(page_id, "pages_messaging")
        else:
            raise ValueError(f"Unknown Page event {event!r}; known: {', '.join(self.PAGE_EVENTS)}")

    def facebook_signed_request(self, payload: dict) -> str:
        data = {**payload, "algorithm": "HMAC-SHA256"}
        data.setdefault("issued_at", int(self.clock()))
        encoded = b64url(json.dumps(data, separators=(",", ":")).encode())
        sig = hmac.new(self.config.facebook_app_secret.encode(), encoded.encode(), hashlib.sha256).digest()
        return f"{b64url(sig)}.{encoded}"

    def _dialog_problem(self, request: Request, params: dict[str, str]) -> HTMLResponse | None:
        if not request.path_params["version"].startswith("v"):
            return html_page("Not found", "<h1>Sorry, this content isn't available right now.</h1>", status=404)
        if params.get("client_id") != self.config.facebook_app_id:
            message = "Invalid App ID: The provided app ID does not look like a valid app ID."
        elif not params.get("redirect_uri", "").startswith(("http://", "https://")):
            message = "URL blocked: the redirect_uri is missing or not a URL."
        else:
            return None
        return html_page("Error", f"<h1>{html.escape(message)}</h1>", status=400)

    async def facebook_dialog(self, request: Request) -> Response:
        params = dict(request.query_params)
        if (problem := self._dialog_problem(request, params)) is not None:
            return problem
        fields = {k: params.get(k, "") for k in ("client_id", "redirect_uri", "state", "scope")}
        base = html.escape(f"{mount_prefix(request)}/facebook/{request.path_params['version']}/dialog/oauth")
        user, app = html.escape(self.config.facebook_user_name), html.escape(self.config.app_name)
        pages = "".join(f"<li>{html.escape(name)}</li>" for _, name in self.config.pages)
        scopes = html.escape(", ".join(split_scopes(fields["scope"])) or "public_profile")
        return self._consent_page("Facebook", f"Log in with Facebook: {self.config.app_name}", (
            f"<h1>{user}: allow {app} to manage your Pages?</h1><ul>{pages}</ul><p>Permissions: {scopes}</p>"
            f'<div class="actions"><form method="post" action="{base}/approve">{hidden_fields(fields)}'
            f'<button type="submit" id="allow">Continue as {user}</button></form>'
            f'<form method="post" action="{base}/cancel">{hidden_fields(fields)}'
            f'<button type="submit" class="secondary" id="cancel">Cancel</button></form></div>'
        ))

    async def facebook_approve(self, request: Request) -> Response:
        form: dict[str, str] = request.state.form
        if (problem := self._dialog_problem(request, form)) is not None:
            return problem
        scopes = split_scopes(form.get("scope", ""))
        scopes += [] if "public_profile" in scopes else ["public_profile"]
        code = f"AQ{random_text(62)}"
        self.facebook_codes[code] = IssuedCode(self.config.facebook_user_id, form["client_id"], scopes,
                                               self.clock() + CODE_TTL, redirect_uri=form["redirect_uri"])
        pairs = [("code", code)] + ([("state", form["state"])] if form.get("state") else [])
        return RedirectResponse(with_query(form["redirect_uri"], pairs, "#_=_"), status_code=302)

    async def facebook_cancel(self, request: Request) -> Response:
        form: dict[str, str] = request.state.form
        if (problem := self._dialog_problem(request, form)) is not None:
            return problem
        pairs = [("error", "access_denied"), ("error_code", "200"),
                 ("error_description", "Permissions error."), ("error_reason", "user_denied")]
        pairs += [("state", form["state"])] if form.get("state") else []
        return RedirectResponse(with_query(form["redirect_uri"], pairs, "#_=_"), status_code=302)

    def _issue_facebook(self, *, kind: str, scopes: list[str], expires_at: float | None,
                        long_lived: bool = False, page_id: str | None = None) -> str:
        value = f"EAAP{random_text(120)}" if kind == "PAGE" else f"EAA{random_text(120)}"
        self.tokens[value] = IssuedToken("facebook", kind, self.config.facebook_user_id, scopes, self.clock(),
                                         expires_at, page_id=page_id, long_lived=long_lived)
        return value

    def _token_problem(self, token: IssuedToken | None) -> JSONResponse | None:
        if token is None or token.provider != "facebook":
            return graph_error(UNPARSEABLE, code=190)
        if token.revoked:
            return graph_error(REVOKED, code=190, subcode=token.revoked_subcode)
        if not self._alive(token):
            return graph_error(EXPIRED, code=190, subcode=463)
        return None

    def _graph_caller(self, request: Request) -> tuple[str, IssuedToken] | JSONResponse:
        """Check the access token and its appsecret_proof, as Graph does with "Require App Secret" on."""
        if not request.path_params.get("version", "v").startswith("v"):
            return graph_error("Unknown path components", code=2500)
        value = request.query_params.get("access_token", "")
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if not value and scheme.lower() in ("bearer", "oauth"):
            value = credential.strip()
        if not value:
            return graph_error("An active access token must be used to query information about the current "
                                "user.", code=2500)
        secret = self.config.facebook_app_secret.encode()
        expected = hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()
        if not same(request.query_params.get("appsecret_proof"), expected):
            return graph_error("Invalid appsecret_proof provided in the API argument", code=100,
                                type_="GraphMethodException")
        token = self.tokens.get(value)
        if (problem := self._token_problem(token)) is not None:
            return problem
        assert token is not None
        return value, token

    async def facebook_access_token(self, request: Request) -> Response:
        q = request.query_params
        if not request.path_params["version"].startswith("v"):
            return graph_error("Unknown path components", code=2500)
        if q.get("client_id") != self.config.facebook_app_id:
            return graph_error("Error validating application. Invalid application ID.", code=101)
        if not same(q.get("client_secret"), self.config.facebook_app_secret):
            return graph_error("Error validating client secret.", code=1)
        if q.get("grant_type") == "fb_exchange_token":
            short = self.tokens.get(q.get("fb_exchange_token", ""))
            if (problem := self._token_problem(short)) is not None:
                return problem
            assert short is not None
            if short.kind != "USER":
                return graph_error("fb_exchange_token must be a user access token", code=100)
            value = self._issue_facebook(kind="USER", scopes=short.scopes, long_lived=True,
                                         expires_at=self.clock() + FACEBOOK_LONG_TTL)
            return JSONResponse({"access_token": value, "token_type": "bearer",
                                 "expires_in": FACEBOOK_LONG_TTL})
        code = self.facebook_codes.get(q.get("code", ""))
        if code is None:
            return graph_error("Invalid verification code format.", code=100)
        if code.used:
            return graph_error("This authorization code has been used.", code=100, subcode=36009)
        if self.clock() >= code.expires_at:
            return graph_error("This authorization code has expired.", code=100, subcode=36007)
        if q.get("redirect_uri") != code.redirect_uri:
            return graph_error("Error validating verification code. Please make sure your redirect_uri is "
                                "identical to the one you used in the OAuth dialog request", code=100)
        code.used = True
        value = self._issue_facebook(kind="USER", scopes=code.scopes,
                                     expires_at=self.clock() + FACEBOOK_SHORT_TTL)
        return JSONResponse({"access_token": value, "token_type": "bearer", "expires_in": FACEBOOK_SHORT_TTL})

    async def facebook_me(self, request: Request) -> Response:
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        _, token = caller
        if token.kind == "PAGE":  # /me with a Page token is the Page
            name = dict(self.config.pages).get(token.page_id or "", "")
            return JSONResponse({"id": token.page_id, "name": name})
        return JSONResponse({"id": self.config.facebook_user_id, "name": self.config.facebook_user_name})

    async def facebook_accounts(self, request: Request) -> Response:
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        value, user = caller
        if user.kind != "USER":
            return graph_error("(#100) Tried accessing nonexisting field (accounts) on node type (Page)",
                                code=100)
        q = request.query_params
        ids = [page_id for page_id, _ in self.config.pages]
        start = 0
        if after := q.get("after"):
            try:
                start = ids.index(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)).decode()) + 1
            except ValueError:  # also covers binascii.Error and UnicodeDecodeError
                return graph_error("(#100) The after cursor is invalid", code=100)
        limit = int(q["limit"]) if q.get("limit", "").isdigit() else 0
        size = min(self.config.page_size, limit) if limit > 0 else self.config.page_size
        wanted = set(q["fields"].split(",")) | {"id"} if q.get("fields") else None
        chunk = self.config.pages[start:start + size]
        data = []
        for page_id, name in chunk:
            row = {"id": page_id, "name": name, "access_token": self._page_token(value, user, page_id),
                   "category": "Retail", "tasks": self.config.page_tasks.get(page_id, PAGE_TASKS)}
            data.append({k: v for k, v in row.items() if wanted is None or k in wanted})
        body: dict[str, object] = {"data": data}
        if chunk:
            cursors = {"before": b64url(chunk[0][0].encode()), "after": b64url(chunk[-1][0].encode())}
            paging: dict[str, object] = {"cursors": cursors}
            if start + size < len(ids):
                paging["next"] = str(request.url.include_query_params(limit=size, after=cursors["after"]))
            body["paging"] = paging
        return JSONResponse(body)

    def _page_token(self, user_value: str, user: IssuedToken, page_id: str) -> str:
        # From a long-lived user token, Page tokens do not expire by time; otherwise they die with the user's.
        key = (user_value, page_id)
        if key not in self._page_tokens:
            self._page_tokens[key] = self._issue_facebook(
                kind="PAGE", scopes=user.scopes, page_id=page_id,
                expires_at=None if user.long_lived else user.expires_at)
        return self._page_tokens[key]

    async def facebook_debug_token(self, request: Request) -> Response:
        q = request.query_params
        app_token = f"{self.config.facebook_app_id}|{self.config.facebook_app_secret}"
        if not same(q.get("access_token"), app_token):
            return graph_error("Invalid OAuth access token signature.", code=190)
        token = self.tokens.get(q.get("input_token", ""))
        if token is None or token.provider != "facebook":
            error = {"code": 190, "message": UNPARSEABLE}
            return JSONResponse({"data": {"error": error, "is_valid": False}})
        data_access = token.data_access_expires_at or token.issued_at + FACEBOOK_DATA_ACCESS_TTL
        data: dict[str, object] = {
            "app_id": self.config.facebook_app_id, "type": token.kind, "application": self.config.app_name,
            "data_access_expires_at": int(data_access), "expires_at": int(token.expires_at or 0),
            "issued_at": int(token.issued_at), "is_valid": self._alive(token), "scopes": token.scopes,
            "granular_scopes": self._granular_scopes(token), "user_id": token.owner,
        }
        if token.page_id is not None:
            data["profile_id"] = token.page_id
        if token.revoked:
            data["error"] = {"code": 190, "message": REVOKED, "subcode": token.revoked_subcode}
        elif not self._alive(token):
            data["error"] = {"code": 190, "message": EXPIRED, "subcode": 463}
        return JSONResponse({"data": data})

    def _granular_scopes(self, token: IssuedToken) -> list[dict[str, object]]:
        """Per-Page permissions name the Pages they cover (target_ids): all the user's, less those withheld."""
        pages = [page_id for page_id, _ in self.config.pages]
        found: list[dict[str, object]] = []
        for scope in token.scopes:
            if scope not in PAGE_SCOPES:
                found.append({"scope": scope})
                continue
            targets = [page_id for page_id in pages if page_id not in self.withheld.get(scope, set())]
            if targets:
                found.append({"scope": scope, "target_ids": targets})
        return found

    async def facebook_revoke(self, request: Request) -> Response:
        """`DELETE /{user-id}/permissions` with the user's token: the app is removed for the user, whose
        user and Page tokens die with it."""
        caller = self._graph_caller(request)
        if isinstance(caller, Response):
            return caller
        _, token = caller
        user_id = request.path_params["user_id"]
        if token.kind != "USER" or token.owner != user_id:
            return graph_error("(#200) The access token cannot remove another user's permissions", code=200,
                                type_="OAuthException")
        for issued in self.tokens.values():
            if issued.provider == "facebook" and issued.owner == user_id:
                issued.revoked = True
        self.revocations.append(Revocation("facebook", user_id, self.clock()))
        return JSONResponse({"success": True})

