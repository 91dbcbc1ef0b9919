"""BoundedQueue: every queue between threads has a size and says by name what happens when it is full.

    captions = BoundedQueue("captions", 256, Overflow.drop_oldest, on_drop=count)
    captions.put(item)            # never blocks; a full queue drops by its policy and calls on_drop(item)
    item = captions.get(timeout)  # raises queue.Empty after timeout

DROP_OLDEST keeps the newest items (captions: the present matters most);
DROP_NEWEST refuses the new one (nothing here uses it yet, but a producer
that must not lose history would). A put never blocks, so a slow consumer
can never stall the thread that produces.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from streamcap.util.strenum import StrEnum
from queue import Empty
from typing import Any


class Overflow(StrEnum):
    drop_oldest = "drop_oldest"
    drop_newest = "drop_newest"


class BoundedQueue:
    def __init__(self, name: str, maxsize: int, policy: Overflow, on_drop: Callable[[Any], None] | None = None):
        if maxsize < 1:
            raise ValueError(f"queue {name}: maxsize must be >= 1, got {maxsize}")
        self.name, self.maxsize, self.policy, self.on_drop = name, maxsize, Overflow(policy), on_drop
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> None:
        dropped = None
        with self._cond:
            if len(self._items) >= self.maxsize:
                dropped = self._items.popleft() if self.policy == Overflow.drop_oldest else item
                self.dropped += 1
            if dropped is not item:
                self._items.append(item)
            self._cond.notify()
        if dropped is not None and self.on_drop is not None:
            self.on_drop(dropped)

    def put_last(self, item: Any) -> None:
        """Append even when full (an end-of-stream marker must never be the one dropped)."""
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                raise Empty
            return self._items.popleft()

    def get_nowait(self) -> Any:
        return self.get(0)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
