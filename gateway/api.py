"""Declaring HTTP endpoints once: routing, input validation, auth and OpenAPI.

A route module makes a `Routes` table and decorates its handlers:

    routes = Routes(tag="accounts")

    @routes.post("/v1/users", body=RegisterBody, response=UserView, status=201,
                 auth=False, summary="Register an account", errors=(409, 422, 429))
    async def register(request: web.Request, body: RegisterBody) -> UserView: ...

The wrapper parses and validates the JSON body (`body=`) and the query string
(`query=`) into pydantic models (unknown fields are 422), authenticates when
`auth=True` (passing `principal=`), and serializes the returned model with
`status`. The same declarations produce the OpenAPI 3.1 document, so the spec
cannot drift from the routes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.keys import AUTHENTICATOR, SETTINGS
from libs.errors import Invalid, RequestTimeout

Handler = Callable[..., Awaitable[Any]]

ERROR_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, invalid or expired token",
    403: "Not allowed",
    404: "Not found (or not visible to the caller)",
    408: "The request body did not arrive in time",
    409: "Conflict with the current state",
    413: "Request body too large",
    416: "Range not satisfiable",
    422: "Invalid input",
    429: "Rate limited (see Retry-After)",
    503: "A dependency is unavailable",
    504: "The owning service did not answer in time",
}


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()
    description: str = ""
    #: OpenAPI the models cannot say (a raw request body, binary responses): its
    #: "requestBody" replaces the operation's, its "responses" are added.
    openapi: dict[str, Any] | None = None


@dataclass
class Routes:
    """The endpoints of one route module."""

    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        auth: bool = True,
        errors: Sequence[int] = (),
        description: str = "",
        openapi: dict[str, Any] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method.upper(),
                    path,
                    handler,
                    summary,
                    self.tag,
                    body,
                    query,
                    response,
                    status,
                    auth,
                    tuple(errors),
                    description or (inspect.getdoc(handler) or ""),
                    openapi,
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


def json_response(data: Any, status: int = 200) -> web.Response:
    if isinstance(data, BaseModel):
        body = data.__pydantic_serializer__.to_json(data)
    else:
        body = orjson.dumps(data)
    return web.Response(body=body, status=status, content_type="application/json")


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or None,
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


async def read_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    try:
        async with asyncio.timeout(request.app[SETTINGS].body_timeout_s):
            raw = await request.read()  # raises 413 past client_max_size
    except TimeoutError:
        raise RequestTimeout(
            "the request body did not arrive in time", code="body_timeout"
        ) from None
    if not raw:
        raise Invalid("a JSON body is required", code="invalid_body")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        details = validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            raise Invalid("the body is not valid JSON", code="invalid_json") from None
        raise Invalid(
            "the request body is invalid", code="invalid_body", details={"fields": details}
        ) from None


def read_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    params: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        params[key] = values[0] if len(values) == 1 else values
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise Invalid(
            "the query string is invalid",
            code="invalid_query",
            details={"fields": validation_details(exc)},
        ) from None


def _wrap(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        if endpoint.auth:
            kwargs["principal"] = await request.app[AUTHENTICATOR](request)
        if endpoint.body is not None:
            kwargs["body"] = await read_body(request, endpoint.body)
        if endpoint.query is not None:
            kwargs["query"] = read_query(request, endpoint.query)
        result = await endpoint.handler(request, **kwargs)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204 if endpoint.status in (200, 204) else endpoint.status)
        return json_response(result, endpoint.status)

    handle.__name__ = endpoint.handler.__name__
    return handle


def install(app: web.Application, tables: Sequence[Routes]) -> None:
    for table in tables:
        for endpoint in table.endpoints:
            app.router.add_route(
                endpoint.method,
                endpoint.path,
                _wrap(endpoint),
                name=f"{endpoint.tag}.{endpoint.handler.__name__}",
            )


# -- OpenAPI 3.1 -----------------------------------------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
    },
}


def openapi_document(
    tables: Sequence[Routes], *, title: str = "Messenger API", version: str = "1"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared endpoint."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}

    def ref(model: type[BaseModel], mode: str) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    for table in tables:
        for ep in table.endpoints:
            op: dict[str, Any] = {
                "summary": ep.summary,
                "tags": [ep.tag],
                "operationId": f"{ep.tag}_{ep.handler.__name__}",
                "responses": {},
            }
            if ep.description:
                op["description"] = ep.description
            params = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _path_params(ep.path)
            ]
            if ep.query is not None:
                qschema = ep.query.model_json_schema()
                required = set(qschema.get("required", []))
                for name, prop in qschema.get("properties", {}).items():
                    params.append(
                        {"name": name, "in": "query", "required": name in required, "schema": prop}
                    )
            if params:
                op["parameters"] = params
            if ep.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(ep.body, "validation")}},
                }
            ok: dict[str, Any] = {"description": "Success"}
            if ep.response is not None:
                ok["content"] = {"application/json": {"schema": ref(ep.response, "serialization")}}
            op["responses"][str(ep.status)] = ok
            codes = set(ep.errors) | {503, 504} | ({401} if ep.auth else set())
            if ep.body is not None or ep.query is not None:
                codes |= {422}
            if ep.body is not None:
                codes |= {413}
            for code in sorted(codes):
                op["responses"][str(code)] = {
                    "description": ERROR_DESCRIPTIONS.get(code, "Error"),
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            if ep.openapi:
                if "requestBody" in ep.openapi:
                    op["requestBody"] = ep.openapi["requestBody"]
                    op["responses"].setdefault(
                        "413",
                        {
                            "description": ERROR_DESCRIPTIONS[413],
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}
                                }
                            },
                        },
                    )
                for code, response in ep.openapi.get("responses", {}).items():
                    op["responses"][code] = response
            if ep.auth:
                op["security"] = [{"bearer": []}]
            paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [
        part[1:-1].split(":")[0]
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    ]
