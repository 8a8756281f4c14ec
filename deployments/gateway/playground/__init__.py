"""The web playground: one static page (HTML, an ES module, CSS) served by the gateway at ``/``.

No build step and no CDN: the files ship as package data and the page talks only to the gateway's
public API (jobs over WebSocket, ``/v1/models``), exactly like any other client. The page is served
under the application's route prefix, so ``index.html`` gets a ``<base href>`` naming it; every
URL in the page is relative to that base.
"""

# No `from __future__ import annotations`: Ray pickles these route closures by value, and FastAPI
# must see real annotation objects, not strings to resolve later.
import html
from functools import cache
from importlib import resources

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse

from huabu.deployments.gateway.errors import not_found

__all__ = ["ASSETS", "mount_playground"]

ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
BASE_PLACEHOLDER = "__HUABU_BASE__"
# Everything comes from this origin; images are data: URLs made from b64_json results, the
# WebSocket goes to the same host. A page that tried to load a CDN script would be refused.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'"
)


@cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def mount_playground(api: FastAPI) -> None:
    """Add ``GET /`` (the page) and ``GET /playground/{asset}`` to the gateway's FastAPI app."""

    @api.get("/", include_in_schema=False)
    async def playground_index(request: Request) -> HTMLResponse:
        # Serve passes the application's route prefix as the ASGI root_path.
        base = str(request.scope.get("root_path", "")).rstrip("/") + "/"
        page = _read("index.html").decode("utf-8").replace(BASE_PLACEHOLDER, html.escape(base, quote=True))
        return HTMLResponse(page, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})

    @api.get("/playground/{asset}", include_in_schema=False)
    async def playground_asset(asset: str) -> Response:
        media_type = ASSETS.get(asset)
        if media_type is None:
            raise not_found(f"no playground asset {asset!r}; the page is at /", "asset")
        return Response(_read(asset), media_type=media_type, headers={"Cache-Control": "no-cache"})
