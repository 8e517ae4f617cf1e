"""Where the Redis broker connects: one server, or whichever master a set of Sentinels names.

* ``redis://``, ``rediss://``, ``unix://``: one server (redis-py's URL format).
* ``redis+sentinel://[user:password@]h1:26379,h2:26379/<master-name>[/<db>]``: the Sentinels are
  asked for the master before every new connection. On a failover the broker's connections to the
  old master break (or answer READONLY), the listener reconnects, lands on the new master and
  resubscribes, and the Hub catches up from history as after any reconnect. The password is the
  master's; Sentinels are reached without one.

``RedisTarget.pool`` builds every pool the broker uses (commands, the publisher, the listener's
client), so the broker itself does not care which kind it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

# What presence, user slots, the instance registry and the sweeper run their scripts on.
RedisClient = Redis | RedisCluster
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SERVER_SCHEMES = ("redis", "rediss", "unix")


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool that waits for a free connection, as the single-server one does,
    instead of failing a join under load with "too many connections"."""


@dataclass(frozen=True)
class Nodes:
    """``scheme://[user:password@]h1:p1,h2:p2[/path]``, as Sentinel and Cluster URLs have it."""

    hosts: list[tuple[str, int]]
    path: str
    username: str | None
    password: str | None


def parse_nodes(url: str, what: str) -> Nodes:
    """Raises ValueError, naming what is wrong (never echoing a password)."""
    rest = url.split("://", 1)[1]
    credentials, at, rest = rest.rpartition("@") if "@" in rest else ("", "", rest)
    netloc, _, path = rest.partition("/")
    hosts = []
    for part in filter(None, netloc.split(",")):
        host, colon, port = part.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"{what} address {part!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise ValueError(f"a {url.split('://', 1)[0]}:// URL needs at least one {what} host:port")
    user, _, password = credentials.partition(":") if at else ("", "", "")
    return Nodes(hosts, path.strip("/"), unquote(user) or None, unquote(password) or None)


@dataclass(frozen=True)
class SentinelUrl:
    hosts: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None

    def describe(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        return f"{SENTINEL_SCHEME}://{hosts}/{self.master}/{self.db}"


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Raises ValueError, naming what is wrong (never echoing a password)."""
    nodes = parse_nodes(url, "Sentinel")
    master, _, db = nodes.path.partition("/")
    if not master:
        raise ValueError("a redis+sentinel:// URL needs the master's name: redis+sentinel://h:26379/<name>/<db>")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    return SentinelUrl(nodes.hosts, unquote(master), int(db or 0), nodes.username, nodes.password)


def parse_cluster_url(url: str) -> Nodes:
    """``redis+cluster://[user:password@]h1:p1,h2:p2``: the nodes to start from."""
    return parse_nodes(url, "cluster node")


def check_url(url: str) -> None:
    """The broker URL's form, at start-up: raises ValueError with one readable line."""
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL_SCHEME:
        parse_sentinel_url(url)
    elif scheme == CLUSTER_SCHEME:
        parse_cluster_url(url)
    elif scheme in ("redis", "rediss"):
        _check_server_url(url)
    elif scheme not in ("memory", "unix"):
        raise ValueError(
            f"unsupported broker URL scheme {scheme!r}; use memory://, redis://, redis+sentinel:// or redis+cluster://"
        )


def _check_server_url(url: str) -> None:
    """What redis-py would trip over only at the first connection (a traceback), or ignore (a
    database that is not a number silently means 0)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- urllib parses the port lazily; this raises for "h:notaport"
    except ValueError:
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ValueError(f"port {port[:16]!r} is not a number from 0 to 65535") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"database {db[:16]!r} is not a number (redis://host:port/<db>)")


def check_sentinel_master(url: str, timeout: float = 1.0) -> None:
    """Refuse a master name no reachable Sentinel monitors (a typo would otherwise look like an
    outage forever). Sentinels that do not answer are no evidence: the instance starts unready."""
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        return
    target = parse_sentinel_url(url)
    answered = False
    for host, port in target.hosts:
        # One try each: redis-py's default retries with backoff made a start with every Sentinel
        # down wait 4 s per Sentinel before the instance even listened.
        client = redis.Redis(
            host=host,
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=SyncRetry(NoBackoff(), 0),
        )
        try:
            masters = client.sentinel_masters()
        except redis.RedisError:
            continue
        finally:
            client.close()
        answered = True
        if target.master in masters:
            return
    if answered:
        raise ValueError(f"no Sentinel at {target.describe()} monitors a master named {target.master!r}")


class RedisTarget:
    """Builds the broker's connection pools for one broker URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sentinel: SentinelUrl | None = None
        self._manager: Sentinel | None = None
        if urlsplit(url).scheme == SENTINEL_SCHEME:
            self._sentinel = parse_sentinel_url(url)
            # One quick try per Sentinel per discovery: redis-py's default retries with backoff
            # would make every connection attempt wait seconds while the Sentinels are down.
            quick = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "retry": Retry(NoBackoff(), 0)}
            self._manager = Sentinel(self._sentinel.hosts, sentinel_kwargs=quick, **quick)  # type: ignore[no-untyped-call]

    def pool(self, *, max_connections: int | None, **options: Any) -> ConnectionPool:
        """A blocking pool of ``max_connections`` (None: one, unpooled, for the listener)."""
        if self._sentinel is None or self._manager is None:
            if max_connections is None:
                return ConnectionPool.from_url(self.url, **options)
            return BlockingConnectionPool.from_url(self.url, max_connections=max_connections, timeout=5.0, **options)
        target = self._sentinel
        common = {"db": target.db, "username": target.username, "password": target.password, **options}
        # redis-py's Sentinel classes are untyped.
        if max_connections is None:
            return SentinelConnectionPool(target.master, self._manager, **common)  # type: ignore[no-untyped-call]
        return _BlockingSentinelPool(  # type: ignore[no-untyped-call]
            target.master, self._manager, max_connections=max_connections, timeout=5.0, **common
        )

    async def aclose(self) -> None:
        if self._manager is not None:
            await self._manager.aclose()

    def describe(self) -> str:
        """The URL without credentials, for logs."""
        return self._sentinel.describe() if self._sentinel is not None else self.url.split("@")[-1]
