"""Reading the providers' wait instructions (service/providers/auth.py), from answers shaped as
docs/providers.md records them."""

from __future__ import annotations

import json

import httpx
import pytest

from service.providers.auth import DEFAULT_RETRY_SECONDS, graph_usage_wait, shopify_throttle_wait


def throttled(requested: object, available: object, rate: object) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {
                "cost": {
                    "requestedQueryCost": requested,
                    "actualQueryCost": None,
                    "throttleStatus": {"maximumAvailable": 1000, "currentlyAvailable": available, "restoreRate": rate},
                }
            },
        },
    )


def test_shopify_graphql_throttle_wait_is_the_missing_points_over_the_restore_rate() -> None:
    assert shopify_throttle_wait(throttled(252, 100, 50)) == pytest.approx(3.04)
    assert shopify_throttle_wait(throttled(10, 50, 50)) == 0.0  # refilled meanwhile: try again at once
    # A THROTTLED answer without a usable cost: Shopify's bucket leaks within a second.
    for broken in (
        throttled("a lot", 1, 50),
        throttled(10, 1, 0),
        httpx.Response(200, json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}),
    ):
        assert shopify_throttle_wait(broken) == DEFAULT_RETRY_SECONDS


def test_shopify_answers_that_are_not_throttled() -> None:
    ok = httpx.Response(200, json={"data": {"shop": {"name": "Acme"}}, "extensions": {"cost": {}}})
    other_error = httpx.Response(200, json={"errors": [{"message": "Field 'x' doesn't exist"}]})
    for response in (ok, other_error, httpx.Response(200, content=b"<html>"), httpx.Response(401, json={})):
        assert shopify_throttle_wait(response) is None


def test_shopify_429_waits_what_retry_after_says() -> None:
    assert shopify_throttle_wait(httpx.Response(429, headers={"Retry-After": "2.0"})) == 2.0
    assert shopify_throttle_wait(httpx.Response(429)) == DEFAULT_RETRY_SECONDS
    assert shopify_throttle_wait(httpx.Response(429, headers={"Retry-After": "soon"})) == DEFAULT_RETRY_SECONDS


def test_graph_waits_come_from_the_usage_headers_in_minutes() -> None:
    buc = {
        "101": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 5}],
        "202": [{"type": "messenger", "call_count": 90, "estimated_time_to_regain_access": 12}],
    }
    assert graph_usage_wait(httpx.Headers({"X-Business-Use-Case-Usage": json.dumps(buc)})) == 720
    app = {"call_count": 100, "total_time": 20, "total_cputime": 10, "estimated_time_to_regain_access": 2}
    assert graph_usage_wait(httpx.Headers({"X-App-Usage": json.dumps(app)})) == 120
    # X-App-Usage as documented (percentages, no wait), a broken header, Retry-After alone.
    no_wait = {"call_count": 100, "total_time": 20, "total_cputime": 10}
    assert graph_usage_wait(httpx.Headers({"X-App-Usage": json.dumps(no_wait)})) is None
    assert graph_usage_wait(httpx.Headers({"X-Business-Use-Case-Usage": "{not json"})) is None
    assert graph_usage_wait(httpx.Headers({"Retry-After": "30"})) == 30
    assert (
        graph_usage_wait(httpx.Headers({"X-App-Usage": json.dumps({**no_wait, "estimated_time_to_regain_access": -1})}))
        is None
    )
