"""Capped exponential backoff with full jitter: the one place every retry loop gets its delays from."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def delays(self, rng: Callable[[], float] = random.random) -> Iterator[float]:
        """Endless delays: attempt n waits a uniformly random time in [cap/2, cap], cap = min(max, initial*factor**n).

        Half-jitter keeps a floor so a fleet of gateways that lost the same server spreads out
        without any of them hammering it.
        """
        cap = self.initial
        while True:
            yield cap / 2 + rng() * cap / 2
            cap = min(self.maximum, cap * self.factor)
