"""GET /metrics: every worker's metrics in Prometheus's text format, for a scraper holding METRICS_TOKEN
(a bearer token, compared in constant time). Without METRICS_TOKEN the route does not exist; `salesbot
serve --metrics-port N` serves the same on 127.0.0.1:N instead, with no token (service/metrics.py)."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import metrics
from service.errors import MetricsUnauthorized
from service.routes.common import services


async def scrape(request: Request) -> Response:
    expected = services(request).settings.metrics_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if (
        expected is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.strip().encode(), str(expected).encode())
    ):
        raise MetricsUnauthorized("GET /metrics needs `Authorization: Bearer` with the METRICS_TOKEN setting.")
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


routes = [Route("/metrics", scrape, methods=["GET"])]
