"""switchboard_client.api against real instances: typed calls, errors, and a publish retried through a Redis outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchboard_client.api import APIError, SwitchboardAPI, SwitchboardAPISync
from tests.integration.conftest import start_cluster
from tests.integration.wsproto import connected, is_pub
from tests.support import TEST_API_KEY, running


async def test_the_async_client_publishes_once_through_a_redis_outage(tmp_path: Path) -> None:
    redis_server, a, b = start_cluster(tmp_path)
    try:
        with running(a, b):
            async with SwitchboardAPI(a.http, TEST_API_KEY) as api, connected(b.ws("/ws")) as reader:
                await reader.ok("subscribe", channel="orders")
                first = await api.publish("orders", {"n": 1})
                assert first["offset"] == 1
                assert (await api.info())["instances"]
                redis_server.stop()
                # Refused with 503 while Redis is down; retried with the same key until it is back.
                publishing = asyncio.create_task(api.publish("orders", {"n": 2}))
                await asyncio.sleep(0.3)
                assert not publishing.done()
                redis_server.start()
                second = await asyncio.wait_for(publishing, 15)
                assert second["offset"] >= 1
                pubs = await reader.pubs("orders", 2, timeout=10)
                assert [p["data"] for p in pubs] == [{"n": 1}, {"n": 2}]
                assert [f for f in await reader.quiet(0.5) if is_pub("orders")(f)] == []
                with pytest.raises(APIError) as bad:
                    await api.publish("bad channel", 1)
                assert (bad.value.status, bad.value.code) == (422, 107)
    finally:
        redis_server.stop()


def test_the_sync_client_and_its_errors(tmp_path: Path) -> None:
    redis_server, a, _ = start_cluster(tmp_path)
    try:
        with running(a), SwitchboardAPISync(a.http, TEST_API_KEY) as api:
            assert api.publish("news", {"headline": "hi"}, idempotency_key="k1") == api.publish(
                "news", {"headline": "hi"}, idempotency_key="k1"
            )
            assert api.history("news")["publications"][0]["data"] == {"headline": "hi"}
            assert api.presence_stats("news") == {"clients": 0, "users": 0}
            assert api.send("nobody", 1) == {}
            with SwitchboardAPISync(a.http, "wrong-key-0123456789-abcdefghijklmnopqrstuvwxyz") as wrong:
                with pytest.raises(APIError) as refused:
                    wrong.info()
                assert (refused.value.status, refused.value.code) == (401, 101)
    finally:
        redis_server.stop()
