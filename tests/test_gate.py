"""The model queue shared by the chat app and the API: first come first served, one at a time,
a full queue refused with a retry hint, and waiting from async code or threads alike."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ui.gate import ModelQueue, QueueFull


def test_one_turn_at_a_time_in_arrival_order() -> None:
    queue = ModelQueue(max_waiting=8)
    first = queue.enter()
    assert first.granted and first.ahead == 0
    turns = [queue.enter() for _ in range(4)]
    assert [t.ahead for t in turns] == [1, 2, 3, 4] and not any(t.granted for t in turns)
    order: list[int] = []
    running: list[int] = []
    overlap: list[int] = []

    def worker(n: int) -> None:
        with turns[n]:
            running.append(n)
            if len(running) > 1:
                overlap.append(n)
            order.append(n)
            time.sleep(0.01)
            running.remove(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in reversed(range(4))]  # start out of order
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert order == []  # nobody runs before the first turn ends
    first.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3] and not overlap
    assert queue.snapshot()["served"] == 5 and queue.running == 0 and queue.waiting == 0


def test_full_queue_refuses_with_a_retry_hint() -> None:
    queue = ModelQueue(max_waiting=2, default_turn_s=7.0)
    running = queue.enter()
    waiting = [queue.enter(), queue.enter()]
    with pytest.raises(QueueFull) as info:
        queue.enter()
    assert info.value.waiting == 2 and info.value.retry_after_s == 21  # 3 turns of 7 s before a new one
    assert "queue is full" in str(info.value) and "21 s" in str(info.value)
    waiting[1].release()  # gave up waiting: its place is free again
    extra = queue.enter()
    assert extra.ahead == 2
    for turn in (running, waiting[0], extra):
        turn.release()
    assert queue.snapshot()["refused_full"] == 1


def test_retry_hint_follows_measured_turns() -> None:
    queue = ModelQueue(max_waiting=1, default_turn_s=100.0)
    turn = queue.enter()
    time.sleep(0.02)
    turn.release()
    assert queue.retry_after_s() == 1  # measured turns were short


def test_release_is_idempotent_and_leaving_the_line_moves_others_up() -> None:
    queue = ModelQueue()
    a, b, c = queue.enter(), queue.enter(), queue.enter()
    b.release()
    b.release()
    assert c.ahead == 1 and queue.waiting == 1
    a.release()
    a.release()  # a second release must not end c's turn
    assert c.granted and queue.running == 1
    c.release()
    assert queue.running == 0


def test_async_waiter_is_woken_from_another_thread() -> None:
    queue = ModelQueue()
    holder = queue.enter()

    async def wait_for_turn() -> tuple[bool, bool]:
        turn = queue.enter()
        early = await turn.wait_async(timeout=0.05)
        threading.Timer(0.05, holder.release).start()
        late = await turn.wait_async(timeout=5)
        turn.release()
        return early, late

    assert asyncio.run(wait_for_turn()) == (False, True)
    assert queue.running == 0 and queue.waiting == 0


def test_cancelled_async_waiter_leaves_the_line() -> None:
    queue = ModelQueue()
    holder = queue.enter()

    async def give_up() -> None:
        turn = queue.enter()
        try:
            await asyncio.wait_for(turn.wait_async(), timeout=0.05)
        except TimeoutError:
            pass
        finally:
            turn.release()

    asyncio.run(give_up())
    assert queue.waiting == 0
    holder.release()
    assert queue.running == 0


def test_wait_estimate_comes_from_recent_turns() -> None:
    queue = ModelQueue(max_waiting=4, default_turn_s=100.0)
    running = queue.enter()
    waiting = [queue.enter(), queue.enter()]
    assert running.wait_s == 0.0
    assert waiting[0].wait_s is None  # no turn has finished: no guess from a constant
    queue._recent.extend([4.0, 6.0])  # two measured turns of 5 s on average
    running.started = time.perf_counter() - 2.0  # the running turn is 2 s in
    assert waiting[0].wait_s == pytest.approx(3.0, abs=0.2)  # what is left of the running turn
    assert waiting[1].wait_s == pytest.approx(8.0, abs=0.2)  # plus one whole turn
    for turn in (running, *waiting):
        turn.release()
