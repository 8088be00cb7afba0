"""The HTTP API's OpenAPI 3.1 document, served at /api/v1/openapi.json (service/routes/api.py; docs/api.md).

Written by hand beside the routes it describes; a test validates it with openapi-spec-validator and
checks that every route of the API is in it.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_HEALTH_FIELDS: dict[str, Any] = {
    "health": {"type": "string", "enum": ["ok", "expiring_soon", "needs_reconnect"]},
    "reason": {"type": ["string", "null"], "description": "why it is not ok, as a reason code (docs/api.md)"},
    "until": {"type": ["string", "null"], "format": "date-time", "description": "the date to act before"},
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
}


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR}}}
    if headers:
        answer["headers"] = headers
    return answer


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_COMMON_ERRORS: dict[str, Any] = {
    "401": _error(
        "no key, or a wrong or revoked one (`invalid_api_key`)",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="api"'}},
    ),
    "404": _error("`not_found`: nothing is connected under this id"),
    "409": _error("`owned_elsewhere`: `?account=` names another account than the connection's"),
    "429": _error("`rate_limited`: the key's API_RATE_PER_MINUTE, or the provider's own limit", headers=_RETRY_AFTER),
    "503": _error("`database_unavailable`: try again after Retry-After", headers=_RETRY_AFTER),
}
_ACCOUNT_PARAMETER = {
    "name": "account",
    "in": "query",
    "required": False,
    "description": "the account the bot acts for: a connection of another account is refused (409)",
    "schema": {"type": "string", "format": "uuid"},
}
_PAGE_ID = {"name": "page_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
_SHOP = {
    "name": "shop",
    "in": "path",
    "required": True,
    "description": "acme or acme.myshopify.com",
    "schema": {"type": "string"},
}
_JSON_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_PROXY_ERRORS: dict[str, Any] = {
    **_COMMON_ERRORS,
    "400": _error("`invalid_input`: the body is not JSON"),
    "403": _error("`insufficient_scope`: proxies need a proxy key"),
    "413": _error("`invalid_input`: the body is larger than 256 KiB"),
    "502": _error("`token_revoked` (with `reason`) or `provider_error`"),
    "504": _error("`provider_unavailable`: the provider did not answer"),
}


def _get(summary: str, schema: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "found",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
                },
                **_COMMON_ERRORS,
            },
        }
    }


def _proxy(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": parameters,
            "requestBody": _JSON_BODY,
            "responses": {
                "default": {
                    "description": "the provider's answer, status and body as it gave them",
                    "content": {"application/json": {"schema": {}}},
                },
                **_PROXY_ERRORS,
            },
        }
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "salesbot HTTP API",
        "version": "1",
        "description": (
            "Connections, health and provider proxies for Messenger bots in any language. Every request "
            "sends `Authorization: Bearer <key>` (`salesbot api-keys create`). A `read` key gets tokens; a "
            "`proxy` key gets health and the proxies, never a token."
        ),
    },
    "servers": [{"url": "/"}],
    "security": [{"apiKey": []}],
    "paths": {
        "/api/v1/pages/{page_id}": _get(
            "A Page's connection: its account, the store it sells from, its health; the Page token for a read key",
            "PageConnection",
            [_PAGE_ID, _ACCOUNT_PARAMETER],
        ),
        "/api/v1/shops/{shop}": _get(
            "A store's connection: its account, its Pages, its health; a token valid now for a read key",
            "ShopConnection",
            [_SHOP, _ACCOUNT_PARAMETER],
        ),
        "/api/v1/accounts/{account}": _get(
            "An account's stores and Pages with their health; no tokens",
            "Account",
            [{"name": "account", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}],
        ),
        "/api/v1/shops/{shop}/graphql": _proxy(
            "The body sent to the shop's Admin GraphQL API with its token (a 401 refreshed once, a throttle "
            "waited out once); a proxy key",
            [_SHOP, _ACCOUNT_PARAMETER],
        ),
        "/api/v1/pages/{page_id}/messages": _proxy(
            "The body sent to the Messenger Send API with the Page token and appsecret_proof; a proxy key",
            [_PAGE_ID, _ACCOUNT_PARAMETER],
        ),
    },
    "components": {
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "sbk_<prefix>_<secret>"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string", "description": "a stable code"},
                    "message": {"type": "string"},
                },
            },
            "PageConnection": {
                "type": "object",
                "required": ["page_id", "account", "health"],
                "properties": {
                    "page_id": {"type": "string"},
                    "name": {"type": ["string", "null"]},
                    "account": {"type": ["string", "null"], "format": "uuid"},
                    "shop": {"type": ["string", "null"], "description": "the store the Page sells from"},
                    **_HEALTH_FIELDS,
                    "token": {"type": "string", "description": "the Page access token: read keys only"},
                },
            },
            "ShopConnection": {
                "type": "object",
                "required": ["shop", "account", "health"],
                "properties": {
                    "shop": {"type": "string"},
                    "account": {"type": ["string", "null"], "format": "uuid"},
                    "page_ids": {"type": "array", "items": {"type": "string"}},
                    **_HEALTH_FIELDS,
                    "token": {"type": "string", "description": "an Admin API token valid now: read keys only"},
                },
            },
            "Account": {
                "type": "object",
                "required": ["account", "shops", "pages"],
                "properties": {
                    "account": {"type": "string", "format": "uuid"},
                    "shops": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "shop": {"type": "string"},
                                "name": {"type": ["string", "null"]},
                                **_HEALTH_FIELDS,
                            },
                        },
                    },
                    "pages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "page_id": {"type": "string"},
                                "name": {"type": ["string", "null"]},
                                **_HEALTH_FIELDS,
                            },
                        },
                    },
                },
            },
        },
    },
}
