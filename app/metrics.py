"""Prometheus metrics, single-process or gunicorn multiprocess.

prometheus-client chooses multiprocess storage when PROMETHEUS_MULTIPROC_DIR is set at import;
gunicorn.conf.py sets it before any worker imports this module. Gauges sum live processes.
Labels are small fixed sets: never a raw channel or user name.

Hot-path rule: increment once per broadcast (``inc(n)``), never once per socket.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONNECTIONS = Gauge("switchboard_connections", "Open WebSocket connections", ["endpoint"], multiprocess_mode="livesum")
CONNECTS = Counter("switchboard_connects", "Connection attempts by result", ["result"])
DISCONNECTS = Counter("switchboard_disconnects", "Disconnects by close code", ["code"])
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
AUTH_FAILURES = Counter("switchboard_auth_failures", "Authentication failures by reason", ["reason"])
PUBLISH_FAILURES = Counter("switchboard_publish_failures", "Publishes refused because the broker was unavailable")
BROKER_UP = Gauge("switchboard_broker_up", "1 while the broker connection is up", multiprocess_mode="livemin")
BROKER_RECONNECTS = Counter("switchboard_broker_reconnects", "Broker connections lost and retried")
LISTENER_ERRORS = Counter("switchboard_listener_errors", "Errors caught in background loops")
CHANNELS = Gauge("switchboard_channels", "Channels with local members", multiprocess_mode="livesum")
SEND_QUEUE_DEPTH = Histogram(
    "switchboard_send_queue_depth",
    "Per-connection send-queue depth seen at each enqueue that found a backlog",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
# A gauge, not an Info: Info does not work in multiprocess mode.
BUILD_INFO = Gauge(
    "switchboard_build_info",
    "Always 1; labels carry the version",
    ["version", "python"],
    multiprocess_mode="max",
)


def render() -> tuple[bytes, str]:
    """The exposition text: merged across workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
