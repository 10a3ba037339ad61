"""Changing the password and deleting the account both need the current password."""

from __future__ import annotations

from tests.support.client import Api


async def test_a_wrong_current_password_is_refused_even_when_new_equals_old(api: Api) -> None:
    user = await api.new_user("reauth")
    same = await api.call(
        "PATCH",
        "/v1/users/me",
        json={"current_password": "not my password", "new_password": user.password},
        token=user.token,
    )
    assert same.status == 403, same
    assert same.error_code() == "wrong_password"


async def test_deleting_the_account_needs_the_current_password(api: Api) -> None:
    user = await api.new_user("reauth")
    missing = await api.call("DELETE", "/v1/users/me", token=user.token)
    assert missing.status == 422, missing
    assert missing.error_code() == "invalid_body"

    wrong = await api.call(
        "DELETE", "/v1/users/me", token=user.token, json={"current_password": "guess guess"}
    )
    assert wrong.status == 403, wrong
    assert wrong.error_code() == "wrong_password"
    # Still there: the profile answers and the password still logs in.
    assert (await api.call("GET", "/v1/users/me", token=user.token)).status == 200
    assert (await api.login(user.username, user.password)).status == 201

    deleted = await api.call(
        "DELETE", "/v1/users/me", token=user.token, json={"current_password": user.password}
    )
    assert deleted.status == 204, deleted
    assert (await api.login(user.username, user.password)).status == 401
