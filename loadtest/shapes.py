"""Stages for a long run: ramp-up, steady state, then a soak. Add it with a second -f:

    locust -f loadtest/locustfile.py,loadtest/shapes.py --headless --host http://127.0.0.1:8080

A LoadTestShape overrides -u/-r/-t. Environment: SHAPE_USERS (peak users, default 200),
SHAPE_RAMP, SHAPE_STEADY, SHAPE_SOAK (seconds; defaults 60, 120, 600), SHAPE_SOAK_USERS
(default half the peak).
"""

from __future__ import annotations

import os

from locust import LoadTestShape


class RampSteadySoak(LoadTestShape):
    users = int(os.environ.get("SHAPE_USERS", "200"))
    ramp = float(os.environ.get("SHAPE_RAMP", "60"))
    steady = float(os.environ.get("SHAPE_STEADY", "120"))
    soak = float(os.environ.get("SHAPE_SOAK", "600"))
    soak_users = int(os.environ.get("SHAPE_SOAK_USERS", str(users // 2)))

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed < self.ramp:
            return max(1, int(self.users * elapsed / self.ramp)), max(1.0, self.users / self.ramp)
        if elapsed < self.ramp + self.steady:
            return self.users, self.users
        if elapsed < self.ramp + self.steady + self.soak:
            return self.soak_users, self.users
        return None
