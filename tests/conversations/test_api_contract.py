"""The OpenAPI document describes issue 16's routes as they behave: each with its
error answers, the views without the internal fields (who reacted, where a reply's
original is), and the inbox query's parameters."""

from __future__ import annotations

from tests.support.client import Api

ROUTES = {
    ("/v1/conversations", "get"): {"200", "401", "422"},
    ("/v1/conversations/users/{user_id}", "patch"): {"200", "404", "422"},
    ("/v1/conversations/groups/{group_id}", "patch"): {"200", "404", "422"},
    ("/v1/messages/{message_id}", "patch"): {"200", "403", "404", "409", "422"},
    ("/v1/messages/{message_id}", "delete"): {"204", "403", "404"},
    ("/v1/messages/{message_id}/reactions/{emoji}", "put"): {"200", "403", "404", "409"},
    ("/v1/messages/{message_id}/reactions/{emoji}", "delete"): {"200", "403", "404", "409"},
}


async def test_new_routes_are_documented_with_their_errors(api: Api) -> None:
    reply = await api.call("GET", "/v1/openapi.json")
    assert reply.status == 200
    spec = reply.body
    for (path, method), statuses in ROUTES.items():
        operation = spec["paths"][path][method]
        assert statuses <= set(operation["responses"]), (path, method)
        assert operation["security"] == [{"bearer": []}]
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}
    schemas = spec["components"]["schemas"]
    message = schemas["MessageView"]["properties"]
    assert {"edited_at", "deleted", "reactions", "my_reactions", "reply_to"} <= set(message)
    assert "reactors" not in message
    assert set(schemas["ReplyView"]["properties"]) == {"id", "sender_id", "preview", "deleted"}
    inbox = schemas["ConversationView"]["properties"]
    assert set(inbox) == {
        "kind",
        "id",
        "title",
        "last_message",
        "unread_count",
        "last_activity_at",
        "muted",
        "archived",
    }
    params = {p["name"] for p in spec["paths"]["/v1/conversations"]["get"]["parameters"]}
    assert params == {"limit", "cursor", "archived"}
    sync = schemas["SyncPage"]["properties"]
    assert "events" in sync
    assert "reply_to" in schemas["SendMessageBody"]["properties"]
