"""Churn: every user's network flaps. Each holds a resuming socket and, at random intervals of
about 15 s (10-20), loses it abruptly (a TCP reset, no close frame), stays away 2 s, and comes
back with its last position. Nothing may be lost, repeated or reordered; ``replay`` is the time
from reconnecting to the ``recovered`` frame.

    make loadtest SCENARIO=churn USERS=1000 SPAWN_RATE=200 DURATION=3m

See loadtest/resume.py for the statistics and the environment (LOAD_CHANNELS, LOAD_RATE...).
"""

from __future__ import annotations

import random
import time
from typing import Any

import gevent

from loadtest.resume import Publisher, ResumingUser

__all__ = ["ChurnUser", "Publisher"]

AWAY = 2.0


class ChurnUser(ResumingUser):
    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.back_at = 0.0
        self.flapper: gevent.Greenlet | None = None

    def on_start(self) -> None:
        super().on_start()
        self.flapper = gevent.spawn(self.flap)

    def on_stop(self) -> None:
        if self.flapper is not None:
            self.flapper.kill(block=False)
        super().on_stop()

    def flap(self) -> None:
        while True:
            gevent.sleep(random.uniform(10, 20))
            self.back_at = time.monotonic() + AWAY
            self.drop()

    def away(self) -> None:
        gevent.sleep(max(0.0, self.back_at - time.monotonic()))
