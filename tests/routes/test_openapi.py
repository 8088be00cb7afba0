"""The HTTP API's OpenAPI 3.1 document: valid by openapi-spec-validator, served as JSON, and naming every
route the API has (and no other)."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from starlette.routing import Route

from service.openapi import DOCUMENT
from service.routes import api
from service.settings import Settings
from tests.web import running_app


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)  # raises on anything invalid


def test_the_validator_would_refuse_a_broken_document() -> None:
    """The check above can fail: a path whose parameter is not declared is refused."""
    broken = {**DOCUMENT, "paths": {"/api/v1/pages/{page_id}": {"get": {"responses": {"200": {"description": "x"}}}}}}
    with pytest.raises(Exception, match="page_id"):
        validate(broken, cls=OpenAPIV31SpecValidator)


def test_every_route_of_the_api_is_documented_with_its_methods() -> None:
    routes = {
        (route.path, method.lower())
        for route in api.routes
        if isinstance(route, Route) and route.path != f"{api.PREFIX}/openapi.json"
        for method in (route.methods or ()) - {"HEAD"}
    }
    documented = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert documented == routes
    for path, _method in documented:
        assert set(re.findall(r"\{(\w+)\}", path)) <= {"page_id", "shop", "account"}


async def test_it_is_served_at_api_v1_openapi_json(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:
        served = await web.browser.get("/api/v1/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json() == DOCUMENT
    assert "set-cookie" not in served.headers

