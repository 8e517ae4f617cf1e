"""One shard of a Redis Cluster, as the cluster broker sees it: one primary, one pub/sub
connection, one reader task, and the channels of this process that live there.

The connection is read as the single-Redis broker reads its own (app/broker/pubsub_reader.py):
redis-py connects and authenticates, then hiredis parses every chunk the socket delivers and each
reply is handled in the same callback, with no coroutine resumption or dict per message. The task
SSUBSCRIBEs its probe channel (one the shard owns) and its channels, one per command (SSUBSCRIBE
takes several channels only within one slot), then watches until the connection fails or goes
silent for PROBE_DEADLINE. On any failure it asks the broker to read the slot map again (a
failover or a slot move may be why), backs off with jitter and reconnects: it never dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from app import metrics
from app.broker.base import BrokerUnavailable
from app.broker.publisher import Publisher
from app.broker.pubsub_reader import PubSubReader
from app.broker.redis import BACKOFF_BASE, BACKOFF_CAP, SUBSCRIBE_TIMEOUT, brief

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
        self._reader: PubSubReader | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.task = asyncio.create_task(self._run(), name=f"switchboard-shard:{node.name}")
        self.flusher = asyncio.create_task(publisher.run(), name=f"switchboard-shard-publisher:{node.name}")

    def adopt(self, channel: str) -> None:
        """Take a channel moved here: subscribed now if connected, or on (re)connect."""
        self.channels.add(channel)
        if self._reader is not None and self.up.is_set():
            with contextlib.suppress(ConnectionError):  # lost meanwhile: (re)connect subscribes it
                self._reader.send("SSUBSCRIBE", channel)

    async def subscribe(self, channel: str) -> None:
        """A join: raises BrokerUnavailable unless the shard confirms the subscription."""
        if self._reader is None or not self.up.is_set():
            raise BrokerUnavailable(f"shard {self.node.name} is down")
        self.channels.add(channel)
        confirmed = self._waiting.setdefault(channel, asyncio.get_running_loop().create_future())
        try:
            self._reader.send("SSUBSCRIBE", channel)
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
        except _TRANSIENT as exc:
            raise BrokerUnavailable(f"no subscribe confirmation for {channel!r}: {brief(exc)}") from None

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._reader is not None and self.up.is_set():
            with contextlib.suppress(*_TRANSIENT):
                self._reader.send("SUNSUBSCRIBE", channel)

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
                # redis-py connects (AUTH, CLIENT SETNAME); our reader takes it from there.
                connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
                await connection.connect()
                reader = self._reader = PubSubReader.take_over(connection, self._handle)
                # SSUBSCRIBE takes several channels only within one slot: one per command.
                for channel in (self.probe, *self.channels):
                    reader.send("SSUBSCRIBE", channel)
                self.up.set()
                attempt = 0
                self.broker.shard_connected()
                await reader.watch(lambda: self.broker.client.spublish(self.probe, b"probe"), probe_now=True)
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
                current, self._reader = self._reader, None
                if current is not None:
                    current.close()
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _handle(self, reply: Any) -> None:
        """One reply off the pub/sub connection: ``[kind, channel, data or count]``."""
        if not isinstance(reply, list) or len(reply) != 3:
            if isinstance(reply, Exception):  # an error reply (a command we sent was refused)
                log.warning("shard %s refused a pub/sub command: %s", self.node.name, reply)
            return
        kind, raw_channel, data = reply
        channel = raw_channel.decode()
        if kind == b"smessage":
            if channel != self.probe:
                self.broker.deliver(channel, data)
        elif kind == b"ssubscribe":
            waiter = self._waiting.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == b"sunsubscribe" and channel in self.channels:
            # Pushed by the server: the slot moved (a failover, a migration). Find its new owner.
            self.broker.remap()

    def _fail_waiting(self, reason: str) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(reason))
        self._waiting.clear()
