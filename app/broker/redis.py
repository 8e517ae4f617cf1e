"""Redis pub/sub broker: ONE pub/sub connection and ONE listener task per process.

Three kinds of connection, all named after the instance in CLIENT LIST:

* the pub/sub connection (``sb-sub:``), read by the one listener task; redis-py never retries it
  itself, so reconnection is ours: back off with jitter, then resubscribe the channels the Hub
  holds (the Hub is the source of truth, not redis-py's memory);
* one publishing connection, written by one flusher task in batches (``_flush_publishes``);
* a small bounded pool (``self.client``) for presence, history reads and the liveness probe.

With history on, a publish is one Lua script (``PUBLISH_SCRIPT``): it assigns the next offset,
splices it into the frame, appends the envelope to the channel's stream and PUBLISHes it, all in
one atomic step. Keys share a ``{channel}`` hash tag so that a Redis Cluster keeps them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict, deque
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app import metrics
from app.broker.base import (
    BrokerUnavailable,
    ChannelSource,
    EpochSource,
    History,
    HistoryOptions,
    OnMessage,
    OnReconnect,
    Position,
)
from app.broker.publisher import Publisher
from app.broker.pubsub_reader import PubSubReader
from app.broker.redis_target import RedisTarget
from app.broker.scripts import HISTORY_SCRIPT, history_keys
from app.protocol import unpack

log = logging.getLogger("switchboard.broker")

CONTROL_CHANNEL = "switchboard:control"
SUBSCRIBE_TIMEOUT = 5.0
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
_TRANSIENT = (RedisError, OSError, asyncio.TimeoutError, BrokerUnavailable)


def brief(exc: BaseException) -> str:
    """An error for a log line: redis-py's Sentinel errors embed the repr of every client tried."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 16,
        name: str = "switchboard",
        history: HistoryOptions | None = None,
        idempotency_ttl: float = 300.0,
    ) -> None:
        self._target = RedisTarget(url)
        self.history_options = history or HistoryOptions()
        self._epochs = EpochSource()
        # Named connections make CLIENT LIST show which instance holds what.
        common: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0, "client_name": f"sb-pub:{name}"}
        # A blocking pool waits for a free connection instead of failing when exhausted.
        # One retry on a fresh connection: after a Redis restart every pooled connection is stale,
        # and a join must not fail while readiness says the broker is up. Everything sent through
        # this pool (history reads, presence, user slots) may safely run twice. It is set on the
        # pool's connections: redis-py ignores a client's ``retry`` when it is given a pool.
        self.client = Redis(
            connection_pool=self._target.pool(max_connections=max_connections, retry=Retry(NoBackoff(), 1), **common)
        )
        # Only ever used to open the pub/sub connection, which PubSubReader then reads.
        self._sub_pool = self._target.pool(
            max_connections=None, socket_connect_timeout=2.0, client_name=f"sb-sub:{name}", retry=Retry(NoBackoff(), 0)
        )
        self._reader: PubSubReader | None = None
        self._on_message: OnMessage | None = None
        self._on_reconnect: OnReconnect = lambda: None
        self._channels: ChannelSource = tuple
        self._lock = asyncio.Lock()
        self._pending: defaultdict[str, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._listener: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._publisher = Publisher(
            self._target.pool(max_connections=1, **common),
            self.history_options,
            self._epochs,
            idempotency_ttl,
        )
        self._history_script = self.client.register_script(HISTORY_SCRIPT)
        self._connected = asyncio.Event()
        self._ever_connected = False

    async def start(self, on_message: OnMessage, channels: ChannelSource, on_reconnect: OnReconnect) -> None:
        self._on_message = on_message
        self._channels = channels
        self._on_reconnect = on_reconnect
        self._listener = asyncio.create_task(self._listen(), name="switchboard-redis-listener")
        self._flusher = asyncio.create_task(self._publisher.run(), name="switchboard-redis-publisher")
        # Start-up waits briefly for Redis but never fails: readiness reports the state instead.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=SUBSCRIBE_TIMEOUT)

    async def close(self) -> None:
        for task in (self._listener, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._flusher = None
        await self._publisher.close()
        await self._drop_pubsub()
        await self.client.aclose()
        await self._sub_pool.aclose()
        await self._target.aclose()

    def healthy(self) -> bool:
        return self._connected.is_set()

    async def subscribe(self, channel: str) -> None:
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[None] = loop.create_future()
        async with self._lock:
            if self._reader is None or not self._connected.is_set():
                raise BrokerUnavailable("not connected to Redis")
            self._pending[channel].append(confirmed)
            try:
                self._reader.send("SUBSCRIBE", channel)
            except _TRANSIENT as exc:
                self._forget(channel, confirmed)
                raise BrokerUnavailable(str(exc)) from exc
        try:
            # The listener resolves this on Redis's confirmation: only then is delivery certain.
            await asyncio.wait_for(confirmed, timeout=SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            self._forget(channel, confirmed)
            raise BrokerUnavailable(f"no subscribe confirmation for {channel!r}") from None

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if self._reader is None or not self._connected.is_set():
                return  # A reconnect resubscribes from the Hub, which no longer has it.
            with contextlib.suppress(*_TRANSIENT):
                self._reader.send("UNSUBSCRIBE", channel)

    async def publish(
        self,
        channel: str,
        head: bytes,
        frame: bytes,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
    ) -> Position | None:
        """Queue the publish for the flusher and wait for Redis's reply (order is FIFO)."""
        return await self._publisher.publish(channel, head, frame, history or self.history_options, idempotency_key)

    async def remove_history(self, channel: str) -> None:
        # The meta key (epoch, offset) stays: only the stream of messages goes.
        try:
            await self.client.delete(history_keys(channel)[1])
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        try:
            epoch, top, entries = await self._history_script(
                keys=history_keys(channel), args=[since, limit or 0, self.history_options.read_bytes]
            )
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        envelopes = [unpack(fields[1]) for _, fields in entries]
        return History(Position(int(top), epoch.decode()), envelopes)

    # -- listener -------------------------------------------------------------------------------

    async def _listen(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
                attempt = 0
                await self._read_until_error()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # The listener must never die: log, count, reconnect.
                if self._connected.is_set():
                    metrics.BROKER_RECONNECTS.inc()
                    log.warning("redis pub/sub connection lost (%s); reconnecting", brief(exc))
                elif attempt == 0:
                    log.warning("redis unreachable (%s); retrying", brief(exc))
                if not isinstance(exc, _TRANSIENT):
                    log.exception("unexpected error in redis listener")
                self._mark_down()
                await self._drop_pubsub()
                attempt += 1
                # Full jitter keeps a fleet of instances from reconnecting in lockstep.
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))

    async def _connect(self) -> None:
        async with self._lock:
            # redis-py connects (TLS, AUTH, Sentinel, CLIENT SETNAME); our reader takes it from there.
            connection = self._sub_pool.make_connection()  # type: ignore[no-untyped-call]
            await connection.connect()
            reader = self._reader = PubSubReader.take_over(connection, self._handle)
            # The control channel keeps the connection subscribed and carries our liveness probe.
            reader.send("SUBSCRIBE", CONTROL_CHANNEL, *self._channels())
            self._connected.set()
            metrics.BROKER_UP.set(1)
        log.info("redis pub/sub connected")
        if self._ever_connected:
            # Messages published while we were away are in history: the Hub fetches them.
            try:
                self._on_reconnect()
            except Exception:
                metrics.LISTENER_ERRORS.inc()
                log.exception("on_reconnect failed; channels may miss what was published meanwhile")
        self._ever_connected = True

    async def _read_until_error(self) -> None:
        reader = self._reader
        assert reader is not None
        await reader.watch(lambda: self.client.publish(CONTROL_CHANNEL, b"probe"), probe_now=False)

    def _handle(self, reply: Any) -> None:
        """One reply off the pub/sub connection: ``[kind, channel, data or count]``."""
        if not isinstance(reply, list) or len(reply) != 3:
            if isinstance(reply, Exception):  # an error reply (a command we sent was refused)
                log.warning("redis refused a pub/sub command: %s", reply)
            return
        kind, raw_channel, data = reply
        channel = raw_channel.decode()
        if kind == b"message":
            if channel != CONTROL_CHANNEL and self._on_message is not None:
                try:
                    self._on_message(channel, data)
                except Exception:
                    metrics.LISTENER_ERRORS.inc()
                    log.exception("dispatch failed on channel message")
        elif kind == b"subscribe":
            waiters = self._pending.get(channel)
            if waiters:
                waiter = waiters.popleft()
                if not waiters:
                    del self._pending[channel]
                if not waiter.done():
                    waiter.set_result(None)

    def _forget(self, channel: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._pending.get(channel)
        if waiters and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._pending[channel]

    def _mark_down(self) -> None:
        self._connected.clear()
        self._publisher.suspect()
        metrics.BROKER_UP.set(0)
        for waiters in self._pending.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailable("redis connection lost"))
        self._pending.clear()

    async def _drop_pubsub(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
