"""Per-channel recovery on /ws after the client's instance is SIGKILLed: each channel on its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import start_cluster
from tests.integration.wsproto import Proto, is_pub
from tests.support import AppProcess, RedisServer, expect_close, running, ws_connect

CONFIG = """
[namespaces.long]
history_size = 100
[namespaces.short]
history_size = 3
"""


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, AppProcess, AppProcess]]:
    config = tmp_path / "switchboard.toml"
    config.write_text(CONFIG)
    redis_server, a, b = start_cluster(tmp_path, {"SWITCHBOARD_CONFIG": str(config)})
    try:
        with running(a, b):
            yield redis_server, a, b
    finally:
        redis_server.stop()


async def test_each_channel_resumes_from_its_own_offset_after_a_kill(
    pair: tuple[RedisServer, AppProcess, AppProcess],
) -> None:
    _, a, b = pair
    channels = {"long:one": 0, "long:two": 0, "short:three": 0}
    positions: dict[str, tuple[int, str]] = {}
    async with ws_connect(a.ws("/ws")) as ws, ws_connect(b.ws("/ws")) as pub_ws:
        client, publisher = Proto(ws), Proto(pub_ws)
        await client.ok("connect")
        await publisher.ok("connect")
        for channel in channels:
            await client.ok("subscribe", channel=channel)
            await publisher.ok("subscribe", channel=channel)
        # Different amounts per channel, so each position is its own.
        for i, channel in enumerate(channels):
            for n in range(i + 1):
                await publisher.ok("publish", channel=channel, data=f"before-{n}")
        for i, channel in enumerate(channels):
            last = (await client.pubs(channel, i + 1))[-1]
            positions[channel] = (last["offset"], last["epoch"])
        a.kill()
        await expect_close(ws, timeout=5)
        # Published while the client is gone: 5 per channel, more than `short` keeps.
        for channel in channels:
            for n in range(5):
                await publisher.ok("publish", channel=channel, data=f"missed-{n}")
    async with ws_connect(b.ws("/ws")) as ws:
        client = Proto(ws)
        await client.ok("connect")
        for channel in ("long:one", "long:two"):
            offset, epoch = positions[channel]
            reply = await client.ok("subscribe", channel=channel, since=offset, epoch=epoch)
            assert (reply["recovered"], reply["count"]) == (True, 5)
            assert reply["offset"] == offset + 5
            # The missed publications were pushed before the reply, in order, each once.
            missed = [f for f in client.pushes if is_pub(channel)(f)]
            assert [p["data"] for p in missed] == [f"missed-{n}" for n in range(5)]
            assert [p["offset"] for p in missed] == list(range(offset + 1, offset + 6))
        offset, epoch = positions["short:three"]
        reply = await client.ok("subscribe", channel="short:three", since=offset, epoch=epoch)
        assert reply["recovered"] is False
        assert reply["reason"] == "history too short"
        assert reply["offset"] == offset + 5  # where the client now stands
        assert [f for f in client.pushes if is_pub("short:three")(f)] == []
        print(f"recovered long:one and long:two from {positions}; short:three told 'history too short'")
