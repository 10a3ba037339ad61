"""The push-target routes (issue 18): registration, listing, removal, authorization."""

from __future__ import annotations

import pytest

from gateway.routes.push_targets import check_address
from libs.errors import Invalid
from libs.push_targets import b64url_decode
from tests.notifications.receiver import Receiver
from tests.support.client import Api


async def test_the_vapid_key_is_a_stable_p256_point(api: Api) -> None:
    first = await api.call("GET", "/v1/push-targets/vapid-key")
    second = await api.call("GET", "/v1/push-targets/vapid-key")
    assert first.status == 200
    assert first.body == second.body
    point = b64url_decode(first.body["public_key"])
    assert len(point) == 65
    assert point[0] == 4


async def test_register_list_replace_and_remove(api: Api, receiver: Receiver) -> None:
    bob, eve = await api.new_user("bob"), await api.new_user("eve")
    _, url, secret = receiver.webhook()
    hook = {"target": {"kind": "webhook", "url": url, "secret": secret}}
    made = await api.call("POST", "/v1/push-targets", token=bob.token, json=hook)
    assert made.status == 201
    again = await api.call("POST", "/v1/push-targets", token=bob.token, json=hook)
    assert again.body["id"] == made.body["id"]  # the same URL replaces, never duplicates
    _, subscription = receiver.subscription()
    push = await api.call(
        "POST",
        "/v1/push-targets",
        token=bob.token,
        json={"target": {"kind": "webpush", "subscription": subscription.as_json()}},
    )
    assert push.status == 201

    listed = await api.call("GET", "/v1/push-targets", token=bob.token)
    assert {t["kind"] for t in listed.body["items"]} == {"webhook", "webpush"}
    assert all("secret" not in t and "keys" not in t for t in listed.body["items"])

    # A stranger sees none of them and cannot remove them.
    assert (await api.call("GET", "/v1/push-targets", token=eve.token)).body["items"] == []
    stolen = await api.call("DELETE", f"/v1/push-targets/{made.body['id']}", token=eve.token)
    assert stolen.status == 404
    assert stolen.error_code() == "push_target_not_found"
    assert (await api.call("GET", "/v1/push-targets")).status == 401

    gone = await api.call("DELETE", f"/v1/push-targets/{made.body['id']}", token=bob.token)
    assert gone.status == 204
    again_gone = await api.call("DELETE", f"/v1/push-targets/{made.body['id']}", token=bob.token)
    assert again_gone.status == 404
    remaining = await api.call("GET", "/v1/push-targets", token=bob.token)
    assert [t["kind"] for t in remaining.body["items"]] == ["webpush"]


async def test_bad_targets_get_clear_errors(api: Api) -> None:
    bob = await api.new_user("bob")
    bad_keys = {
        "kind": "webpush",
        "subscription": {
            "endpoint": "https://push.example.com/x",
            "keys": {"p256dh": "A" * 87, "auth": "B" * 22},
        },
    }
    reply = await api.call("POST", "/v1/push-targets", token=bob.token, json={"target": bad_keys})
    assert reply.status == 422
    assert reply.error_code() == "invalid_target"
    short_secret = {"kind": "webhook", "url": "https://hooks.example.com/", "secret": "x"}
    reply = await api.call(
        "POST", "/v1/push-targets", token=bob.token, json={"target": short_secret}
    )
    assert reply.status == 422
    unknown = {"kind": "carrier-pigeon"}
    reply = await api.call("POST", "/v1/push-targets", token=bob.token, json={"target": unknown})
    assert reply.status == 422


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest",
        "https://localhost/x",
        "https://user:pw@hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "https://hooks.example.com:99999/x",
    ],
)
def test_addresses_inside_the_network_are_refused(url: str) -> None:
    with pytest.raises(Invalid):
        check_address(url, allow_insecure=False)


def test_public_https_addresses_are_accepted() -> None:
    check_address("https://hooks.example.com/notify", allow_insecure=False)
    check_address("https://93.184.216.34/notify", allow_insecure=False)
