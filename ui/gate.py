"""One queue in front of the language model, shared by the chat app and the HTTP API.

The model is one shared resource on 2 cores: a request that may run it (a chat message, an
``/api/ask`` call) takes a ``Turn`` here and runs when its turn comes, first come first served,
one at a time. A request that finds ``max_waiting`` others already waiting is refused at once
with ``QueueFull``, which says how long to wait before trying again.

Waiting works from async code (the API endpoints and the chat handler run on the server's event
loop, so a waiting request holds no thread) and from plain threads; a turn is woken from
whichever thread finished the previous one.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import anyio

# Before any request has finished, a turn is assumed to take this long (a typical answer of the
# 1.5B model on 2 cores); afterwards the mean of the last few turns is used.
DEFAULT_TURN_S = 10.0
MAX_WAITING = 32
T = TypeVar("T")


class QueueFull(Exception):
    """Too many requests are waiting for the model; ``retry_after_s`` estimates when to retry."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        self.waiting = waiting
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the queue is full: {waiting} requests are waiting for the model; try again in about {retry_after_s} s"
        )


class Turn:
    """A request's place in the queue. ``release()`` it when done (or when giving up)."""

    __slots__ = ("_queue", "_granted", "_futures", "_released", "started")

    def __init__(self, queue: ModelQueue) -> None:
        self._queue = queue
        self._granted = threading.Event()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._released = False
        self.started: float | None = None  # perf_counter() when the turn came

    @property
    def granted(self) -> bool:
        """True once it is this request's turn with the model."""
        return self._granted.is_set()

    @property
    def ahead(self) -> int:
        """Requests before this one (the one running included); 0 once the turn has come."""
        return self._queue._ahead(self)

    @property
    def wait_s(self) -> float | None:
        """Estimated seconds until this turn comes, from the recent turns' mean duration (the
        running one counted as a whole turn); None before any turn has finished, 0 once granted."""
        return self._queue._wait_estimate(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block this thread until the turn comes; False if ``timeout`` seconds passed first."""
        return self._granted.wait(timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Wait without holding a thread; False if ``timeout`` seconds passed first."""
        if self.granted:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._queue._lock:
            if self.granted:
                return True
            self._futures.append(entry)
        try:
            await asyncio.wait({future}, timeout=timeout)
        finally:
            with self._queue._lock:
                if entry in self._futures:
                    self._futures.remove(entry)
        return self.granted

    def release(self) -> None:
        """Leave the queue, or end the turn and wake the next request. Safe to call twice."""
        self._queue._release(self)

    def _grant(self) -> None:  # called with the queue's lock held
        self.started = time.perf_counter()
        self._granted.set()
        for loop, future in self._futures:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that event loop is closed: nobody waits there any more
                pass
        self._futures.clear()

    def __enter__(self) -> Turn:
        self.wait()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ModelQueue:
    """First come, first served access to the model, one request at a time.

    Args:
        max_waiting: requests allowed to wait besides the one running; one more is refused.
        default_turn_s: the assumed duration of a turn before any has been measured, in seconds.
    """

    def __init__(self, max_waiting: int = MAX_WAITING, *, default_turn_s: float = DEFAULT_TURN_S) -> None:
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {max_waiting}")
        self.max_waiting = max_waiting
        self.default_turn_s = default_turn_s
        self._lock = threading.Lock()
        self._line: deque[Turn] = deque()
        self._current: Turn | None = None
        self._recent: deque[float] = deque(maxlen=20)
        self.served = 0
        self.refused = 0

    def enter(self) -> Turn:
        """Take a place in the queue (granted at once when the model is free).

        Raises:
            QueueFull: ``max_waiting`` requests are already waiting.
        """
        with self._lock:
            if self._current is not None and len(self._line) >= self.max_waiting:
                self.refused += 1
                raise QueueFull(len(self._line), self._retry_after_locked(len(self._line)))
            turn = Turn(self)
            self._line.append(turn)
            self._advance()
            return turn

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._line)

    @property
    def running(self) -> int:
        with self._lock:
            return int(self._current is not None)

    def retry_after_s(self) -> int:
        """Seconds until a place is likely to free up (whole seconds, at least 1)."""
        with self._lock:
            return self._retry_after_locked(len(self._line))

    def snapshot(self) -> dict[str, Any]:
        """The queue's state, for health checks."""
        with self._lock:
            return {
                "running": int(self._current is not None),
                "waiting": len(self._line),
                "max_waiting": self.max_waiting,
                "served": self.served,
                "refused_full": self.refused,
                "mean_turn_s": round(self._mean_turn_locked(), 3),
            }

    # -- internals (all called with the lock held, except _ahead and _release) ---------------------
    def _mean_turn_locked(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else self.default_turn_s

    def _retry_after_locked(self, waiting: int) -> int:
        # The running turn plus everyone waiting must finish before a new request's turn; a
        # client retrying after this long usually finds room.
        return max(1, math.ceil(self._mean_turn_locked() * (waiting + 1)))

    def _advance(self) -> None:
        if self._current is None and self._line:
            self._current = self._line.popleft()
            self._current._grant()

    def _wait_estimate(self, turn: Turn) -> float | None:
        ahead = self._ahead(turn)
        with self._lock:
            if ahead == 0:
                return 0.0
            if not self._recent:
                return None
            mean = sum(self._recent) / len(self._recent)
            # The running turn has been going for a while: count only what is left of it (at least 1 s).
            current = self._current
            left = mean
            if current is not None and current.started is not None:
                left = max(1.0, mean - (time.perf_counter() - current.started))
            return left + mean * (ahead - 1)

    def _ahead(self, turn: Turn) -> int:
        with self._lock:
            if turn is self._current or turn._released:
                return 0
            try:
                return self._line.index(turn) + int(self._current is not None)
            except ValueError:
                return 0

    def _release(self, turn: Turn) -> None:
        with self._lock:
            if turn._released:
                return
            turn._released = True
            if turn is self._current:
                if turn.started is not None:
                    self._recent.append(time.perf_counter() - turn.started)
                self.served += 1
                self._current = None
                self._advance()
            else:
                try:
                    self._line.remove(turn)
                except ValueError:
                    pass


_DONE = object()


async def iterate_in_thread(items: Iterator[T]) -> AsyncIterator[T]:
    """Iterate a blocking generator from async code, one ``next()`` per worker-thread call.

    The event loop stays free while the model writes. The generator is closed when the caller
    stops early (a client gone), so the model's lock is released at once.
    """
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, items, _DONE)
            if item is _DONE:
                return
            yield item  # type: ignore[misc]
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
