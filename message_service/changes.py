"""ChangeMessage commands (edit, delete, react, unreact): decide, then describe the events.

`plan_changes` loads the targeted messages' state (message_state.MessageStates,
one query per shard), applies the batch's changes to it in offset order
(message_state.apply_change) and says, for each command, its answer and the
events it makes:
- in the message's own log (its receiver: a group's log, or the recipient's
  inbox of a direct message) an event with `applies` set (the persister applies
  it to the stored message), sequenced with the batch's other entries;
- for a direct message, the same event for the other participant's inbox, as an
  AppendEvent command keyed by that user (its own partition gives it a seq there).
Both logs always get the event; readers (push, sync, resume) leave out events of
an actor the reader blocks, so a blocked user's edits and reactions never reach
the blocker while the sequence stays gap-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.contracts.conversations import (
    AppendEventPayload,
    ChangeMessage,
    ChangeMessagePayload,
    ConversationRef,
    EventBody,
)
from libs.contracts.messages import MessageView
from libs.errors import DomainError
from message_service.message_state import MessageStates, Outcome, apply_change, ledger_id

_EVENT_TYPE = {
    "edit": "message_edited",
    "delete": "message_deleted",
    "react": "reaction",
    "unreact": "reaction",
}


@dataclass
class ChangePlan:
    """The batch's changes: answers, events to log, mirrors to send, state to save."""

    #: Per command (in order): the outcome, or the refusal.
    answers: list[Outcome | DomainError] = field(default_factory=list)
    #: Events of the messages' own logs, to sequence with the batch.
    own_events: list[AppendEventPayload] = field(default_factory=list)
    #: (other participant, event) of direct messages, to send as AppendEvent.
    mirrors: list[tuple[str, AppendEventPayload]] = field(default_factory=list)
    #: Ledger entries whose state changed (final state of the batch).
    changed_docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def views_to_cache(self) -> list[MessageView]:
        from message_service.message_state import view_of

        return [view_of(doc) for doc in self.changed_docs.values()]


def _event_body(change: ChangeMessagePayload, outcome: Outcome, peer: ConversationRef) -> EventBody:
    view = outcome.view
    common: dict[str, Any] = {
        "type": _EVENT_TYPE[change.action],
        "actor_id": change.actor_id,
        "conversation": peer,
        "message_id": change.message_id,
        "message_seq": change.seq,
    }
    if change.action == "edit":
        common.update(content=view.content, edited_at=view.edited_at)
    elif change.action in ("react", "unreact"):
        assert change.emoji is not None
        common.update(
            emoji=change.emoji,
            added=change.action == "react",
            count=len((view.reactors or {}).get(change.emoji, [])),
        )
    return EventBody(**common)


async def plan_changes(
    commands: Sequence[ChangeMessage], states: MessageStates, *, edit_window_s: float
) -> ChangePlan:
    plan = ChangePlan()
    if not commands:
        return plan
    docs = await states.load((c.payload.receiver_id, c.payload.seq) for c in commands)
    for command in commands:
        change = command.payload
        doc = docs.get(ledger_id(change.receiver_id, change.seq))
        try:
            outcome = apply_change(doc, change, edit_window_s=edit_window_s)
        except DomainError as error:
            plan.answers.append(error)
            continue
        plan.answers.append(outcome)
        if not outcome.changed and not outcome.replayed:
            continue  # a no-op (a repeated reaction, a second delete): nothing to tell
        assert doc is not None
        if outcome.changed:
            plan.changed_docs[doc["_id"]] = doc
        sender_id = doc["sender_id"]
        if change.receiver_kind == "group":
            own_view = ConversationRef(kind="group", id=change.receiver_id)
        else:
            own_view = ConversationRef(kind="user", id=sender_id)
        plan.own_events.append(
            AppendEventPayload(
                event_id=change.change_id,
                receiver_kind=change.receiver_kind,
                receiver_id=change.receiver_id,
                body=_event_body(change, outcome, own_view),
                applies=True,
            )
        )
        if change.receiver_kind == "user" and sender_id != change.receiver_id:
            plan.mirrors.append(
                (
                    sender_id,
                    AppendEventPayload(
                        event_id=f"{change.change_id}-m",
                        receiver_kind="user",
                        receiver_id=sender_id,
                        body=_event_body(
                            change, outcome, ConversationRef(kind="user", id=change.receiver_id)
                        ),
                    ),
                )
            )
    return plan
