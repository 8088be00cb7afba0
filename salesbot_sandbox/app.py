"""The sandbox app: the three stand-ins over one shared state, and their routes in one table."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import Route

from salesbot_sandbox.common import SandboxConfig
from salesbot_sandbox.messenger import MessengerStandIn
from salesbot_sandbox.shopify import ShopifyStandIn


class Sandbox(ShopifyStandIn, MessengerStandIn):
    """Shopify, Facebook and Messenger stand-ins as one ASGI app (`.app`); tests read its state directly."""

    def __init__(self, config: SandboxConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config, clock=clock)
        r = self._route
        self.app = Starlette(routes=[
            r("/shopify/{shop}/admin", self.shopify_admin),
            r("/shopify/{shop}/admin/oauth/authorize", self.shopify_authorize),
            r("/shopify/{shop}/admin/oauth/authorize/approve", self.shopify_approve, "POST",
              "shopify.approve"),
            r("/shopify/{shop}/admin/oauth/access_token", self.shopify_access_token, "POST",
              "shopify.access_token"),
            r("/shopify/{shop}/admin/api/{version}/shop.json", self.shopify_shop, "GET", "shopify.shop"),
            r("/shopify/{shop}/admin/api/{version}/graphql.json", self.shopify_graphql, "POST", "shopify.graphql"),
            r("/shopify/{shop}/admin/api_permissions/current.json", self.shopify_revoke, "DELETE",
              "shopify.revoke"),
            r("/facebook/{version}/dialog/oauth", self.facebook_dialog),
            r("/facebook/{version}/dialog/oauth/approve", self.facebook_approve, "POST"),
            r("/facebook/{version}/dialog/oauth/cancel", self.facebook_cancel, "POST"),
            r("/graph/{version}/oauth/access_token", self.facebook_access_token, "GET",
              "facebook.access_token"),
            r("/graph/{version}/me", self.facebook_me, "GET", "facebook.me"),
            r("/graph/{version}/me/accounts", self.facebook_accounts, "GET", "facebook.accounts"),
            r("/graph/debug_token", self.facebook_debug_token, "GET", "facebook.debug_token"),
            r("/graph/{version}/debug_token", self.facebook_debug_token, "GET", "facebook.debug_token"),
            r("/graph/{version}/{user_id}/permissions", self.facebook_revoke, "DELETE", "facebook.revoke"),
            r("/graph/{version}/me/messages", self.facebook_send, "POST", "facebook.messages"),
            r("/messenger", self.messenger_page),
            r("/revocations", self.revocations_json),
            Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])
