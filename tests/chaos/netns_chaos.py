"""Instance crash and rolling deploy behind the unchanged nginx.conf, in a private namespace.

Run by test_behind_nginx.py inside ``unshare -m -n`` (tests/netns.py builds the stack: redis,
gunicorn instances with two workers each, nginx on :8080). Subscribers are the package's own
reconnecting client, each from its own source address so nginx's hash spreads them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.chaos.stream import (
    Publisher,
    Subscriber,
    all_connected,
    catch_up_seconds,
    close_all,
    report,
    subscribe,
    wait_for_numbers,
)
from tests.netns import IN_NAMESPACE, PROXY, PROXY_HTTP, Stack, wait_presence
from tests.support import eventually

pytestmark = pytest.mark.skipif(not IN_NAMESPACE, reason="runs inside a private namespace via test_behind_nginx.py")

SUBSCRIBERS = 200
MESSAGES = 2000
RATE = 100.0  # messages per second: 20 s of stream
CHANNEL = "chaos"


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("chaos"), {"SWITCHBOARD_DRAIN_SECONDS": "1"})
    try:
        yield stack
    finally:
        stack.stop()


def subscribers(channel: str) -> list[Subscriber]:
    return [
        subscribe(
            f"s{i}",
            f"{PROXY}/ws/global/{channel}",
            connect_options={"local_addr": (f"127.1.{i // 250}.{i % 250 + 1}", 0)},
        )
        for i in range(SUBSCRIBERS)
    ]


def assert_exactly_once_in_order(subs: list[Subscriber], expected: range) -> None:
    for sub in subs:
        assert sub.numbers == list(expected), sub.explain(expected)
        assert all(r["ok"] for r in sub.recovered), sub.explain(expected)


async def test_instance_crash_loses_nothing(stack: Stack) -> None:
    stack.start(("app1", "app2"))
    expected = range(1, MESSAGES + 1)
    subs = subscribers(f"{CHANNEL}-crash")
    try:
        await all_connected(subs)
        # Connected is not yet joined: the stream starts once every subscriber is in the channel.
        await wait_presence(f"global:{CHANNEL}-crash", SUBSCRIBERS, 30)
        on = dict(Counter(s.client.instance for s in subs))
        assert set(on) == {"app1", "app2"}, on
        pub = Publisher(lambda: "http://app2:8000", f"{CHANNEL}-crash")
        stream = asyncio.create_task(pub.run(expected, RATE))
        await eventually(lambda: len(pub.published_at) >= MESSAGES // 2, 60, "half the stream")
        killed_at = time.monotonic()
        stack.kill("app1")
        await stream
        await wait_for_numbers(subs, expected, 30)
        counts = report(
            "instance SIGKILLed behind nginx",
            subs,
            expected,
            catch_up_s=round(catch_up_seconds(subs, pub, killed_at), 3),
            started_on=on,
        )
    finally:
        await close_all(subs)
    # Everyone on the dead instance came back through nginx and resumed from history.
    assert_exactly_once_in_order(subs, expected)
    assert counts["reconnects"] > 0
    assert counts["recovered_ok"] == counts["reconnects"]


async def test_rolling_deploy_loses_nothing(stack: Stack) -> None:
    names = ("app1", "app2", "app3")
    stack.start(names)
    expected = range(1, MESSAGES + 1)
    subs = subscribers(f"{CHANNEL}-deploy")
    try:
        await all_connected(subs)
        await wait_presence(f"global:{CHANNEL}-deploy", SUBSCRIBERS, 30)
        pub = Publisher(lambda: PROXY_HTTP, f"{CHANNEL}-deploy")
        stream = asyncio.create_task(pub.run(expected, RATE))
        await eventually(lambda: len(pub.published_at) >= MESSAGES // 10, 60, "the stream to start")
        started = time.monotonic()
        for name in names:
            # One at a time, as a Deployment with maxUnavailable=0 would: drain, stop, start, ready.
            stack.apps[name].terminate()
            await asyncio.to_thread(stack.apps[name].wait, 30)
            stack.launch(name)
            await asyncio.to_thread(stack.wait_ready, name)
        deploy_s = time.monotonic() - started
        assert not stream.done(), "the deploy should happen mid-stream; lower RATE if it does not"
        await stream
        await wait_for_numbers(subs, expected, 30)
        counts = report(
            "rolling deploy behind nginx",
            subs,
            expected,
            deploy_s=round(deploy_s, 1),
            refused_publishes=pub.refused,
        )
    finally:
        await close_all(subs)
    assert_exactly_once_in_order(subs, expected)
    assert counts["reconnects"] > 0
    assert counts["recovered_ok"] == counts["reconnects"]
