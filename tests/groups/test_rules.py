"""Unit tests for group_service's pure rules: roles, removals, hand-over, names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from group_service.handlers import check_removal, group_name, successor, visible_group
from group_service.repository import GroupState, Member
from libs.errors import Forbidden, Invalid, NotFound

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_group(**members: tuple[str, int]) -> GroupState:
    """members: user_id -> (role, minutes after creation they joined)."""
    owner = next(user for user, (role, _) in members.items() if role == "owner")
    return GroupState(
        id="g",
        name="team",
        owner_id=owner,
        created_at=T0,
        members={
            user: Member(role, T0 + timedelta(minutes=minutes))  # type: ignore[arg-type]
            for user, (role, minutes) in members.items()
        },
    )


def test_successor_is_longest_standing_admin_before_any_member() -> None:
    group = make_group(o=("owner", 0), m1=("member", 1), a2=("admin", 5), a1=("admin", 3))
    assert successor(group, "o") == "a1"


def test_successor_falls_back_to_longest_standing_member() -> None:
    group = make_group(o=("owner", 0), m2=("member", 9), m1=("member", 2))
    assert successor(group, "o") == "m1"


def test_no_successor_when_the_owner_is_alone() -> None:
    assert successor(make_group(o=("owner", 0)), "o") is None


def test_removal_rules() -> None:
    group = make_group(o=("owner", 0), a=("admin", 1), b=("admin", 2), m=("member", 3))
    assert check_removal(group, "m", "m") == "left"
    assert check_removal(group, "o", "a") == "removed"
    assert check_removal(group, "a", "m") == "removed"
    with pytest.raises(Forbidden):
        check_removal(group, "a", "b")  # an admin does not remove another admin
    with pytest.raises(Forbidden):
        check_removal(group, "a", "o")
    with pytest.raises(Forbidden):
        check_removal(group, "m", "a")
    with pytest.raises(NotFound):
        check_removal(group, "o", "stranger")


def test_non_members_do_not_see_the_group() -> None:
    group = make_group(o=("owner", 0))
    assert visible_group(group, "o") is group
    with pytest.raises(NotFound):
        visible_group(group, "x")
    with pytest.raises(NotFound):
        visible_group(None, "o")


def test_group_names_are_trimmed_and_bounded() -> None:
    assert group_name("  Book   club ") == "Book club"
    with pytest.raises(Invalid):
        group_name("   ")
    with pytest.raises(Invalid):
        group_name("x" * 101)


def test_group_view_lists_members_oldest_first() -> None:
    group = make_group(o=("owner", 0), late=("member", 7), early=("admin", 1))
    view = group.view()
    assert [m.user_id for m in view.members] == ["o", "early", "late"]
    assert view.members[1].role == "admin"
