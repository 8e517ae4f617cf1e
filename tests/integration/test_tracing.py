"""Traces across two instances on one Redis (issue 29): a server API publish on A, a subscriber on B.

The instances export over OTLP/HTTP to a collector this test starts (tests/otlp.py), which
decodes the protobuf requests: the spans of both processes must share one trace id, with B's
``deliver`` span a child of A's ``publish`` span, and the caller's own trace continued.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from app.tracing import STOP_TIMEOUT
from tests.integration.backends import Backend, backend
from tests.integration.wsproto import Proto, connected, is_pub
from tests.otlp import Collector, Span
from tests.support import API_HEADERS, AppProcess, RedisServer, free_port, running, wait_until, ws_connect

pytestmark = pytest.mark.timeout(60)


@dataclass
class Pair:
    """Two traced instances on one Redis; A asks a real backend (connect proxy) and loads a hook."""

    collector: Collector
    backend: Backend
    a: AppProcess
    b: AppProcess

    def trace(self, trace_id: str, *needed: tuple[str, str]) -> list[Span]:
        """The spans of one trace, once every ``(instance, name)`` in ``needed`` has arrived."""

        def whole() -> list[Span]:
            spans = [s for s in self.collector.snapshot() if s.trace_id == trace_id]
            assert set(needed) <= {(s.instance, s.name) for s in spans}
            return spans

        wait_until(whole, 10, f"spans {needed}")
        return whole()

    def first(self, name: str, instance: str = "A") -> Span:
        """The first span of that name from that instance, once it has arrived."""

        def found() -> Span:
            return next(s for s in self.collector.snapshot() if s.name == name and s.instance == instance)

        wait_until(found, 10, f"a {name!r} span from {instance}")
        return found()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("tracing")
    redis = RedisServer(tmp / "redis").start()
    try:
        with Collector() as collector, backend("tests.integration.proxy_backend:app", tmp) as server:

            def traced(name: str, **env: str) -> AppProcess:
                otel = {
                    "SWITCHBOARD_BROKER_URL": redis.url,
                    "SWITCHBOARD_TRACING": "true",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                    "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s: the test waits on spans
                }
                return AppProcess(name, tmp, {**otel, **env})

            a = traced(
                "A",
                SWITCHBOARD_CONNECT_PROXY_URL=f"{server.url}/connect",
                SWITCHBOARD_HOOKS="tests.integration.proxy_hooks:hooks",
            )
            b = traced("B")
            with running(a, b):
                yield Pair(collector, server, a, b)
    finally:
        redis.stop()


def render(spans: list[Span]) -> str:
    """The trace as an indented tree (what docs/observability.md shows), children by start time."""
    by_parent: dict[str, list[Span]] = {}
    for span in spans:
        by_parent.setdefault(span.parent_id, []).append(span)
    ids = {span.span_id for span in spans}
    start = min(span.start_ns for span in spans)
    lines: list[str] = []

    def walk(span: Span, depth: int) -> None:
        offset = (span.start_ns - start) / 1e6
        took = (span.end_ns - span.start_ns) / 1e6
        where = f"[{span.instance}]"
        lines.append(f"{'  ' * depth}{span.name} ({span.kind}) {where:<6} +{offset:6.2f} ms  {took:6.2f} ms")
        for child in sorted(by_parent.get(span.span_id, []), key=lambda s: s.start_ns):
            walk(child, depth + 1)

    for root in sorted((s for s in spans if s.parent_id not in ids), key=lambda s: s.start_ns):
        walk(root, 0)
    return "\n".join(lines)


def test_a_server_api_publish_is_one_trace_across_two_instances(pair: Pair) -> None:
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    pub = asyncio.run(_publish_on_a_deliver_on_b(pair, f"00-{caller_trace}-{caller_span}-01"))
    needed = ("A", "POST /api/v1/publish"), ("A", "publish"), ("B", "deliver")
    spans = pair.trace(caller_trace, *needed)
    # The client saw the publication as always: no trace context in anything it is sent.
    assert set(pub) == {"op", "channel", "offset", "epoch", "data"}, pub
    assert caller_trace not in orjson.dumps(pub).decode()

    server = next(s for s in spans if s.name == "POST /api/v1/publish")
    publish = next(s for s in spans if s.name == "publish")
    deliver = next(s for s in spans if s.name == "deliver" and s.instance == "B")
    assert server.parent_id == caller_span  # the caller's trace, continued
    assert server.kind == "server"
    assert server.attributes["http.response.status_code"] == 200
    assert publish.parent_id == server.span_id
    assert publish.kind == "producer"
    assert publish.attributes["messaging.destination.name"] == "news"
    assert deliver.parent_id == publish.span_id
    assert deliver.kind == "consumer"
    assert deliver.attributes["switchboard.delivered"] == 1
    assert {s.service for s in spans} == {"switchboard"}
    # A has no member of the channel: it delivers nothing, so it records no deliver span.
    assert not [s for s in spans if s.name == "deliver" and s.instance == "A"]
    print(render(spans))  # what docs/observability.md shows


async def _publish_on_a_deliver_on_b(pair: Pair, traceparent: str) -> dict[str, object]:
    async with connected(pair.b.ws("/ws")) as sub:
        await sub.ok("subscribe", channel="news")
        async with httpx.AsyncClient(timeout=10) as http:
            for headers in ({}, {"traceparent": traceparent}):  # a warm-up, then the traced one
                response = await http.post(
                    f"{pair.a.http}/api/v1/publish",
                    content=orjson.dumps({"channel": "news", "data": {"text": "hello"}}),
                    headers={**API_HEADERS, **headers},
                )
                assert response.status_code == 200, response.text
                pub = await sub.push(is_pub("news"))
        return pub


async def test_a_ws_client_s_handshake_connect_proxy_hook_and_publish(pair: Pair) -> None:
    caller_trace = secrets.token_hex(16)
    handshake = {"traceparent": f"00-{caller_trace}-{secrets.token_hex(8)}-01"}
    async with connected(pair.b.ws("/ws")) as sub:
        await sub.ok("subscribe", channel="chat:room")
        # No token: A's connect proxy asks the backend who this is.
        async with ws_connect(pair.a.ws("/ws"), additional_headers=handshake) as ws:
            client = Proto(ws)
            await client.ok("connect", data={"user": "ann"})
            assert (await client.ok("rpc", method="hook.echo", data=1))["data"]["echo"] == 1
            await client.ok("subscribe", channel="chat:room")
            await client.ok("publish", channel="chat:room", data={"text": "hi"})
        await sub.push(is_pub("chat:room"))
    handshake_spans = pair.trace(caller_trace, ("A", "ws handshake"))
    assert handshake_spans[0].attributes["switchboard.accepted"] is True
    # connect, each command and each publish start traces of their own (a socket keeps no span).
    connect, proxy = pair.first("ws connect"), pair.first("proxy connect")
    assert proxy.parent_id == connect.span_id
    assert proxy.kind == "client"
    # The backend was sent the proxy span's context: its own trace may continue ours.
    sent = httpx.get(f"{pair.backend.url}/stats", timeout=5).json()["last"]["connect"]["headers"]
    assert sent["traceparent"].split("-")[1:3] == [proxy.trace_id, proxy.span_id]
    rpc = pair.first("ws rpc")
    hook = pair.trace(rpc.trace_id, ("A", "hook on_rpc"))
    assert next(s for s in hook if s.name == "hook on_rpc").parent_id == rpc.span_id
    subscribe = pair.first("ws subscribe")
    assert subscribe.attributes["messaging.destination.name"] == "chat:room"
    command = pair.first("ws publish")
    found = pair.trace(command.trace_id, ("A", "ws publish"), ("A", "publish"), ("B", "deliver"))
    publish = next(s for s in found if s.name == "publish")
    assert publish.parent_id == command.span_id
    assert next(s for s in found if s.name == "deliver").parent_id == publish.span_id


def test_a_dead_collector_delays_shutdown_by_the_flush_bound_only(tmp_path: Path) -> None:
    """The exporter retries a dead collector with backoff for up to 10 s (7 s here, before the
    bound); a SIGTERM waits at most STOP_TIMEOUT for the last spans, then drops them."""
    env = {"SWITCHBOARD_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    with running(AppProcess("dead-collector", tmp_path, env)) as (app,):
        response = httpx.post(f"{app.http}/api/v1/publish", json={"channel": "news", "data": 1}, headers=API_HEADERS)
        assert response.status_code == 200
        started = time.monotonic()
        app.stop()
        took = time.monotonic() - started
    assert took < STOP_TIMEOUT + 3, f"shutdown took {took:.1f} s"
