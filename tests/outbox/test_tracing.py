"""The outbox relay's spans (issue 29): a committed row is one trace, from the claim to delivery.

Instance A relays, instance B has the subscriber; both export over OTLP/HTTP to the collector of
tests/otlp.py. One transaction commits a publishable row and a poison one in the same lane (so
one claim takes both): A's ``outbox relay`` span counts them, A's ``publish`` is its child, and
B's ``deliver`` is the publish's child, all in one trace. The relay polled an empty table before
that (seen in pg_stat_activity), and those idle claims made no span at all.

In one process, on the same PostgreSQL: a claim a broker error stops is a failed span that says
how many rows are left for the next claim, and an empty claim starts no span, not even unsampled.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from app import tracing
from app.broker.base import BrokerUnavailable
from app.outbox.claim import Row, claim
from switchboard_client.outbox import publish
from tests.otlp import Collector, Span
from tests.outbox.harness import Subscriber, instance, pending
from tests.outbox.postgres import PASSWORD
from tests.support import RedisServer, running, wait_until
from tests.unit.test_tracing import Started

pytestmark = pytest.mark.timeout(60)

ROW = {"text": "row-data-never-in-a-span"}

# The claim connection's last state change; the listener (idle since its LISTEN) and this
# test's own connection are left out.
LAST_CLAIM = """
SELECT max(state_change) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query NOT ILIKE 'LISTEN%%'
"""


def wait_for_an_idle_claim(url: str) -> None:
    """Returns once the relay has run a claim (a transaction on its claim connection) after now."""
    with psycopg.connect(url, autocommit=True) as conn:
        now = conn.execute("SELECT clock_timestamp()").fetchone()

        def claimed() -> bool:
            found = conn.execute(LAST_CLAIM).fetchone()
            return found is not None and found[0] is not None and now is not None and found[0] > now[0]

        wait_until(claimed, 10, "a claim on the empty table")


async def relay_one(url: str, subscriber_url: str) -> None:
    async with Subscriber(subscriber_url, ["news:traced"]) as sub:
        await asyncio.to_thread(wait_for_an_idle_claim, url)
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            await publish(conn, "news:traced", ROW, partition=1)
            await publish(conn, "nosuch:x", ROW, partition=1)  # no such namespace: dead-lettered
        await sub.wait_for(1, 10)
        assert [data for _, data in sub.got["news:traced"]] == [ROW]


def one_trace(collector: Collector) -> list[Span]:
    """The relay span's trace, once its publish and B's deliver have arrived."""

    def whole() -> list[Span]:
        relay = next(s for s in collector.snapshot() if s.attributes.get("switchboard.outbox.claimed"))
        spans = [s for s in collector.snapshot() if s.trace_id == relay.trace_id]
        assert {("A", "outbox relay"), ("A", "publish"), ("B", "deliver")} <= {(s.instance, s.name) for s in spans}
        return spans

    wait_until(whole, 10, "the relay's trace")
    return whole()


def test_a_relayed_row_is_one_trace_from_the_claim_to_the_receiving_instance(tmp_path: Path, outbox_url: str) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with Collector() as collector:
            traced = {
                "SWITCHBOARD_TRACING": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s: the test waits on spans
            }
            a = instance("A", tmp_path, redis.url, outbox_url, **traced)
            b = instance("B", tmp_path, redis.url, None, **traced)
            with running(a, b):
                asyncio.run(relay_one(outbox_url, b.ws("/ws")))
                spans = one_trace(collector)
                assert pending(outbox_url) == 0
                everything = collector.snapshot()
    finally:
        redis.stop()

    relay = next(s for s in spans if s.name == "outbox relay")
    publishes = [s for s in spans if s.name == "publish"]
    deliver = next(s for s in spans if s.name == "deliver" and s.instance == "B")
    assert relay.parent_id == ""  # a trace of its own: the row's writer sent no context
    assert relay.kind == "consumer"
    assert relay.instance == "A"
    assert relay.attributes == {
        "db.system.name": "postgresql",
        "switchboard.outbox.lanes": 1,
        "switchboard.outbox.claimed": 2,
        "switchboard.outbox.delivered": 1,
        "switchboard.outbox.dead_lettered": 1,
    }
    # The dead row never reached the hub: one publish, the relay's child, and B's deliver its child.
    assert len(publishes) == 1, publishes
    assert publishes[0].parent_id == relay.span_id
    assert publishes[0].attributes["messaging.destination.name"] == "news:traced"
    assert deliver.parent_id == publishes[0].span_id
    assert deliver.attributes["switchboard.delivered"] == 1
    # The idle claims before the row made no span: A sent this trace and nothing else.
    assert sorted(s.name for s in everything if s.instance == "A") == ["outbox relay", "publish"]
    values = " ".join(str(v) for s in everything for v in s.attributes.values())
    assert PASSWORD not in values  # never the DSN
    assert "postgresql://" not in values
    assert ROW["text"] not in values  # nor a row's data


async def test_a_claim_stopped_by_the_broker_is_a_failed_span_and_an_empty_one_is_none(
    outbox_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    exporter, started = InMemorySpanExporter(), Started()
    tracing.start("unit", "test", SimpleSpanProcessor(exporter))
    assert tracing._provider is not None
    tracing._provider.add_span_processor(started)
    inside: list[str] = []

    async def failing(row: Row) -> object:
        current = trace.get_current_span()
        inside.append(getattr(current, "name", ""))
        if len(inside) == 2:
            raise BrokerUnavailable("redis at 10.9.8.7:6379 is down")
        return None

    try:
        async with await psycopg.AsyncConnection.connect(outbox_url, autocommit=True) as conn:
            empty = await claim(conn, failing, 10)
            assert (empty.claimed, started.count) == (0, 0)  # no span object at all
            async with conn.transaction():
                for n in range(3):
                    await publish(conn, "news:r", {"n": n}, partition=1)
            outcome = await claim(conn, failing, 10)
    finally:
        tracing.stop()
    assert (outcome.claimed, len(outcome.delivered), isinstance(outcome.retry, BrokerUnavailable)) == (3, 1, True)
    assert inside == ["outbox relay", "outbox relay"]  # each publish ran inside the claim's span
    (relay,) = exporter.get_finished_spans()
    assert relay.name == "outbox relay"
    assert relay.status.status_code is StatusCode.ERROR
    assert dict(relay.attributes or {}) == {
        "db.system.name": "postgresql",
        "switchboard.outbox.lanes": 1,
        "switchboard.outbox.claimed": 3,
        "switchboard.outbox.delivered": 1,
        "switchboard.outbox.dead_lettered": 0,
        "switchboard.outbox.retried": 2,
        "error.type": "BrokerUnavailable",  # the type only: the message names a host
    }
    assert pending(outbox_url) == 2  # left for the next claim
