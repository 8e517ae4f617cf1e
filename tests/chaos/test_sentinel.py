"""Redis Sentinel: two instances on ``redis+sentinel://``, the master SIGKILLed mid-stream.

Real processes: a master, a replica and three sentinels (tests/redis_ha.py), two app instances,
subscribers on both (the package's resuming client). The publisher uses the server API with an
idempotency key per message, so its retries after the kill (503, outcome unknown) are safe.
Replication is asynchronous: the promoted replica may lack the last writes. Every subscriber must
then end with every message once and in order, or be told (``recovered`` with ``ok:false``) and
have everything after that in order.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.chaos.stream import (
    all_connected,
    arrivals_after,
    assert_whole_or_told,
    close_all,
    publish_keyed,
    report,
    subscribe,
    wait_for_numbers,
)
from tests.redis_ha import MASTER_NAME, SentinelSet
from tests.support import API_HEADERS, TEST_SECRET, AppProcess, eventually, running, wait_until

SUBSCRIBERS = 40
MESSAGES = 400
RATE = 40.0  # 10 s of stream; the failover takes 3-5 s of it


def test_an_unknown_master_name_is_refused_at_start_with_one_line(tmp_path: Path) -> None:
    ha = SentinelSet(tmp_path / "ha").start()
    try:
        url = ha.url.replace(f"/{MASTER_NAME}/", "/no-such-master/")
        result = subprocess.run(
            [sys.executable, "-m", "app", "--broker-url", url, "--port", "1"],
            env={**os.environ, "SWITCHBOARD_JWT_SECRET": TEST_SECRET},
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        ha.stop()
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "no Sentinel" in result.stderr
    assert "no-such-master" in result.stderr


@pytest.mark.timeout(180)
async def test_a_master_killed_mid_stream_fails_over_without_silent_loss(tmp_path: Path) -> None:
    ha = SentinelSet(tmp_path / "ha").start()
    try:
        env = {"SWITCHBOARD_BROKER_URL": ha.url}
        apps = [AppProcess("a", tmp_path, env), AppProcess("b", tmp_path, env)]
        with running(*apps):
            subs = [subscribe(f"s{i}", apps[i % 2].ws("/ws/global/ha")) for i in range(SUBSCRIBERS)]
            try:
                await all_connected(subs)
                wait_until(
                    lambda: (
                        httpx.get(f"{apps[0].http}/api/presence/global:ha", headers=API_HEADERS).json()["members"]
                        == SUBSCRIBERS
                    ),
                    15,
                    "every subscriber joined",
                )
                expected = range(1, MESSAGES + 1)
                published_at: dict[int, float] = {}
                stream = asyncio.create_task(publish_keyed(apps, ["global:ha"], expected, RATE, published_at))
                await eventually(lambda: len(published_at) >= MESSAGES // 3, 60, "a third of the stream")
                old_master = ha.master_port()
                killed_at = ha.kill_master()
                unready = False
                while not stream.done():  # readiness while it fails over (polled, as a probe would)
                    response = await asyncio.to_thread(httpx.get, f"{apps[0].http}/readyz", timeout=2)
                    unready = unready or response.status_code == 503
                    await asyncio.sleep(0.1)
                refused = await stream
                await wait_for_numbers(subs, expected, 30)
                delivered = arrivals_after(subs, published_at, killed_at)
                counts = report(
                    "Sentinel failover (master SIGKILLed)",
                    subs,
                    expected,
                    new_master_port=ha.master_port(),
                    refused_publishes=refused,
                    readyz_went_503=unready,
                    kill_to_first_delivery_s=round(min(delivered), 2),
                    kill_to_every_subscriber_s=round(max(delivered), 2),
                )
            finally:
                await close_all(subs)
            assert ha.master_port() != old_master
            assert httpx.get(f"{apps[0].http}/readyz").status_code == 200
    finally:
        ha.stop()
    for sub in subs:
        assert_whole_or_told(sub, expected)
    assert counts["subscribers"] == SUBSCRIBERS


def test_an_instance_started_before_its_sentinels_is_unready_until_they_appear(tmp_path: Path) -> None:
    ha = SentinelSet(tmp_path / "ha")  # ports chosen, nothing started yet
    app = AppProcess("early", tmp_path, {"SWITCHBOARD_BROKER_URL": ha.url})
    try:
        app.start()  # /healthz answers: the process is up
        assert httpx.get(f"{app.http}/readyz").status_code == 503
        ha.start()
        wait_until(lambda: httpx.get(f"{app.http}/readyz").status_code == 200, 20, "ready once Sentinel is there")
    finally:
        app.stop()
        ha.stop()
