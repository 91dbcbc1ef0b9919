"""Exponential backoff with jitter, for reconnect loops.

    backoff = Backoff(initial_s=1.0, max_s=30.0)
    while not stop.wait(backoff.next_delay()):
        if try_connect():
            backoff.reset()

Delay n (0-based) is `min(max_s, initial_s * factor**n)` scaled by a random
factor in `[1 - jitter, 1]`, so it never exceeds the cap and many cameras that
fail together (a switch reboots) do not all retry in the same instant.
"""
from __future__ import annotations

import random


class Backoff:
    def __init__(
        self,
        initial_s: float = 1.0,
        max_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.25,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got initial_s={initial_s} max_s={max_s}")
        if factor < 1 or not 0 <= jitter < 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter < 1, got factor={factor} jitter={jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self.attempt = 0  # failures since the last reset
        self._rng = rng or random.Random()

    def base_delay(self, attempt: int) -> float:
        """The delay before jitter for the `attempt`-th consecutive failure (0-based)."""
        # Stop growing the exponent once past the cap so huge attempts cannot overflow.
        if self.initial_s * self.factor ** min(attempt, 64) >= self.max_s:
            return self.max_s
        return self.initial_s * self.factor**attempt

    def next_delay(self) -> float:
        delay = self.base_delay(self.attempt) * self._rng.uniform(1.0 - self.jitter, 1.0)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
