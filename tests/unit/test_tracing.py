"""Traces in one process (app/tracing.py), with the SDK's own in-memory exporter.

What the envelope carries, which spans a publish makes, and that tracing off builds nothing: the
SDK is not imported, no envelope carries a trace, every ``span`` is one shared no-op.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import cast

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from app import tracing
from app.broker import HistoryOptions
from app.broker.memory import MemoryBroker
from app.config import Settings
from app.connection import Connection
from app.hub import Hub
from app.protocol import header, pack, unpack
from tests.support import ROOT, TEST_SECRET
from tests.unit.test_hub import Member

TRACE = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Started(SpanProcessor):
    """Counts every span the SDK starts recording (the SDK's public processor hook)."""

    def __init__(self) -> None:
        self.count = 0

    def on_start(self, span: object, parent_context: object = None) -> None:
        self.count += 1


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    found = InMemorySpanExporter()
    tracing.start("unit", "test", SimpleSpanProcessor(found))
    yield found
    tracing.stop()


async def hub_with(members: int, history: HistoryOptions | None = None) -> tuple[Hub, list[Member]]:
    broker = MemoryBroker(history)
    hub = Hub(broker)
    await broker.start(hub.dispatch, hub.channels, hub.on_reconnect)
    found = [Member(f"c{i}") for i in range(members)]
    for member in found:
        await hub.join(cast(Connection, member), "room")
    return hub, found


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_envelope_carries_a_trace_only_when_given() -> None:
    plain = unpack(pack(header("c1", 1.5), b'{"a":1}', 7, "e1"))
    assert plain.trace is None
    assert plain.offset == 7
    assert plain.exclude == "c1"
    traced = unpack(pack(header("c1", 1.5, TRACE), b'{"a":1}', 7, "e1"))
    assert traced.trace == TRACE
    assert (traced.exclude, traced.published_at, traced.offset, traced.epoch) == ("c1", 1.5, 7, "e1")
    assert traced.frame == plain.frame == b'{"a":1}'  # the frame a client gets is the same bytes
    with pytest.raises(ValueError, match="unpack"):
        unpack(b"- 1.5 x y - -\n{}")  # six fields: malformed, dropped and counted by the Hub


async def test_off_builds_nothing() -> None:
    assert not tracing.ON
    assert tracing.span("a") is tracing.span("b")  # one shared no-op: no span object at all
    hub, members = await hub_with(5, HistoryOptions(size=100))
    for n in range(20):
        await hub.publish("room", b'{"n":%d}' % n)
    stored = await hub.broker.history("room", 0)
    assert [env.trace for env in stored.entries] == [None] * 20
    assert all(len(m.frames) == 20 for m in members)


def test_off_never_imports_the_tracing_sdk() -> None:
    # (redis-py 8 imports the SDK's metrics classes by itself once the SDK is installed; its
    # metrics stay off unless an application initialises them, as this one does not.)
    code = (
        "import sys; from app.main import create_app; from app.config import Settings; "
        f"create_app(Settings(jwt_secret={TEST_SECRET!r})); "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_a_sampled_publish_is_parent_of_one_deliver_per_message(exporter: InMemorySpanExporter) -> None:
    counted = Started()
    assert tracing._provider is not None
    tracing._provider.add_span_processor(counted)
    hub, members = await hub_with(50)
    for n in range(10):
        await hub.publish("room", b'{"n":%d}' % n)
    spans = exporter.get_finished_spans()
    publishes, delivers = named(spans, "publish"), named(spans, "deliver")
    # Once per message per process, never per socket: 10 publishes to 50 members, 20 spans.
    assert len(publishes) == len(delivers) == 10
    assert counted.count == 20
    for pub, dlv in zip(publishes, delivers, strict=True):
        assert pub.kind is SpanKind.PRODUCER
        assert dlv.kind is SpanKind.CONSUMER
        assert dlv.parent is not None
        assert dlv.parent.span_id == pub.context.span_id
        assert dlv.context.trace_id == pub.context.trace_id
        assert dlv.attributes is not None
        assert dlv.attributes["switchboard.delivered"] == 50
    # Clients get the frame as published: the trace is in the envelope only.
    trace_ids = {format(s.context.trace_id, "032x") for s in publishes}
    assert not [f for m in members for f in m.frames if any(t in f for t in trace_ids)]
    assert members[0].frames[0].startswith('{"n":0,"offset":1,')


async def test_an_unsampled_publish_sends_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    found = InMemorySpanExporter()
    tracing.start("unit", "test", SimpleSpanProcessor(found))
    try:
        hub, members = await hub_with(3, HistoryOptions(size=10))
        await hub.publish("room", b'{"n":1}')
        stored = await hub.broker.history("room", 0)
    finally:
        tracing.stop()
    assert stored.entries[0].trace is None  # receivers record nothing for it
    assert found.get_finished_spans() == ()
    assert len(members[0].frames) == 1


async def test_a_malformed_trace_field_still_delivers(exporter: InMemorySpanExporter) -> None:
    hub, members = await hub_with(2)
    hub.dispatch("room", pack(header(None, None, b"00-nonsense-01"), b'{"n":1}'))
    assert [m.frames for m in members] == [['{"n":1}'], ['{"n":1}']]
    assert named(exporter.get_finished_spans(), "deliver") == []


def test_an_exporter_this_build_lacks_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValidationError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        Settings(jwt_secret=TEST_SECRET, tracing=True)
    Settings(jwt_secret=TEST_SECRET)  # off: OTEL_* are not read at all
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValidationError, match="only http/protobuf"):
        Settings(jwt_secret=TEST_SECRET, tracing=True)


def test_otel_traces_exporter_none_leaves_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.start("unit", "test") is False
    assert not tracing.ON
    assert tracing.span("a") is tracing.span("b")
