"""Prometheus metrics, single-process or gunicorn multiprocess.

prometheus-client chooses multiprocess storage when PROMETHEUS_MULTIPROC_DIR is set at import;
gunicorn.conf.py sets it before any worker imports this module. Gauges sum live processes.
Labels are small fixed sets: never a raw channel or user name.

Hot-path rule: increment once per broadcast (``inc(n)``), never once per socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

log = logging.getLogger("switchboard.metrics")

# gunicorn.conf.py empties and creates this directory; `python -m app` in the image (whose ENV names
# it) has nobody else to create it, and every metric update would fail on the missing file.
if _MULTIPROC_DIR := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

CONNECTIONS = Gauge("switchboard_connections", "Open WebSockets and streams", ["endpoint"], multiprocess_mode="livesum")
CONNECTS = Counter("switchboard_connects", "Connection attempts by result", ["result"])
for _result in ("accepted", "refused_draining", "refused_full", "refused_rate", "refused_user_limit"):
    CONNECTS.labels(_result)  # exported from the start, so dashboards show zeros
DISCONNECTS = Counter("switchboard_disconnects", "Disconnects by close code", ["code"])
# Close codes a client may choose freely (RFC 6455 7.4.2): one series per range, not per code.
_CLIENT_CODE_RANGES = ((3000, 3999, "3xxx"), (4000, 4999, "4xxx"))


def close_code_label(code: int, known: frozenset[int]) -> str:
    """A close code as a metrics label: the server's own codes and RFC 6455's by number; any other
    code a client picked, bucketed, so that no client can mint new series."""
    if code in known or 1000 <= code <= 1015:
        return str(code)
    for low, high, label in _CLIENT_CODE_RANGES:
        if low <= code <= high:
            return label
    return "other"


MESSAGES_RECEIVED = Counter("switchboard_messages_received", "Client frames received", ["endpoint"])
MESSAGES_DELIVERED = Counter("switchboard_messages_delivered", "Frames queued to local sockets by broadcasts")
BROADCASTS = Counter("switchboard_broadcasts", "Broadcasts dispatched to local sockets")
FANOUT_SECONDS = Histogram(
    "switchboard_broadcast_fanout_seconds",
    "Time to hand one broadcast to every local member",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
PUBLISH_TO_DELIVERY = Histogram(
    "switchboard_publish_to_delivery_seconds",
    "From the publisher's envelope timestamp to local dispatch",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SLOW_CONSUMERS = Counter(
    "switchboard_slow_consumer_disconnects", "Connections closed because their send queue was full"
)
RATE_LIMITED = Counter("switchboard_rate_limited", "Client frames refused by the rate limiter")
# Per-connection budgets (app/budgets.py): which one held a client back. Labels are fixed here.
BUDGET_LIMITED = Counter(
    "switchboard_budget_limited",
    "Times a per-connection budget held a client back: a history refused or a replay paced, a join/leave not pushed",
    ["budget"],
)
HISTORY_REFUSED = BUDGET_LIMITED.labels("history_refused")
HISTORY_PACED = BUDGET_LIMITED.labels("replay_paced")
JOIN_LEAVE_SKIPPED = BUDGET_LIMITED.labels("join_leave")
AUTH_FAILURES = Counter("switchboard_auth_failures", "Authentication failures by reason", ["reason"])
PUBLISH_FAILURES = Counter("switchboard_publish_failures", "Publishes refused because the broker was unavailable")
RECOVERIES = Counter(
    "switchboard_recoveries",
    "Recoveries from channel history: scope is client (a resume) or channel (after a feed gap)",
    ["scope", "result"],
)
for _scope in ("client", "channel"):
    for _result in ("ok", "lost"):
        RECOVERIES.labels(_scope, _result)  # exported from the start, so dashboards show zeros
HOOK_FAILURES = Counter(
    "switchboard_hook_failures", "Permission hook calls that raised or timed out (the request was refused)", ["hook"]
)
HOOK_OVERRUNS = Counter(
    "switchboard_hook_overruns",
    "Permission hook calls still running at SWITCHBOARD_HOOK_TIMEOUT (refused then; any later verdict ignored)",
    ["hook"],
)
PRESENCE_EXPIRED = Counter(
    "switchboard_presence_expired", "Members of dead instances found expired and announced as leaving"
)
PROTOCOL_ERRORS = Counter(
    "switchboard_protocol_errors", "WebSocket frames a client got wrong (invalid UTF-8), each closed 1007", ["kind"]
)
PROTOCOL_ERRORS.labels("client_frame")
COMMAND_ERRORS = Counter(
    "switchboard_command_errors", "/ws commands answered with an error, by protocol error code", ["code"]
)
BROKER_UP = Gauge("switchboard_broker_up", "1 while the broker connection is up", multiprocess_mode="livemin")
BROKER_RECONNECTS = Counter("switchboard_broker_reconnects", "Broker connections lost and retried")
LISTENER_ERRORS = Counter("switchboard_listener_errors", "Errors caught in background loops")
CHANNELS = Gauge("switchboard_channels", "Channels with local members", multiprocess_mode="livesum")
SEND_QUEUE_DEPTH = Histogram(
    "switchboard_send_queue_depth",
    "Per-connection send-queue depth seen at each enqueue that found a backlog",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
READY = Gauge(
    "switchboard_ready", "1 while /readyz would answer 200 (broker up, not draining)", multiprocess_mode="livemin"
)
# prometheus-client's process collector does not work in multiprocess mode: sample our own.
PROCESS_CPU = Counter("switchboard_process_cpu_seconds", "User and system CPU time of the worker processes")
PROCESS_RSS = Gauge(
    "switchboard_process_resident_memory_bytes", "Resident memory of the worker processes", multiprocess_mode="livesum"
)
# Proxies to the backend (app/proxy.py): both labels from fixed sets, exported from the start.
PROXY_KINDS = ("connect", "refresh", "subscribe", "publish", "rpc")
PROXY_RESULTS = ("ok", "error", "disconnect", "timeout", "busy", "status", "malformed", "unreachable")
PROXY_CALLS = Counter(
    "switchboard_proxy_calls", "Calls to the backend's proxy endpoints by kind and result", ["kind", "result"]
)
PROXY_SECONDS = Histogram(
    "switchboard_proxy_call_seconds",
    "Time of one call to the backend (waiting for a slot included), by kind",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
for _kind in PROXY_KINDS:
    PROXY_SECONDS.labels(_kind)
    for _result in PROXY_RESULTS:
        PROXY_CALLS.labels(_kind, _result)
# A gauge, not an Info: Info does not work in multiprocess mode.
BUILD_INFO = Gauge(
    "switchboard_build_info",
    "Always 1; labels carry the version",
    ["version", "python"],
    multiprocess_mode="max",
)


class BatchedCounter:
    """A counter for the hot path: ``inc`` adds to a plain int, ``flush`` hands it over.

    In multiprocess mode each prometheus-client update writes an mmap'd file under a lock (about
    1 us); per broadcast that more than doubled a small room's dispatch time. Batched, the cost is
    an integer add, and Prometheus sees the values at most FLUSH_SECONDS late.
    """

    __slots__ = ("_target", "pending")

    def __init__(self, target: Counter) -> None:
        self._target = target
        self.pending = 0.0
        _batched.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self._target.inc(amount)


class BatchedHistogram:
    """A histogram for the hot path; ``observe`` costs a bisect and two adds."""

    __slots__ = ("_bounds", "_counts", "_sum", "_target")

    def __init__(self, target: Histogram) -> None:
        self._target = target
        self._bounds: list[float] = list(target._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        _batched.append(self)

    def observe(self, amount: float) -> None:
        # prometheus-client's rule: the first bucket whose upper bound is >= amount.
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        counts, total = self._counts, self._sum
        if not any(counts):
            return
        self._counts, self._sum = [0] * len(self._bounds), 0.0
        # prometheus-client has no bulk observe; its per-bucket values are non-cumulative counters.
        for bucket, count in zip(self._target._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self._target._sum.inc(total)


_batched: list[BatchedCounter | BatchedHistogram] = []


def flush() -> None:
    for metric in _batched:
        metric.flush()


# The broadcast path's metrics, batched (see BatchedCounter).
HOT_BROADCASTS = BatchedCounter(BROADCASTS)
HOT_DELIVERED = BatchedCounter(MESSAGES_DELIVERED)
HOT_FANOUT = BatchedHistogram(FANOUT_SECONDS)
HOT_PUBLISH_TO_DELIVERY = BatchedHistogram(PUBLISH_TO_DELIVERY)
HOT_QUEUE_DEPTH = BatchedHistogram(SEND_QUEUE_DEPTH)
_received: dict[str, BatchedCounter] = {}


def received_counter(endpoint: str) -> BatchedCounter:
    """The per-endpoint received counter, batched; one per endpoint, shared by its connections."""
    if endpoint not in _received:
        _received[endpoint] = BatchedCounter(MESSAGES_RECEIVED.labels(endpoint))
    return _received[endpoint]


FLUSH_SECONDS = 1.0
SAMPLE_SECONDS = 5.0
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class Sampler:
    """Refreshes the gauges that describe this process; the app runs ``run()`` as a task."""

    def __init__(self, ready: Callable[[], bool], broker_up: Callable[[], bool]) -> None:
        self._ready = ready
        self._broker_up = broker_up
        self._cpu = 0.0

    def sample(self) -> None:
        READY.set(1 if self._ready() else 0)
        BROKER_UP.set(1 if self._broker_up() else 0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        PROCESS_CPU.inc(max(0.0, cpu - self._cpu))
        self._cpu = cpu
        with open("/proc/self/statm") as statm:
            PROCESS_RSS.set(int(statm.read().split()[1]) * _PAGE_SIZE)

    async def run(self) -> None:
        ticks = 0
        try:
            while True:
                try:
                    flush()
                    if ticks % round(SAMPLE_SECONDS / FLUSH_SECONDS) == 0:
                        self.sample()
                except Exception:
                    LISTENER_ERRORS.inc()
                    log.exception("metrics sampling failed")
                ticks += 1
                await asyncio.sleep(FLUSH_SECONDS)
        finally:
            flush()  # on shutdown too, so the last second is not lost


def render() -> tuple[bytes, str]:
    """The exposition text: merged across workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


async def serve_on_port(host: str, port: int) -> asyncio.Server:
    """``GET /metrics`` on a port of its own, so a public ingress on the app port cannot reach it.

    Every gunicorn worker binds it (SO_REUSEPORT) and any of them serves the merged view.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them changes the answer
            method, target, *_ = request.decode("latin-1").split(" ")
            if method == "GET" and target.split("?")[0] == "/metrics":
                body, content_type = await asyncio.get_running_loop().run_in_executor(None, render)
                status = "200 OK"
            else:
                body, content_type, status = b"Not Found\n", "text/plain", "404 Not Found"
            head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (OSError, ValueError, TimeoutError):
            pass  # a broken scrape: Prometheus retries at the next interval
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_port=True)


# Identity providers' keys (app/jwks.py): fetches by result, keys held per provider, entries refused.
JWKS_FETCHES = Counter("switchboard_jwks_fetches", "JWKS and discovery fetches by result", ["result"])
for _result in ("ok", "status", "too_large", "timeout", "invalid", "error"):
    JWKS_FETCHES.labels(_result)
JWKS_KEYS = Gauge(
    "switchboard_jwks_keys",
    "Signing keys held per provider (from configuration)",
    ["provider"],
    multiprocess_mode="livemax",
)
JWKS_KEYS_REFUSED = Counter(
    "switchboard_jwks_keys_refused", "JWKS entries refused: private key material, or not a signing key", ["reason"]
)
for _reason in ("private", "unsupported"):
    JWKS_KEYS_REFUSED.labels(_reason)
# When the keys held expire (their Cache-Control lifetime): a time in the past means refreshes are
# failing and tokens are checked against stale keys (until SWITCHBOARD_JWKS_MAX_STALE). The oldest
# across gunicorn workers, as each fetches its own.
JWKS_KEYS_EXPIRY = Gauge(
    "switchboard_jwks_keys_expiry_timestamp_seconds",
    "Unix time at which the signing keys held per provider expire (refreshed before then unless fetches fail)",
    ["provider"],
    multiprocess_mode="livemin",
)

# The presence sweeper (app/sweeper.py): rounds this instance swept (it held the lock), and how far
# behind the sweep is: how long ago the oldest channel still waiting in the expiry index was due.
PRESENCE_SWEEPS = Counter("switchboard_presence_sweeps", "Presence sweep rounds run by this instance", ["result"])
for _result in ("ok", "error"):
    PRESENCE_SWEEPS.labels(_result)
PRESENCE_SWEEP_LAG = Gauge(
    "switchboard_presence_sweep_lag_seconds",
    "Seconds since the oldest channel waiting to be swept was due (0 when none, or when another instance sweeps)",
    multiprocess_mode="livemax",
)

# Admin web UI (app/routes/admin.py): sign-ins by outcome, and actions by server API method.
ADMIN_SIGN_INS = Counter("switchboard_admin_sign_ins", "Admin UI sign-ins: ok, refused, limited", ["outcome"])
for _outcome in ("ok", "refused", "limited"):
    ADMIN_SIGN_INS.labels(_outcome)
ADMIN_ACTIONS = Counter(
    "switchboard_admin_actions", "Admin UI actions by server API method and outcome (ok, error)", ["method", "outcome"]
)
# The server API methods that change something: the admin UI logs and counts these.
ADMIN_ACTION_METHODS = ("publish", "broadcast", "send", "disconnect", "subscribe", "unsubscribe")
for _method in ADMIN_ACTION_METHODS:
    for _outcome in ("ok", "error"):
        ADMIN_ACTIONS.labels(_method, _outcome)


# The transactional outbox relay (app/outbox/). Pending rows and their age are the database's, the
# same for every relay that samples them: the gauges keep the largest live value, not a sum.
OUTBOX_PENDING = Gauge(
    "switchboard_outbox_pending_rows", "Rows waiting in switchboard_outbox", multiprocess_mode="livemax"
)
OUTBOX_OLDEST = Gauge(
    "switchboard_outbox_oldest_pending_seconds",
    "Age of the oldest row waiting in switchboard_outbox (the relay's lag)",
    multiprocess_mode="livemax",
)
OUTBOX_DELIVERED = Counter("switchboard_outbox_delivered", "Outbox rows published and deleted by this relay")
OUTBOX_DEAD = Counter(
    "switchboard_outbox_dead_lettered", "Outbox rows that can never be published, moved to switchboard_outbox_dead"
)
OUTBOX_ERRORS = Counter(
    "switchboard_outbox_errors", "Relay errors (database or broker unavailable, anything unexpected), each retried"
)
