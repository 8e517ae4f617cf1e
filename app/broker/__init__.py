"""``create_broker(url)``: the broker for a URL scheme (``memory://``, ``redis://``, ``redis+sentinel://``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.broker.base import Broker, BrokerUnavailable, History, HistoryOptions, Position
from app.broker.memory import MemoryBroker
from app.broker.redis_target import CLUSTER_SCHEME, SENTINEL_SCHEME, SERVER_SCHEMES, RedisClient, check_url

__all__ = ["Broker", "BrokerUnavailable", "History", "HistoryOptions", "Position", "create_broker", "redis_client"]


def redis_client(broker: Broker) -> RedisClient | None:
    """The broker's Redis command client, if it has one (presence, user slots... live there too)."""
    client = getattr(broker, "client", None)
    return client if isinstance(client, RedisClient) else None


def create_broker(
    url: str,
    *,
    max_connections: int = 16,
    name: str = "switchboard",
    history: HistoryOptions | None = None,
    idempotency_ttl: float = 300.0,
) -> Broker:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker(history, idempotency_ttl=idempotency_ttl)
    if scheme == CLUSTER_SCHEME:
        from app.broker.cluster import RedisClusterBroker

        return RedisClusterBroker(
            url, max_connections=max_connections, name=name, history=history, idempotency_ttl=idempotency_ttl
        )
    if scheme in (*SERVER_SCHEMES, SENTINEL_SCHEME):
        from app.broker.redis import RedisBroker

        return RedisBroker(
            url, max_connections=max_connections, name=name, history=history, idempotency_ttl=idempotency_ttl
        )
    check_url(url)  # raises, naming the schemes that work
    raise AssertionError(scheme)
