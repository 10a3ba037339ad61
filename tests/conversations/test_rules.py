"""message_service's rule book for changes (message_state.apply_change), without
the stack: the decisions the end-to-end tests rely on, one case each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.contracts.conversations import ChangeMessagePayload
from libs.errors import Conflict, Forbidden, NotFound
from message_service.message_state import APPLIED_KEPT, apply_change

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
WINDOW = 48 * 3600


def ledger_entry(**extra: Any) -> dict[str, Any]:
    return {
        "_id": "bob:7",
        "key": "k",
        "receiver_id": "bob",
        "seq": 7,
        "message_id": "m1",
        "receiver_kind": "user",
        "sender_id": "ada",
        "content": "hello",
        "created_at": NOW - timedelta(minutes=1),
        **extra,
    }


def change(
    action: str, actor: str = "ada", change_id: str = "c1", **kw: Any
) -> ChangeMessagePayload:
    return ChangeMessagePayload(
        change_id=change_id,
        actor_id=actor,
        action=action,  # type: ignore[arg-type]
        message_id="m1",
        receiver_kind="user",
        receiver_id="bob",
        seq=7,
        created_at=NOW,
        **kw,
    )


def test_edit_sets_content_and_edited_at_once() -> None:
    doc = ledger_entry()
    outcome = apply_change(doc, change("edit", content="fixed"), edit_window_s=WINDOW)
    assert outcome.changed
    assert outcome.view.content == "fixed"
    assert outcome.view.edited_at == NOW
    again = apply_change(doc, change("edit", content="fixed"), edit_window_s=WINDOW)
    assert again.replayed
    assert not again.changed


def test_edit_rules() -> None:
    with pytest.raises(Forbidden):
        apply_change(ledger_entry(), change("edit", actor="bob", content="x"), edit_window_s=WINDOW)
    old = ledger_entry(created_at=NOW - timedelta(hours=49))
    with pytest.raises(Forbidden) as window:
        apply_change(old, change("edit", content="x"), edit_window_s=WINDOW)
    assert window.value.code == "edit_window_passed"
    with pytest.raises(NotFound):
        apply_change(None, change("edit", content="x"), edit_window_s=WINDOW)
    with pytest.raises(NotFound):
        apply_change(ledger_entry(message_id="other"), change("delete"), edit_window_s=WINDOW)


def test_delete_purges_and_then_edits_and_reactions_conflict() -> None:
    doc = ledger_entry(reactors={"👍": ["bob"]}, reply_to={"id": "m0"})
    gone = apply_change(doc, change("delete"), edit_window_s=WINDOW)
    assert gone.changed
    assert gone.view.deleted
    assert gone.view.content == ""
    assert gone.view.reactors == {}
    assert gone.view.reply_to is None
    assert doc["content"] == ""
    with pytest.raises(Conflict):
        apply_change(doc, change("edit", change_id="c2", content="x"), edit_window_s=WINDOW)
    with pytest.raises(Conflict):
        apply_change(doc, change("react", "bob", "c3", emoji="👍"), edit_window_s=WINDOW)
    second = apply_change(doc, change("delete", change_id="c4"), edit_window_s=WINDOW)
    assert not second.changed


def test_reactions_are_one_per_user_and_emoji() -> None:
    doc = ledger_entry()
    assert apply_change(doc, change("react", "bob", "r1", emoji="👍"), edit_window_s=WINDOW).changed
    assert not apply_change(
        doc, change("react", "bob", "r2", emoji="👍"), edit_window_s=WINDOW
    ).changed
    both = apply_change(doc, change("react", "ada", "r3", emoji="👍"), edit_window_s=WINDOW)
    assert both.view.reactors == {"👍": ["bob", "ada"]}
    assert not apply_change(
        doc, change("unreact", "bob", "r4", emoji="🎉"), edit_window_s=WINDOW
    ).changed
    apply_change(doc, change("unreact", "bob", "r5", emoji="👍"), edit_window_s=WINDOW)
    last = apply_change(doc, change("unreact", "ada", "r6", emoji="👍"), edit_window_s=WINDOW)
    assert last.view.reactors == {}


def test_applied_change_ids_are_bounded() -> None:
    doc = ledger_entry()
    for n in range(APPLIED_KEPT + 10):
        action = "react" if n % 2 == 0 else "unreact"
        apply_change(doc, change(action, "bob", f"c{n}", emoji="👍"), edit_window_s=WINDOW)
    assert len(doc["applied"]) == APPLIED_KEPT
