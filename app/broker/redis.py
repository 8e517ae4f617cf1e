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
import math
import random
import time
from collections import defaultdict, deque
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

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
from app.broker.scripts import HISTORY_SCRIPT, PUBLISH_SCRIPT, history_keys
from app.protocol import pack, unpack

log = logging.getLogger("switchboard.broker")

CONTROL_CHANNEL = "switchboard:control"
SUBSCRIBE_TIMEOUT = 5.0
PROBE_INTERVAL = 2.0
# No message at all (not even our own probe) for this long means a dead or half-open connection.
PROBE_DEADLINE = 3 * PROBE_INTERVAL
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
_TRANSIENT = (RedisError, OSError, asyncio.TimeoutError, BrokerUnavailable)


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 16,
        name: str = "switchboard",
        history: HistoryOptions | None = None,
    ) -> None:
        self._url = url
        self.history_options = history or HistoryOptions()
        opts = self.history_options
        self._ttls = _whole_seconds(opts)
        self._epochs = EpochSource()
        # Named connections make CLIENT LIST show which instance holds what.
        common: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0, "client_name": f"sb-pub:{name}"}
        # A BlockingConnectionPool waits for a free connection instead of failing when exhausted.
        self.client = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=5.0, **common
            ),
            retry=Retry(NoBackoff(), 0),
        )
        # socket_timeout=None: the listener reads with its own timeout; a blocked read is not an error.
        self._sub_client = Redis.from_url(
            url, socket_connect_timeout=2.0, client_name=f"sb-sub:{name}", retry=Retry(NoBackoff(), 0)
        )
        self._pubsub: PubSub | None = None
        self._on_message: OnMessage | None = None
        self._on_reconnect: OnReconnect = lambda: None
        self._channels: ChannelSource = tuple
        self._lock = asyncio.Lock()
        self._pending: defaultdict[str, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._listener: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._outbox: list[_Publish] = []
        self._outbox_ready = asyncio.Event()
        self._publish_pool = BlockingConnectionPool.from_url(url, max_connections=1, **common)
        self._history_script = self.client.register_script(HISTORY_SCRIPT)
        self._publish_sha = self.client.register_script(PUBLISH_SCRIPT).sha
        self._connected = asyncio.Event()
        self._ever_connected = False
        self._last_seen = 0.0

    async def start(self, on_message: OnMessage, channels: ChannelSource, on_reconnect: OnReconnect) -> None:
        self._on_message = on_message
        self._channels = channels
        self._on_reconnect = on_reconnect
        self._listener = asyncio.create_task(self._listen(), name="switchboard-redis-listener")
        self._flusher = asyncio.create_task(self._flush_publishes(), name="switchboard-redis-publisher")
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
        self._fail(self._outbox, "broker closed")
        await self._publish_pool.aclose()
        await self._drop_pubsub()
        await self.client.aclose()
        await self._sub_client.aclose()

    def healthy(self) -> bool:
        return self._connected.is_set()

    async def subscribe(self, channel: str) -> None:
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[None] = loop.create_future()
        async with self._lock:
            if self._pubsub is None or not self._connected.is_set():
                raise BrokerUnavailable("not connected to Redis")
            self._pending[channel].append(confirmed)
            try:
                await self._pubsub.subscribe(channel)
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
            if self._pubsub is None or not self._connected.is_set():
                return  # A reconnect resubscribes from the Hub, which no longer has it.
            with contextlib.suppress(*_TRANSIENT):
                await self._pubsub.unsubscribe(channel)

    async def publish(
        self, channel: str, head: bytes, frame: bytes, history: HistoryOptions | None = None
    ) -> Position | None:
        """Queue the publish for the flusher and wait for Redis's reply (order is FIFO)."""
        opts = history or self.history_options
        if opts.enabled and (frame[:1] != b"{" or frame[-1:] != b"}"):
            raise ValueError("channel frames must be JSON objects")
        done: asyncio.Future[Position | None] = asyncio.get_running_loop().create_future()
        self._outbox.append(_Publish(channel, head, frame, done, opts))
        self._outbox_ready.set()
        return await done

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        try:
            epoch, top, entries = await self._history_script(
                keys=history_keys(channel), args=[self._epochs(), self._ttls[1], since, limit or 0]
            )
        except _TRANSIENT as exc:
            raise BrokerUnavailable(str(exc)) from exc
        envelopes = [unpack(fields[1]) for _, fields in entries]
        return History(Position(int(top), epoch.decode()), envelopes)

    def _command(self, item: _Publish) -> tuple[Any, ...]:
        opts = item.history
        if not opts.enabled:
            return ("PUBLISH", item.channel, pack(item.head, item.frame))
        meta, stream = history_keys(item.channel)
        ttl, meta_ttl = self._ttls if opts is self.history_options else _whole_seconds(opts)
        args = (self._epochs(), meta_ttl, item.channel, item.head, item.frame, opts.size, ttl)
        return ("EVALSHA", self._publish_sha, 2, meta, stream, *args)

    async def _flush_publishes(self) -> None:
        """Send every waiting publish in one write on a dedicated connection, then read the replies.

        A PUBLISH through redis-py's pool costs about 160 us of CPU; batched on one connection it
        costs about 10 us. With many publishers at once (many rooms) a batch holds many commands.
        """
        conn = None
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            try:
                if conn is None:
                    conn = self._publish_pool.make_connection()  # type: ignore[no-untyped-call]
                    await conn.connect()
                    # A new connection may be to a restarted Redis with an empty script cache.
                    await conn.send_command("SCRIPT", "LOAD", PUBLISH_SCRIPT)
                    await conn.read_response()
                packed = conn.pack_commands([self._command(item) for item in batch])
                await conn.send_packed_command(packed, check_health=False)
                reload = False
                for item in batch:
                    try:
                        reply = await conn.read_response()
                    except ResponseError as exc:
                        # The script did not run (NOSCRIPT after SCRIPT FLUSH, OOM...): refuse it.
                        reload = reload or isinstance(exc, NoScriptError)
                        item.fail(str(exc))
                        continue
                    if not item.done.done():
                        position = Position(int(reply[0]), reply[1].decode()) if isinstance(reply, list) else None
                        item.done.set_result(position)
                if reload:
                    await conn.send_command("SCRIPT", "LOAD", PUBLISH_SCRIPT)
                    await conn.read_response()
            except asyncio.CancelledError:
                self._fail(batch, "broker closing")
                raise
            except Exception as exc:
                # Replies not read are unknown: fail them (never silently) and use a fresh connection.
                self._fail(batch, str(exc))
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
                conn = None

    @staticmethod
    def _fail(batch: list[_Publish], reason: str) -> None:
        for item in batch:
            item.fail(reason)

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
                    log.warning("redis pub/sub connection lost (%s); reconnecting", exc)
                elif attempt == 0:
                    log.warning("redis unreachable (%s); retrying", exc)
                if not isinstance(exc, _TRANSIENT):
                    log.exception("unexpected error in redis listener")
                self._mark_down()
                await self._drop_pubsub()
                attempt += 1
                # Full jitter keeps a fleet of instances from reconnecting in lockstep.
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))

    async def _connect(self) -> None:
        async with self._lock:
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=False)
            self._pubsub = pubsub
            # The control channel keeps the connection subscribed and carries our liveness probe.
            await pubsub.subscribe(CONTROL_CHANNEL, *self._channels())
            self._last_seen = time.monotonic()
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
        pubsub = self._pubsub
        assert pubsub is not None
        next_probe = time.monotonic() + PROBE_INTERVAL
        while True:
            message = await pubsub.get_message(timeout=PROBE_INTERVAL / 2)
            now = time.monotonic()
            if message is not None:
                self._last_seen = now
                self._handle(message)
            if now >= next_probe:
                next_probe = now + PROBE_INTERVAL
                await asyncio.wait_for(self.client.publish(CONTROL_CHANNEL, b"probe"), PROBE_INTERVAL)
            if now - self._last_seen > PROBE_DEADLINE:
                raise BrokerUnavailable("pub/sub connection silent; probe not received")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"].decode()
        if kind == "message":
            if channel != CONTROL_CHANNEL and self._on_message is not None:
                try:
                    self._on_message(channel, message["data"])
                except Exception:
                    metrics.LISTENER_ERRORS.inc()
                    log.exception("dispatch failed on channel message")
        elif kind == "subscribe":
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
        metrics.BROKER_UP.set(0)
        for waiters in self._pending.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailable("redis connection lost"))
        self._pending.clear()

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _whole_seconds(opts: HistoryOptions) -> tuple[str, str]:
    """EXPIRE takes whole seconds; rounding up never shortens a promise."""
    return str(math.ceil(opts.ttl)), str(math.ceil(opts.meta_ttl))


class _Publish:
    __slots__ = ("channel", "done", "frame", "head", "history")

    def __init__(
        self, channel: str, head: bytes, frame: bytes, done: asyncio.Future[Position | None], history: HistoryOptions
    ) -> None:
        self.channel, self.head, self.frame, self.done, self.history = channel, head, frame, done, history

    def fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(BrokerUnavailable(reason))
