"""persister storage: writes accepted messages through the message read model.

The collection, its document shape (with the bucket fields every read uses) and
its indexes belong to libs/readmodels/messages.py; this module only names what
the persister bootstraps and writes. A replayed event is refused by the unique
`_id` (= message_id) and counted, not written twice.
"""

from __future__ import annotations

from libs.readmodels.messages import COLLECTIONS, MESSAGES, MessageWriter

MessageStore = MessageWriter

__all__ = ["COLLECTIONS", "MESSAGES", "MessageStore"]
