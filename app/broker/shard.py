"""One shard of a Redis Cluster, as the cluster broker sees it: one primary, one pub/sub
connection, one reader task, and the channels of this process that live there.

The reader SSUBSCRIBEs its probe channel (one the shard owns) and its channels, one at a time
(SSUBSCRIBE takes several channels only within one slot), then reads until the connection fails
or goes silent for PROBE_DEADLINE. On any failure it asks the broker to read the slot map again
(a failover or a slot move may be why), backs off with jitter and reconnects: it never dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from app import metrics
from app.broker.base import BrokerUnavailable
from app.broker.publisher import Publisher
from app.broker.redis import BACKOFF_BASE, BACKOFF_CAP, PROBE_DEADLINE, PROBE_INTERVAL, SUBSCRIBE_TIMEOUT, brief

log = logging.getLogger("switchboard.broker")

_TRANSIENT = (RedisError, OSError, asyncio.TimeoutError, BrokerUnavailable)


class ShardOwner(Protocol):
    """What a shard needs from the cluster broker."""

    name: str
    credentials: dict[str, str | None]  # the URL's username and password, for the reader's own connection

    @property
    def client(self) -> RedisCluster: ...

    def remap(self) -> None: ...

    def shard_connected(self) -> None: ...

    def deliver(self, channel: str, data: bytes) -> None: ...


class Shard:
    """One primary: one pub/sub connection, one reader task, the channels that live there."""

    def __init__(self, broker: ShardOwner, node: ClusterNode, probe: str, publisher: Publisher) -> None:
        self.broker, self.node, self.probe = broker, node, probe
        # Publishes to this shard's channels, batched on one connection (pipelined: a lone
        # command per round trip costs Redis about four times the CPU).
        self.publisher = publisher
        self.channels: set[str] = set()
        self.up = asyncio.Event()
        self._pubsub: PubSub | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.task = asyncio.create_task(self._run(), name=f"switchboard-shard:{node.name}")
        self.flusher = asyncio.create_task(publisher.run(), name=f"switchboard-shard-publisher:{node.name}")

    def adopt(self, channel: str) -> None:
        """Take a channel moved here: subscribed now if connected, or on (re)connect."""
        self.channels.add(channel)
        if self._pubsub is not None and self.up.is_set():
            task = asyncio.create_task(self._pubsub.ssubscribe(channel))
            task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def subscribe(self, channel: str) -> None:
        """A join: raises BrokerUnavailable unless the shard confirms the subscription."""
        if self._pubsub is None or not self.up.is_set():
            raise BrokerUnavailable(f"shard {self.node.name} is down")
        self.channels.add(channel)
        confirmed = self._waiting.setdefault(channel, asyncio.get_running_loop().create_future())
        try:
            await self._pubsub.ssubscribe(channel)
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
        except _TRANSIENT as exc:
            raise BrokerUnavailable(f"no subscribe confirmation for {channel!r}: {brief(exc)}") from None

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._pubsub is not None and self.up.is_set():
            with contextlib.suppress(*_TRANSIENT):
                await self._pubsub.sunsubscribe(channel)

    async def stop(self) -> None:
        for task in (self.task, self.flusher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.publisher.close()

    async def _run(self) -> None:
        attempt = 0
        while True:
            name = f"sb-sub:{self.broker.name}"
            client = Redis(
                host=self.node.host,
                port=int(self.node.port),
                socket_connect_timeout=2.0,
                client_name=name,
                username=self.broker.credentials["username"],
                password=self.broker.credentials["password"],
            )
            try:
                self._pubsub = client.pubsub()
                # SSUBSCRIBE takes several channels only within one slot: one at a time.
                for channel in (self.probe, *self.channels):
                    await self._pubsub.ssubscribe(channel)
                self.up.set()
                attempt = 0
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # The reader must never die: log, count, re-map, retry.
                if self.up.is_set():
                    metrics.BROKER_RECONNECTS.inc()
                    log.warning("shard %s pub/sub lost (%s); reconnecting", self.node.name, brief(exc))
                if not isinstance(exc, _TRANSIENT):
                    log.exception("unexpected error in shard reader %s", self.node.name)
                self.up.clear()
                self.publisher.suspect()
                self._fail_waiting(brief(exc))
                self.broker.remap()
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))
            finally:
                self.up.clear()
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()  # type: ignore[union-attr]
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _read(self) -> None:
        assert self._pubsub is not None
        last_seen, next_probe = time.monotonic(), 0.0
        self.broker.shard_connected()
        while True:
            message = await self._pubsub.get_message(timeout=PROBE_INTERVAL / 2)
            now = time.monotonic()
            if message is not None:
                last_seen = now
                self._handle(message)
            if now >= next_probe:
                next_probe = now + PROBE_INTERVAL
                await asyncio.wait_for(self.broker.client.spublish(self.probe, b"probe"), PROBE_INTERVAL)
            if now - last_seen > PROBE_DEADLINE:
                raise BrokerUnavailable("shard pub/sub connection silent; probe not received")

    def _handle(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"].decode()
        if kind == "smessage" and channel != self.probe:
            self.broker.deliver(channel, message["data"])
        elif kind == "ssubscribe":
            waiter = self._waiting.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "sunsubscribe" and channel in self.channels:
            # Pushed by the server: the slot moved (a failover, a migration). Find its new owner.
            self.broker.remap()

    def _fail_waiting(self, reason: str) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(reason))
        self._waiting.clear()
