"""Centrifugo's SDKs behind the repository's nginx.conf, two instances and Redis: the instance
both SDK subscribers are on is SIGKILLed while a backend publishes through ``cent`` (Centrifugo's
server API client, through nginx too), and each subscriber ends with every message exactly once
and in order, recovered on the other instance.

centrifuge-python runs in this process, the npm ``centrifuge`` SDK in Node (tests/sdk/js/
failover.mjs). The publisher retries a failed publish (a 502 while nginx finds the victim gone,
an answer lost with the process) with the same idempotency key, as a Centrifugo backend would:
a publish that did happen is not published twice.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
from cent import AsyncClient, PublishRequest
from cent.exceptions import CentError
from centrifuge import Client

from tests.deploy.test_streams_nginx import stack  # noqa: F401 - the nginx + two instances fixture
from tests.sdk.sdk_support import JS, Events, installed, token, until
from tests.support import API_HEADERS, TEST_API_KEY, AppProcess

MESSAGES = 300
RATE = 100.0  # per second: 3 s of publishing, the kill a third of the way in
CHANNEL = "chaos:sdk"  # the default namespace keeps history


async def publish_all(proxy: str, victim: AppProcess) -> int:
    """Every message published exactly once through nginx, whatever the kill does; the retries."""
    cent = AsyncClient(f"{proxy}/api", TEST_API_KEY, timeout=3)
    retries = 0
    try:
        for n in range(MESSAGES):
            if n == MESSAGES // 3:
                victim.kill()  # SIGKILL: no drain, no close frames; the sockets just break
            request = PublishRequest(channel=CHANNEL, data={"n": n}, idempotency_key=f"msg-{n}")
            async with asyncio.timeout(20):
                while True:
                    try:
                        await cent.publish(request)
                        break
                    except CentError:
                        retries += 1
                        await asyncio.sleep(0.05)
            await asyncio.sleep(1 / RATE)
    finally:
        await cent._session.close()
    return retries


async def instance_of(http: httpx.AsyncClient, user: str) -> str:
    reply = (await http.post("/api/v1/user_connections", json={"user": user})).json()
    [connection] = reply["connections"]
    return str(connection["instance"])


async def test_both_sdks_recover_every_message_once_in_order_after_a_sigkill(
    stack: tuple[str, AppProcess, AppProcess],  # noqa: F811
) -> None:
    proxy, a, b = stack
    installed()
    ws_url = proxy.replace("http", "ws") + "/connection/websocket"
    python = Client(ws_url, token=token("py-sub"), min_reconnect_delay=0.1, max_reconnect_delay=1.0)
    seen = Events()
    sub = python.new_subscription(CHANNEL, events=seen, recoverable=True, positioned=True)
    await python.connect()
    await python.ready(5)
    await sub.subscribe()
    await sub.ready(5)
    env = {
        **os.environ,
        "SB_URL": ws_url,
        "SB_TOKEN": token("js-sub"),
        "SB_CHANNEL": CHANNEL,
        "SB_LAST": str(MESSAGES - 1),
        "SB_TIMEOUT_MS": "40000",
    }
    node = await asyncio.create_subprocess_exec(
        "node", "failover.mjs", cwd=JS, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert node.stdout is not None
        first = await asyncio.wait_for(node.stdout.readline(), 20)
        assert json.loads(first) == {"ready": True}, first
        async with httpx.AsyncClient(base_url=a.http, headers=API_HEADERS, timeout=5) as http:
            serving = {await instance_of(http, "py-sub"), await instance_of(http, "js-sub")}
        assert len(serving) == 1, serving  # nginx hashes the client address: one instance
        victim, survivor = (a, b) if serving == {a.name} else (b, a)
        retries = await publish_all(proxy, victim)
        await until(lambda: {"n": MESSAGES - 1} in seen.data, "the Python SDK's last message", timeout=30)
        out, err = await asyncio.wait_for(node.communicate(), 45)
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
        await python.disconnect()
    assert node.returncode == 0, err.decode()[-4000:]
    js: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    for who, numbers, offsets in (("python", seen.data, seen.offsets), ("js", js["data"], js["offsets"])):
        data = [d["n"] if isinstance(d, dict) else d for d in numbers]
        assert data == list(range(MESSAGES)), (who, len(data), retries)
        assert offsets == list(range(1, MESSAGES + 1)), who  # every offset once: no publish twice
    assert [(s.was_recovering, s.recovered) for s in seen.subscribed][-1] == (True, True)
    assert js["subscribed"][-1] == {"wasRecovering": True, "recovered": True}, js["subscribed"]
    assert js["connecting"] >= 2  # it did lose its connection, and came back
    async with httpx.AsyncClient(base_url=survivor.http, headers=API_HEADERS, timeout=5) as http:
        assert (await http.post("/api/v1/history", json={"channel": CHANNEL, "limit": 1})).json()["offset"] == MESSAGES
