"""Shopify's stand-in: the install consent page, the token endpoint (codes, expiring offline tokens,
refresh with its retry window, token exchange), the Admin API's shop.json and GraphQL with its leaky
bucket, giving up access, and signed webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import uuid

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from salesbot_sandbox.base import SandboxState
from salesbot_sandbox.common import (
    CODE_TTL,
    GRAPHQL_BUCKET,
    GRAPHQL_RESTORE_RATE,
    PRODUCTS,
    SHOP_RE,
    SHOPIFY_401,
    SHOPIFY_ACCESS_TTL,
    SHOPIFY_API_VERSION,
    SHOPIFY_REFRESH_TTL,
    TOKEN_EXCHANGE,
    IssuedCode,
    IssuedToken,
    Revocation,
    default_shop_name,
    hidden_fields,
    html_page,
    mount_prefix,
    origin,
    same,
    shop_number,
    shopify_error,
    split_scopes,
    with_query,
)


class ShopifyStandIn(SandboxState):
    def valid_shopify_tokens(self, shop: str) -> set[str]:
        return self._valid("shopify", "access", shop)

    def valid_shopify_refresh_tokens(self, shop: str) -> set[str]:
        return self._valid("shopify", "refresh", shop)

    def expire_shopify_access(self, shop: str) -> None:
        """The shop's access tokens reach their hour: the Admin API refuses them; refresh tokens still work."""
        for t in self.tokens.values():
            if t.provider == "shopify" and t.owner == shop and t.kind == "access":
                t.expires_at = self.clock()

    def revoke_shopify(self, shop: str) -> None:
        """What an uninstall does: every access and refresh token of the shop stops working."""
        for t in self.tokens.values():
            if t.provider == "shopify" and t.owner == shop:
                t.revoked = True

    def shopify_webhook_payload(self, *, shop: str, topic: str) -> dict:
        """The body Shopify documents for a topic: the shop resource for app/uninstalled, the compliance
        bodies for the others."""
        shop_id = shop_number(shop)
        customer = {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"}
        orders = [299938, 280263, 220458]
        payloads: dict[str, dict] = {
            "app/uninstalled": {"id": shop_id, "name": default_shop_name(shop), "email": f"owner@{shop}",
                                "domain": shop, "myshopify_domain": shop},
            "shop/redact": {"shop_id": shop_id, "shop_domain": shop},
            "customers/redact": {"shop_id": shop_id, "shop_domain": shop, "customer": customer,
                                 "orders_to_redact": orders},
            "customers/data_request": {"shop_id": shop_id, "shop_domain": shop, "orders_requested": orders,
                                       "customer": customer, "data_request": {"id": 9999}},
        }
        if topic not in payloads:
            raise ValueError(f"No documented body for the topic {topic!r}; pass payload=")
        return payloads[topic]

    def shopify_webhook(self, *, shop: str, topic: str, payload: dict | None = None,
                        webhook_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """A signed delivery; without `payload`, the body the topic documents (shopify_webhook_payload)."""
        if payload is None:
            payload = self.shopify_webhook_payload(shop=shop, topic=topic)
        body = json.dumps(payload, separators=(",", ":")).encode()
        digest = hmac.new(self.config.shopify_api_secret.encode(), body, hashlib.sha256).digest()
        return body, {
            "Content-Type": "application/json",
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-API-Version": SHOPIFY_API_VERSION,
        }

    def _shop_or_none(self, request: Request) -> str | None:
        shop = request.path_params["shop"]
        return shop if SHOP_RE.fullmatch(shop) else None

    def _authorize_problem(self, params: dict[str, str]) -> HTMLResponse | None:
        if params.get("client_id") != self.config.shopify_api_key:
            message = "Oauth error invalid_request: Could not find Shopify API application with api_key"
        elif not params.get("redirect_uri", "").startswith(("http://", "https://")):
            message = "Oauth error invalid_request: The redirect_uri is missing or not a URL"
        else:
            return None
        return html_page("Oauth error", f"<h1>{html.escape(message)}</h1>", status=400)

    async def shopify_admin(self, request: Request) -> Response:
        shop = html.escape(request.path_params["shop"])
        return html_page(f"{shop} admin", f"<h1>{shop} admin (sandbox)</h1><p>No app was installed.</p>")

    async def shopify_authorize(self, request: Request) -> Response:
        shop = self._shop_or_none(request)
        if shop is None:
            return html_page("Not found", "<h1>There is no store at this address.</h1>", status=404)
        params = dict(request.query_params)
        if (problem := self._authorize_problem(params)) is not None:
            return problem
        fields = {k: params.get(k, "") for k in ("client_id", "scope", "redirect_uri", "state")}
        scopes = ", ".join(split_scopes(fields["scope"])) or "no access scopes"
        base = f"{mount_prefix(request)}/shopify/{shop}/admin"
        app, esc_shop = html.escape(self.config.app_name), html.escape(shop)
        # Shopify documents no redirect for a declined install (the merchant stays in their admin):
        # the stand-in's Cancel goes back to the app's home, the origin of its redirect URI.
        home = html.escape(origin(fields["redirect_uri"]) + "/")
        return self._consent_page("Shopify", f"Install {self.config.app_name}", (
            f"<h1>Install {app} on {esc_shop}?</h1><p>It asks for: {html.escape(scopes)}</p>"
            f'<div class="actions"><form method="post" action="{html.escape(base)}/oauth/authorize/approve">'
            f'{hidden_fields(fields)}<button type="submit" id="allow">Install app</button></form>'
            f'<a class="button secondary" id="cancel" href="{home}">Cancel</a></div>'
        ))

    async def shopify_approve(self, request: Request) -> Response:
        shop = self._shop_or_none(request)
        if shop is None:
            return html_page("Not found", "<h1>There is no store at this address.</h1>", status=404)
        form: dict[str, str] = request.state.form
        if (problem := self._authorize_problem(form)) is not None:
            return problem
        scopes = split_scopes(form.get("scope", ""))
        if request.state.fault == "scopes_reduced":
            scopes = scopes[:-1]
        now = self.clock()
        code = secrets.token_hex(16)
        self.shopify_codes[code] = IssuedCode(shop, form["client_id"], scopes, now + CODE_TTL)
        host = base64.b64encode(f"{shop}/admin".encode()).decode().rstrip("=")
        params = {"code": code, "host": host, "shop": shop, "timestamp": str(int(now))}
        if form.get("state"):
            params["state"] = form["state"]
        message = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        params["hmac"] = hmac.new(self.config.shopify_api_secret.encode(), message.encode(),
                                  hashlib.sha256).hexdigest()
        return RedirectResponse(with_query(form["redirect_uri"], sorted(params.items())), status_code=302)

    async def shopify_access_token(self, request: Request) -> Response:
        shop = request.path_params["shop"]
        p = {**request.query_params, **request.state.form}
        if p.get("client_id") != self.config.shopify_api_key or not same(p.get("client_secret"),
                                                                           self.config.shopify_api_secret):
            return shopify_error("invalid_client", "Client authentication failed due to unknown client, no "
                                  "client authentication included, or unsupported authentication method.")
        grant_type = p.get("grant_type", "authorization_code")
        if grant_type == "refresh_token":
            return self._refresh(shop, p.get("refresh_token", ""))
        if grant_type == TOKEN_EXCHANGE:
            subject = self.tokens.get(p.get("subject_token", ""))
            if (subject is None or subject.kind != "access" or subject.owner != shop
                    or subject.expires_at is not None or not self._alive(subject)):
                return shopify_error("invalid_subject_token", "The subject token is not a valid "
                                      "non-expiring offline access token for this shop.")
            subject.revoked = True  # irreversible, as documented
            return JSONResponse(self._issue_shopify(shop, subject.scopes, expiring=True))
        if grant_type != "authorization_code":
            return shopify_error("unsupported_grant_type", "The grant type is not supported.")
        code = self.shopify_codes.get(p.get("code", ""))
        if code is None or code.used or code.owner != shop or self.clock() >= code.expires_at:
            return shopify_error("invalid_request",
                                  "The authorization code was not found or was already used")
        code.used = True
        scopes = code.scopes[:-1] if request.state.fault == "scopes_reduced" else code.scopes
        expiring = p.get("expiring") in ("1", "true") and self.config.shopify_expiring
        return JSONResponse(self._issue_shopify(shop, scopes, expiring=expiring))

    def _revoke_pair(self, token: IssuedToken) -> None:
        token.revoked = True
        if token.partner is not None and token.partner in self.tokens:
            self.tokens[token.partner].revoked = True

    def _refresh(self, shop: str, value: str) -> Response:
        """A new pair for a refresh token. The old access token stops; the refresh token stays usable for
        the window while its replacement is unused (used again meanwhile, it gives another pair, and the
        unused one it replaces stops: one active token per app and shop); using the replacement retires it."""
        old = self.tokens.get(value)
        if old is None or old.kind != "refresh" or old.owner != shop or not self._alive(old):
            return shopify_error("invalid_grant", "The refresh token is invalid, expired or already used.")
        self._retire_predecessor(old)
        for issued in self.tokens.values():  # the pairs an earlier use of it gave, never used
            if issued.predecessor == value:
                issued.revoked = True
        if old.partner is not None and old.partner in self.tokens:
            self.tokens[old.partner].revoked = True
        if old.first_used_at is None:
            old.first_used_at = self.clock()
        if self.config.shopify_refresh_window <= 0:
            old.revoked = True
        body = self._issue_shopify(shop, old.scopes, expiring=True)
        for new in (str(body["access_token"]), str(body["refresh_token"])):
            self.tokens[new].predecessor = value
        return JSONResponse(body)

    def _retire_predecessor(self, token: IssuedToken) -> None:
        """The app used this token: the refresh token whose use issued it is spent for good."""
        if token.predecessor is not None and token.predecessor in self.tokens:
            self.tokens[token.predecessor].revoked = True
        token.predecessor = None

    def _issue_shopify(self, shop: str, scopes: list[str], *, expiring: bool) -> dict[str, object]:
        now = self.clock()
        access = f"shpat_{secrets.token_hex(16)}"
        body: dict[str, object] = {"access_token": access, "scope": ",".join(scopes)}
        expires_at = now + SHOPIFY_ACCESS_TTL if expiring else None
        token = IssuedToken("shopify", "access", shop, scopes, now, expires_at)
        if expiring:
            refresh = f"shprt_{secrets.token_hex(16)}"
            token.partner = refresh
            self.tokens[refresh] = IssuedToken("shopify", "refresh", shop, scopes, now,
                                               now + SHOPIFY_REFRESH_TTL, partner=access)
            body |= {"expires_in": SHOPIFY_ACCESS_TTL, "refresh_token": refresh,
                     "refresh_token_expires_in": SHOPIFY_REFRESH_TTL}
        self.tokens[access] = token
        return body

    def _admin_token_valid(self, request: Request, shop: str) -> bool:
        """The Admin API's check: X-Shopify-Access-Token is a live access token of this shop."""
        token = self.tokens.get(request.headers.get("x-shopify-access-token", ""))
        if token is None or token.kind != "access" or token.owner != shop or not self._alive(token):
            return False
        self._retire_predecessor(token)
        return True

    async def shopify_shop(self, request: Request) -> Response:
        shop = request.path_params["shop"]
        if not self._admin_token_valid(request, shop):
            return JSONResponse({"errors": SHOPIFY_401}, status_code=401)
        name = self.config.shop_names.get(shop) or default_shop_name(shop)
        return JSONResponse({"shop": {"id": shop_number(shop), "name": name, "myshopify_domain": shop,
                                      "domain": shop}})

    def _spend(self, shop: str, cost: float) -> tuple[float, bool]:
        """Take `cost` points from the shop's bucket (refilled at the restore rate): what is left, and
        whether there was enough."""
        now = self.clock()
        available, since = self._buckets.get(shop, (GRAPHQL_BUCKET, now))
        available = min(GRAPHQL_BUCKET, available + (now - since) * GRAPHQL_RESTORE_RATE)
        enough = available >= cost
        if enough:
            available -= cost
        self._buckets[shop] = (available, now)
        return available, enough

    async def shopify_graphql(self, request: Request) -> Response:
        shop = request.path_params["shop"]
        if not self._admin_token_valid(request, shop):
            return JSONResponse({"errors": SHOPIFY_401}, status_code=401)
        fault = request.state.fault
        seconds: float = request.state.fault_seconds or 1.0
        if fault == "status_429":
            return JSONResponse({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to "
                                 "resume uninterrupted service."}, status_code=429,
                                headers={"Retry-After": f"{seconds:g}"})
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        query = payload.get("query") if isinstance(payload, dict) else None
        if not isinstance(query, str) or not query.strip():
            return JSONResponse({"errors": {"query": "Required parameter missing or invalid"}}, status_code=400)
        variables = payload.get("variables") if isinstance(payload.get("variables"), dict) else {}
        first = variables.get("first")
        if not isinstance(first, int) or isinstance(first, bool):
            found = re.search(r"first:\s*(\d+)", query)
            first = int(found.group(1)) if found else 10
        first = max(0, min(first, 250))
        wants_products = re.search(r"\bproducts\s*\(", query) is not None
        # Roughly Shopify's rule: an object costs 1, a connection its page size more.
        requested = 2.0 + first if wants_products else 1.0
        if fault == "throttled":
            available = max(0.0, requested - seconds * GRAPHQL_RESTORE_RATE)
            return JSONResponse({"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": self._cost(requested, None, available)}})
        available, enough = self._spend(shop, requested)
        if not enough:
            return JSONResponse({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                                 "extensions": {"cost": self._cost(requested, None, available)}})
        data: dict[str, object] = {}
        if re.search(r"\bshop\s*\{", query):
            data["shop"] = {"name": default_shop_name(shop), "myshopifyDomain": shop}
        if wants_products:
            shop_id = shop_number(shop)
            data["products"] = {"edges": [
                {"node": {"id": f"gid://shopify/Product/{shop_id % 10_000 * 100 + n}", "title": title,
                          "handle": title.lower().replace(" ", "-"),
                          "priceRangeV2": {"minVariantPrice": {"amount": price, "currencyCode": "USD"}}}}
                for n, (title, price) in enumerate(PRODUCTS[:first], start=1)]}
        if not data:
            return JSONResponse({"errors": [{"message": "This stand-in answers only shop and products queries",
                                             "extensions": {"code": "undefinedField"}}]})
        actual = 2.0 + len(data["products"]["edges"]) if wants_products else 1.0  # type: ignore[index]
        return JSONResponse({"data": data, "extensions": {"cost": self._cost(requested, actual, available)}})

    @staticmethod
    def _cost(requested: float, actual: float | None, available: float) -> dict[str, object]:
        return {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": {
            "maximumAvailable": GRAPHQL_BUCKET, "currentlyAvailable": available,
            "restoreRate": GRAPHQL_RESTORE_RATE}}

    async def shopify_revoke(self, request: Request) -> Response:
        """`DELETE /admin/api_permissions/current.json`: the app gives up its access to the shop; every
        token of the shop stops working. (Shopify then sends app/uninstalled; the stand-in does not, its
        demo button does.)"""
        shop = request.path_params["shop"]
        if not self._admin_token_valid(request, shop):
            return JSONResponse({"errors": SHOPIFY_401}, status_code=401)
        self.revoke_shopify(shop)
        self.revocations.append(Revocation("shopify", shop, self.clock()))
        return JSONResponse({})

