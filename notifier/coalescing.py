"""Bursts: the messages one user gets in one conversation within a short window.

The first message of a burst opens it and schedules its flush `window_s` later;
the messages that follow before then join it. A flush hands the burst to the
`flush` callback (one notification), and the next message opens a new burst.
`close` flushes what is pending at once (a stopping notifier sends what it has
instead of dropping it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from libs.contracts.messages import MessageAcceptedPayload
from libs.logging import get_logger

log = get_logger(__name__)


@dataclass
class Burst:
    user_id: str
    conversation: str
    messages: list[MessageAcceptedPayload] = field(default_factory=list)

    @property
    def latest(self) -> MessageAcceptedPayload:
        return max(self.messages, key=lambda m: (m.created_at, m.message_id))


class Coalescer:
    def __init__(self, window_s: float, flush: Callable[[Burst], Awaitable[None]]) -> None:
        self.window_s = window_s
        self._flush = flush
        self._open: dict[tuple[str, str], Burst] = {}
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._open)

    def add(self, user_id: str, conversation: str, message: MessageAcceptedPayload) -> None:
        key = (user_id, conversation)
        burst = self._open.get(key)
        if burst is None:
            burst = self._open[key] = Burst(user_id, conversation)
            self._timers[key] = asyncio.create_task(self._later(key))
        if all(m.message_id != message.message_id for m in burst.messages):
            burst.messages.append(message)

    async def _later(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(self.window_s)
        self._timers.pop(key, None)
        burst = self._open.pop(key, None)
        if burst is not None:
            # Its own task: a slow target never holds a timer, and close() cancels
            # only timers that are still waiting.
            task = asyncio.create_task(self._run(burst))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _run(self, burst: Burst) -> None:
        try:
            await self._flush(burst)
        except Exception:
            log.exception("notification failed", user_id=burst.user_id)

    async def close(self) -> None:
        """Flush every open burst now and wait for the flushes."""
        timers = list(self._timers.values())
        self._timers.clear()
        for timer in timers:
            timer.cancel()
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        bursts = list(self._open.values())
        self._open.clear()
        await asyncio.gather(*(self._run(b) for b in bursts), *list(self._flushing))
