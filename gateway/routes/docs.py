"""Gateway endpoints: the API's own description.

GET /v1/openapi.json serves the OpenAPI 3.1 document generated from the route
tables (gateway.api.openapi_document), so it cannot drift from the code.
GET /v1/docs is an interactive explorer of that document: Swagger UI, whose
static files come from the `swagger-ui-py` package (a pinned dependency, so the
production image has them too) and are served under /assets/swagger-ui/. Nothing is
fetched from a CDN: the page works offline. "Authorize" takes a bearer token from
POST /v1/sessions; "Try it out" then calls this gateway.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.api import Routes
from gateway.settings import GatewaySettings
from gateway.static import folder_handler

routes = Routes(tag="docs")

#: Outside /v1/: files, not API operations (so not in the OpenAPI document).
ASSETS_PREFIX = "/assets/swagger-ui"

#: The explorer page. Its script is a file of ours (docs-init.js, beside the web
#: client's files) rather than inline, so a strict Content-Security-Policy can allow it.
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Messenger API explorer</title>
<link rel="stylesheet" href="{ASSETS_PREFIX}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PREFIX}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-spec="/v1/openapi.json"></div>
<script src="{ASSETS_PREFIX}/swagger-ui-bundle.js"></script>
<script src="/app/docs-init.js"></script>
</body>
</html>
"""


def swagger_ui_assets() -> Path:
    """The folder of Swagger UI's distribution files inside the installed package."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed (see pyproject.toml)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@cache
def _document() -> dict[str, Any]:
    # Imported here: gateway.app imports this module to list its routes.
    from gateway.api import openapi_document
    from gateway.app import ROUTE_TABLES

    return openapi_document(ROUTE_TABLES)


@cache
def _document_json() -> bytes:
    return json.dumps(_document(), indent=1).encode()


@routes.get("/v1/openapi.json", auth=False, summary="The OpenAPI 3.1 document of this API")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_document_json(), content_type="application/json")


@routes.get(
    "/v1/docs",
    auth=False,
    summary="Interactive API explorer (Swagger UI, HTML)",
    description="Swagger UI over /v1/openapi.json, served from this gateway (no CDN).",
)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


def setup(app: web.Application, settings: GatewaySettings) -> None:
    app.router.add_get(
        ASSETS_PREFIX + "/{path:.+}",
        folder_handler(swagger_ui_assets(), {"Cache-Control": "public, max-age=86400"}),
        name="docs.assets",
    )
