"""The API's contract: input validation, size limits, one error shape, the OpenAPI spec."""

from __future__ import annotations

import json
import re

import jsonschema
from openapi_spec_validator import validate

from gateway.app import SERVICE
from gateway.settings import GatewaySettings
from tests.support.client import Api, Reply, unique_username

PASSWORD = "correct horse battery"


async def test_invalid_registration_is_422_with_per_field_details(api: Api) -> None:
    reply = await api.call(
        "POST", "/v1/users", json={"username": "no spaces!", "password": "short"}
    )
    assert reply.status == 422
    assert reply.error_code() == "invalid_body"
    fields = {d["field"] for d in reply.body["error"]["details"]["fields"]}
    assert fields == {"username", "password"}

    for body in (
        {"username": "ab", "password": PASSWORD},  # too short
        {"username": "a" * 33, "password": PASSWORD},  # too long
        {"username": unique_username(), "password": "p" * 129},
        {"username": unique_username(), "password": PASSWORD, "display_name": "   "},
        {"username": unique_username()},
    ):
        bad = await api.call("POST", "/v1/users", json=body)
        assert bad.status == 422, (body, bad)


async def test_unknown_fields_malformed_json_and_empty_bodies_are_422(api: Api) -> None:
    unknown = await api.call(
        "POST",
        "/v1/users",
        json={"username": unique_username(), "password": PASSWORD, "is_admin": True},
    )
    assert unknown.status == 422
    assert unknown.body["error"]["details"]["fields"][0]["field"] == "is_admin"

    malformed = await api.call(
        "POST",
        "/v1/sessions",
        data=b'{"username": "x", ',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status == 422
    assert malformed.error_code() == "invalid_json"

    empty = await api.call("POST", "/v1/sessions", data=b"")
    assert empty.status == 422

    user = await api.new_user("patch")
    nothing = await api.call("PATCH", "/v1/users/me", json={}, token=user.token)
    assert nothing.status == 422
    unknown_query = await api.call(
        "GET", "/v1/users", params={"username": user.username, "admin": "1"}, token=user.token
    )
    assert unknown_query.status == 422


async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    huge = json.dumps(
        {"username": unique_username(), "password": PASSWORD, "display_name": "x" * 200_000}
    ).encode()
    reply = await api.call(
        "POST", "/v1/users", data=huge, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 413
    assert reply.error_code() == "payload_too_large"


async def test_every_error_answer_has_the_documented_shape(api: Api) -> None:
    spec = (await api.call("GET", "/v1/openapi.json")).body
    error_schema = spec["components"]["schemas"]["Error"]
    user = await api.new_user("shape")
    taken = await api.register(user.username, PASSWORD)
    answers: list[Reply] = [
        await api.call("GET", "/v1/users/me"),  # 401
        await api.call("GET", "/v1/users/me", token="garbage"),  # 401
        await api.login(user.username, "wrong password"),  # 401
        await api.call(
            "PATCH",
            "/v1/users/me",
            json={"current_password": "wrong one", "new_password": "whatever123"},
            token=user.token,
        ),  # 403
        await api.call("GET", "/v1/users/01234567-0000-7000-8000-000000000000", token=user.token),
        await api.call("GET", "/v1/no/such/route"),  # 404 from the router
        await api.call("PUT", "/v1/sessions"),  # 405
        taken,  # 409
        await api.call("POST", "/v1/users", data=b"x" * 70_000),  # 413
        await api.call("POST", "/v1/users", json={"username": 1}),  # 422
        await api.call("POST", "/v1/users", data=b"{nope"),  # 422
    ]
    statuses = [a.status for a in answers]
    assert statuses == [401, 401, 401, 403, 404, 404, 405, 409, 413, 422, 422]
    for answer in answers:
        assert answer.headers["Content-Type"].startswith("application/json")
        jsonschema.validate(answer.body, error_schema)
        assert set(answer.body["error"]) == {"code", "message", "details"}
        assert "Traceback" not in json.dumps(answer.body)


async def test_openapi_document_validates_and_matches_the_routes(api: Api) -> None:
    reply = await api.call("GET", "/v1/openapi.json")
    assert reply.status == 200
    spec = reply.body
    validate(spec)  # raises on an invalid OpenAPI 3.1 document
    assert spec["openapi"].startswith("3.1")

    app = SERVICE.create_app(GatewaySettings())  # builds routes only; no I/O until started
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method not in ("HEAD", "*")
    }
    documented = {
        (method, path) for path, operations in spec["paths"].items() for method in operations
    }
    assert documented == registered

    # What the account endpoints promise, as the spec says it.
    assert "security" not in spec["paths"]["/v1/users"]["post"]
    assert "security" not in spec["paths"]["/v1/sessions"]["post"]
    assert spec["paths"]["/v1/users/me"]["get"]["security"] == [{"bearer": []}]
    assert "201" in spec["paths"]["/v1/sessions"]["post"]["responses"]
    assert "429" in spec["paths"]["/v1/sessions"]["post"]["responses"]
    registration = spec["components"]["schemas"]["Registration"]
    assert registration["additionalProperties"] is False


async def test_docs_page_is_swagger_ui_served_from_the_gateway(api: Api) -> None:
    page = await api.call("GET", "/v1/docs")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.body
    assert "/v1/openapi.json" in html
    scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert scripts
    for source in scripts:  # nothing from a CDN: every file comes from this gateway
        assert source.startswith("/"), source
        asset = await api.call("GET", source)
        assert asset.status == 200, source
    bundle = await api.call("GET", "/assets/swagger-ui/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.body
