"""Traces across two instances on one Redis (issue 29): a server API publish on A, a subscriber on B.

The instances export over OTLP/HTTP to a collector this test starts (tests/otlp.py), which
decodes the protobuf requests: the spans of both processes must share one trace id, with B's
``deliver`` span a child of A's ``publish`` span, and the caller's own trace continued.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.wsproto import connected, is_pub
from tests.otlp import Collector, Span
from tests.support import API_HEADERS, AppProcess, RedisServer, running, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as found:
        yield found


def traced(name: str, tmp: Path, redis: RedisServer, collector: Collector) -> AppProcess:
    return AppProcess(
        name,
        tmp,
        {
            "SWITCHBOARD_BROKER_URL": redis.url,
            "SWITCHBOARD_TRACING": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s: the test waits on spans
        },
    )


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


def test_one_publish_is_one_trace_across_two_instances(tmp_path: Path, collector: Collector) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with running(traced("A", tmp_path, redis, collector), traced("B", tmp_path, redis, collector)) as (a, b):
            caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
            pub = asyncio.run(_publish_on_a_deliver_on_b(a, b, f"00-{caller_trace}-{caller_span}-01"))

            def whole_trace() -> list[Span]:
                spans = [s for s in collector.snapshot() if s.trace_id == caller_trace]
                names = {(s.instance, s.name) for s in spans}
                assert {("A", "POST /api/v1/publish"), ("A", "publish"), ("B", "deliver")} <= names
                return spans

            wait_until(whole_trace, 10, "the publish's spans from both instances")
            spans = whole_trace()
    finally:
        redis.stop()
    # The client saw the publication as always: no trace context in anything it is sent.
    assert set(pub) == {"op", "channel", "offset", "epoch", "data"}, pub
    assert caller_trace not in orjson.dumps(pub).decode()

    server = next(s for s in spans if s.name == "POST /api/v1/publish")
    publish = next(s for s in spans if s.name == "publish")
    deliver = next(s for s in spans if s.name == "deliver" and s.instance == "B")
    assert server.parent_id == caller_span
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
    Path(tmp_path / "trace.txt").write_text(render(spans) + "\n")
    print(render(spans))


async def _publish_on_a_deliver_on_b(a: AppProcess, b: AppProcess, traceparent: str) -> dict[str, object]:
    async with connected(b.ws("/ws")) as sub:
        await sub.ok("subscribe", channel="news")
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{a.http}/api/v1/publish",
                content=orjson.dumps({"channel": "news", "data": {"text": "hello"}}),
                headers={**API_HEADERS, "traceparent": traceparent},
            )
        assert response.status_code == 200, response.text
        return await sub.push(is_pub("news"))
