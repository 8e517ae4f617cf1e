"""The unchanged nginx.conf in front of real gunicorn instances and redis, in a private namespace.

Run by test_nginx.py inside ``unshare -m -n`` (tests/netns.py builds the stack).
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
from collections.abc import Iterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.conftest import token
from tests.netns import IN_NAMESPACE, Stack, instance, start_nginx, wait_presence, ws
from tests.support import ROOT, recv_json, send_json, wait_until

pytestmark = pytest.mark.skipif(not IN_NAMESPACE, reason="runs inside a private namespace via test_nginx.py")

DRAIN_SECONDS = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("netns"), {"SWITCHBOARD_DRAIN_SECONDS": str(DRAIN_SECONDS)})
    try:
        yield stack.start()
    finally:
        stack.stop()


async def source_on(target: str, exclude: frozenset[str] | set[str] = frozenset()) -> str:
    """A client source address that nginx's hash sends to ``target``."""
    for last in range(10, 250):
        source = f"127.0.0.{last}"
        if source in exclude:
            continue
        async with ws("/ws/echo", source) as sock:
            if instance(sock) == target:
                return source
    raise AssertionError(f"no source address hashes to {target}")


async def test_requests_through_nginx_are_sticky_per_client_address(stack: Stack) -> None:
    seen: dict[str, set[str]] = {}
    for last in range(10, 22):
        source = f"127.0.0.{last}"
        for _ in range(4):
            async with ws("/ws/echo", source) as sock:
                seen.setdefault(source, set()).add(instance(sock))
    assert all(len(instances) == 1 for instances in seen.values()), seen
    # Hashing the full address spreads neighbours over instances (ip_hash would not: same /24).
    assert len({next(iter(i)) for i in seen.values()}) >= 2, seen


async def test_chat_across_instances_through_nginx(stack: Stack) -> None:
    source_a, source_b = await source_on("app1"), await source_on("app2")
    async with ws("/ws/chat?username=ann", source_a) as ann:
        assert (await recv_json(ann))["users_online"] == 1
        async with ws("/ws/chat?username=bob", source_b) as bob:
            assert (instance(ann), instance(bob)) == ("app1", "app2")
            assert (await recv_json(bob))["users_online"] == 2
            assert (await recv_json(ann))["message"] == "bob joined the chat"
            await send_json(bob, {"content": "through nginx"})
            message = await recv_json(ann)
            assert (message["from"], message["content"]) == ("bob", "through nginx")


async def test_tokens_stay_out_of_the_access_log(stack: Stack) -> None:
    secret_token = token("nginx-log-user")
    async with ws(f"/ws/secure?token={secret_token}", "127.0.0.30") as sock:
        assert (await recv_json(sock))["type"] == "auth_success"
    wait_until(lambda: "/ws/secure" in stack.access_log, 5, "the access log line")
    assert re.search(r'"GET /ws/secure HTTP/1.1" 101 ', stack.access_log)
    assert secret_token not in stack.access_log
    assert "token=" not in stack.access_log


async def test_negative_control_without_upgrade_headers(stack: Stack) -> None:
    """The same config minus the Upgrade/Connection headers fails the handshake: the headers matter."""
    conf = (ROOT / "nginx.conf").read_text()
    # Only the WebSocket location's pair (the streaming location's `Connection ""` stays).
    stripped = re.sub(
        r"^\s*proxy_set_header (Upgrade \$http_upgrade|Connection \$connection_upgrade);\n",
        "",
        conf,
        flags=re.MULTILINE,
    )
    assert stripped.count("proxy_set_header") == conf.count("proxy_set_header") - 2
    copy = stack.tmp / "no-upgrade.conf"
    copy.write_text(stripped.replace("listen 8080;", "listen 8081;"))
    proc = start_nginx(copy, stack.tmp, "no-upgrade")
    try:
        wait_until(lambda: httpx.get("http://127.0.0.1:8081/healthz").status_code == 200, 10, "second nginx")
        with pytest.raises(InvalidStatus) as refused:
            await connect("ws://127.0.0.1:8081/ws/echo", open_timeout=5)
        assert refused.value.response.status_code == 426
        async with ws("/ws/echo", "127.0.0.31") as sock:  # the real config upgrades fine
            await sock.send("ok")
            assert await sock.recv() == "Echo: ok"
    finally:
        proc.terminate()
        proc.wait(10)


class Reconnecting:
    """A minimal reconnecting client: on 1012 it comes back through nginx after a jittered delay."""

    def __init__(self, source: str, room: str) -> None:
        self.source = source
        self.room = room
        self.instances: list[str] = []
        self.codes: list[int | None] = []
        self.sock: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.reconnected = asyncio.Event()
        self.frames: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            self.sock = await ws(f"/ws/room/{self.room}", self.source)
            self.instances.append(instance(self.sock))
            self.connected.set()
            if len(self.instances) > 1:
                self.reconnected.set()
            try:
                async for raw in self.sock:
                    self.frames.put_nowait(orjson.loads(raw))
            except ConnectionClosed:
                pass
            rcvd = self.sock.protocol.close_rcvd
            self.codes.append(rcvd.code if rcvd else None)
            if self.codes[-1] != 1012:
                return
            await asyncio.sleep(random.uniform(0, 0.3))


async def test_drain_moves_clients_to_other_instances_without_errors(stack: Stack) -> None:
    """Runs last: it stops app1 (gunicorn, 2 workers) with SIGTERM."""
    sources: list[str] = []
    taken: set[str] = set()
    for _ in range(4):
        source = await source_on("app1", taken)
        taken.add(source)
        sources.append(source)
    clients = [Reconnecting(source, "drain") for source in sources]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 10)
    assert {c.instances[0] for c in clients} == {"app1"}

    stack.apps["app1"].send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*(c.reconnected.wait() for c in clients)), DRAIN_SECONDS + 10)
    for c in clients:
        assert c.codes[0] == 1012
        assert c.instances[1] in {"app2", "app3"}
    # The reconnected clients talk to each other again, once all four have re-joined the room.
    await wait_presence("room:drain", len(clients))
    assert clients[0].sock is not None
    await send_json(clients[0].sock, {"content": "back"})
    for c in clients[1:]:
        async with asyncio.timeout(5):
            while (frame := await c.frames.get()).get("type") != "message":
                pass
        assert frame["content"] == "back"
    stack.apps["app1"].wait(DRAIN_SECONDS + 20)
    for task in tasks:
        task.cancel()
    # Clients never saw the drain as an error: no 5xx reached them, and nginx logged no error.
    statuses = re.findall(r'" (\d{3}) \d+ ', stack.access_log)
    assert statuses
    assert not [s for s in statuses if s.startswith("5")], statuses
    assert "[error]" not in stack.error_log, stack.error_log
