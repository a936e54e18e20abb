"""The learner's state lock: reentrant, and handed to waiting threads in the order they came."""

from __future__ import annotations

import threading
import time

import pytest

from adaptor_service._locks import FairRLock


def _wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_reentrant_and_released_only_by_its_owner() -> None:
    lock = FairRLock()
    with lock, lock:
        other = []
        thread = threading.Thread(target=lambda: other.append(lock.acquire(blocking=False)))
        thread.start()
        thread.join()
        assert other == [False]
    with pytest.raises(RuntimeError, match="un-acquired"):
        lock.release()
    got = []
    thread = threading.Thread(target=lambda: (got.append(lock.acquire(blocking=False)), lock.release()))
    thread.start()
    thread.join()
    assert got == [True]


def test_waiters_get_the_lock_in_arrival_order_and_the_releaser_cannot_barge_in() -> None:
    lock = FairRLock()
    order: list[str] = []
    lock.acquire()

    def waiter(name: str) -> None:
        with lock:
            order.append(name)

    threads = []
    for name in "abcde":
        thread = threading.Thread(target=waiter, args=(name,))
        thread.start()
        threads.append(thread)
        queued = len(threads)
        _wait_until(lambda queued=queued: len(lock._waiters) == queued)
    lock.release()
    with lock:  # the thread that let go asks again: it comes after those already waiting
        order.append("releaser")
    for thread in threads:
        thread.join(5)
    assert order == ["a", "b", "c", "d", "e", "releaser"]
