"""create_app: routes, middleware and lifespan. (The OAuth routes arrive with issue 3.)"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.settings import Settings


def create_app(settings: Settings) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/healthz", healthz)])
    app.state.settings = settings
    return app
