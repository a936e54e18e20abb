"""A reentrant lock that waiting threads get in the order they asked for it."""

from __future__ import annotations

import collections
import threading
from types import TracebackType

__all__ = ["FairRLock"]

_HANDING_OVER = -1  # owner while the lock passes to the next waiter: nobody may barge in


class FairRLock:
    """``threading.RLock`` with first-come, first-served handover.

    ``threading.RLock`` lets the thread that releases it take it straight back, so under
    load a request that needs the lock twice may wait behind others many times over; this
    lock hands itself to the longest waiting thread.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._count = 0
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by the thread that hands the lock over
        with self._mutex:
            self._owner, self._count = me, 1
        return True

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release un-acquired lock")
            self._count -= 1
            if self._count:
                return
            if self._waiters:
                self._owner = _HANDING_OVER
                self._waiters.popleft().release()
            else:
                self._owner = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
