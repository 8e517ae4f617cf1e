"""What one command may cost the instance's event loop: claim globs and permission hooks.

One socket must not be able to stall the others: a glob in a claim matches in linear time, and a
hook is answered at its deadline whatever it does (docs/security.md, "What one client can make
the cluster do").
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from app.auth import mint_token
from app.config import Settings
from tests.integration.wsproto import connected, is_pub
from tests.support import TEST_SECRET, AppProcess, running

CONFIG = """
[default]
[namespaces.x]
[namespaces.team]
subscribe = "granted"
[namespaces.hooked]
subscribe = "granted"
"""
# With the claim compiled to a regex, one refused subscribe to a 125-character near miss took
# 1.41 s of CPU, during which no other socket was served.
STARS = "team:*-*-*-*-*-end"
BOUND = 0.050  # seconds: the target for a refused subscribe and for the delay of others
HOOK_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    workdir = tmp_path_factory.mktemp("command-cpu")
    (workdir / "switchboard.toml").write_text(CONFIG)
    env = {
        "SWITCHBOARD_CONFIG": str(workdir / "switchboard.toml"),
        "SWITCHBOARD_HOOKS": "tests.integration.ws_hooks:hooks",
        "SWITCHBOARD_HOOK_TIMEOUT": str(HOOK_TIMEOUT),
    }
    with running(AppProcess("command-cpu", workdir, env)) as (process,):
        yield process


def token(sub: str, **claims: object) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, None, 600, **claims)


def cpu_seconds(app: AppProcess) -> float:
    """User plus system CPU time of the instance's process, from /proc (in clock ticks)."""
    assert app.proc is not None
    with open(f"/proc/{app.proc.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def near_misses(count: int) -> list[str]:
    """Names that match every piece of STARS but the last: the worst input for backtracking."""
    rng = random.Random(9)
    return ["team:" + "-" * rng.randint(100, 120) + rng.choice(("en", "x", "-ed", "nd")) for _ in range(count)]


async def test_a_glob_claim_refuses_near_misses_in_linear_time(app: AppProcess) -> None:
    async with (
        connected(app.ws("/ws"), token("mallory", channels=[STARS])) as mallory,
        connected(app.ws("/ws")) as watcher,
    ):
        await mallory.ok("subscribe", channel="team:a-b-c-d-e-end")  # the claim does grant
        await watcher.ok("subscribe", channel="x:watch")
        names = near_misses(20)
        # CPU of the whole instance over 20 refused subscribes: the event loop runs one thing at a
        # time, so no command in them blocked others for longer than all of them took together.
        before = cpu_seconds(app)
        ids = [mallory.next_id() for _ in names]
        for cmd_id, name in zip(ids, names, strict=True):
            await mallory.send({"id": cmd_id, "op": "subscribe", "channel": name})
        refused = [await mallory.reply(cmd_id, timeout=60) for cmd_id in ids]
        spent = cpu_seconds(app) - before
        assert all(r["ok"] is False and r["error"]["code"] == 103 for r in refused), refused
        assert spent < BOUND, f"20 refused subscribes took {spent:.3f} s of CPU"
        # Wall clock, as the target is stated: each refused within 50 ms (median of 20), and
        # another client's publish round trip, taken between them, within it too.
        waits, delays = [], []
        for name in names:
            start = time.perf_counter()
            assert await mallory.error("subscribe", channel=name) == 103
            waits.append(time.perf_counter() - start)
            start = time.perf_counter()
            await watcher.ok("publish", channel="x:watch", data="tick")
            await watcher.push(is_pub("x:watch"))
            delays.append(time.perf_counter() - start)
        assert statistics.median(waits) < BOUND, waits
        assert statistics.median(delays) < BOUND, delays


async def test_a_hook_that_swallows_its_cancellation_is_refused_at_the_deadline(app: AppProcess) -> None:
    async with connected(app.ws("/ws"), token("ann")) as ann, connected(app.ws("/ws")) as other:
        start = time.perf_counter()
        found = await ann.call("subscribe", channel="hooked:stubborn")
        took = time.perf_counter() - start
        # Refused (100), not allowed by the late True, and answered at the deadline: the hook
        # goes on for 4 s more after it is cancelled.
        assert found["ok"] is False, found
        assert found["error"]["code"] == 100, found
        assert took < HOOK_TIMEOUT + 2.0, took
        # The overrunning hook holds no one else up, nor this client's next command.
        await other.ok("subscribe", channel="x:meanwhile")
        await ann.ok("subscribe", channel="x:after")
        log = app.log_text()
        assert "hook on_subscribe still running after its 0.5s deadline: refused" in log
        text = httpx.get(app.http + "/metrics", timeout=5).text
        assert 'switchboard_hook_overruns_total{hook="on_subscribe"} 1.0' in text
