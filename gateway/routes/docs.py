"""Gateway endpoints: the API's own description.

GET /v1/openapi.json serves the OpenAPI 3.1 document generated from the route
tables (gateway.api.openapi_document), so it cannot drift from the code.
GET /v1/docs renders the same document as a self-contained HTML page on the
server: no JavaScript, no CDN, readable offline and by any browser.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from typing import Any

from aiohttp import web

from gateway.api import Routes

routes = Routes(tag="docs")

_METHOD_ORDER = ("get", "post", "put", "patch", "delete")


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


@routes.get("/v1/docs", auth=False, summary="Human-readable API documentation (HTML)")
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_render_html(), content_type="text/html")


# -- rendering -----------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}
.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:monospace}
.get{color:#0a6}.post{color:#06c}.patch{color:#a60}.put{color:#a60}.delete{color:#c22}
code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f6f6;padding:.5rem;overflow-x:auto}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
nav a{margin-right:1rem}
"""


@cache
def _render_html() -> str:
    doc = _document()
    schemas = doc.get("components", {}).get("schemas", {})
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in doc["paths"].items():
        for method in sorted(operations, key=_method_rank):
            op = operations[method]
            by_tag.setdefault(op["tags"][0] if op.get("tags") else "other", []).append(
                (method, path, op)
            )
    title = escape(doc["info"]["title"])
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title} <small>v{escape(doc['info']['version'])}</small></h1>",
        "<p>Generated from the code; the machine-readable document is "
        "<a href='/v1/openapi.json'>/v1/openapi.json</a>. Authenticated endpoints need "
        "<code>Authorization: Bearer &lt;token&gt;</code> (from <code>POST /v1/sessions</code>). "
        'Every error is <code>{"error": {"code", "message", "details"}}</code>.</p>',
        "<nav>" + "".join(f"<a href='#{escape(t)}'>{escape(t)}</a>" for t in by_tag) + "</nav>",
    ]
    for tag, ops in by_tag.items():
        out.append(f"<h2 id='{escape(tag)}'>{escape(tag)}</h2>")
        for method, path, op in ops:
            out.append(_render_operation(method, path, op))
    out.append("<h2 id='schemas'>Schemas</h2>")
    for name, schema in schemas.items():
        out.append(
            f"<h3 id='schema-{escape(name)}'>{escape(name)}</h3>"
            f"<pre>{escape(json.dumps(schema, indent=2))}</pre>"
        )
    out.append("</body></html>")
    return "".join(out)


def _schema_link(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        name = escape(ref.rsplit("/", 1)[1])
        return f"<a href='#schema-{name}'>{name}</a>"
    return f"<code>{escape(json.dumps(schema))}</code>"


def _render_operation(method: str, path: str, op: dict[str, Any]) -> str:
    parts = [
        f"<div class='op'><span class='m {method}'>{method.upper()}</span> "
        f"<code>{escape(path)}</code> — {escape(op.get('summary', ''))}",
    ]
    if "security" in op:
        parts.append(" <small>(bearer token)</small>")
    if op.get("description"):
        parts.append(f"<p>{escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        parts.append(
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>"
        )
        for p in params:
            parts.append(
                f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
                f"<td>{'yes' if p.get('required') else 'no'}</td>"
                f"<td>{_schema_link(p.get('schema', {}))}</td></tr>"
            )
        parts.append("</table>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        parts.append(f"<p>Body (JSON): {_schema_link(body['schema'])}</p>")
    parts.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {}).get("application/json")
        parts.append(
            f"<tr><td>{escape(status)}</td><td>{escape(response.get('description', ''))}</td>"
            f"<td>{_schema_link(content['schema']) if content else ''}</td></tr>"
        )
    parts.append("</table></div>")
    return "".join(parts)


def _method_rank(method: str) -> int:
    return _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)
