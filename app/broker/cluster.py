"""Sharded pub/sub on Redis Cluster: one pub/sub connection and one reader task per shard.

``redis+cluster://h1:p1,h2:p2,...`` (any reachable nodes; the rest are discovered). Redis 7+.

* Every channel lives on the shard that owns its slot. Its history keys share the ``{channel}``
  hash tag, which hashes like the bare channel name, so the publish script's keys and its
  ``SPUBLISH`` land on that same shard: still one atomic step per message.
* Each primary gets one ``Shard`` (app/broker/shard.py): one pub/sub connection and one reader task, ``SSUBSCRIBE``d to
  the channels this process needs that live there (never one connection per socket or channel).
  A probe channel owned by the shard is ``SPUBLISH``ed every ``PROBE_INTERVAL``; silence for
  ``PROBE_DEADLINE`` means a dead connection, as in the single-server broker.
* When a shard's connection fails, a master fails over, or a slot moves (the server then pushes
  ``sunsubscribe``), the slot map is read again, channels move to their new owner's shard, and the
  Hub catches up from history (``on_reconnect``) as after any reconnect.
* Publishes go straight through the cluster client (no batching across shards).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisError

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
    SlotMoved,
)
from app.broker.publisher import Publisher, ScriptArgs, script_call
from app.broker.redis import BACKOFF_BASE, BACKOFF_CAP, SUBSCRIBE_TIMEOUT, brief
from app.broker.redis_target import parse_cluster_url
from app.broker.scripts import HISTORY_SCRIPT, SHARDED_SCRIPTS, history_keys
from app.broker.shard import Shard
from app.protocol import unpack

log = logging.getLogger("switchboard.broker")

_TRANSIENT = (RedisError, OSError, asyncio.TimeoutError, BrokerUnavailable)
SPUBLISH_SCRIPT = "return redis.call('SPUBLISH', KEYS[1], ARGV[1])"  # KEYS[1]: the channel, to route it


class _Script:
    """A Lua script run by EVALSHA on the node that owns its keys, falling back to EVAL there on
    NOSCRIPT. (redis-py's own loads it with SCRIPT LOAD on every primary, which fails for all
    shards while one is down, and a promoted replica starts with an empty script cache.)"""

    def __init__(self, client: _Cluster, text: str) -> None:
        self.client, self.text = client, text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        async with self.client.slots:
            try:
                return await self.client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await self.client.eval(self.text, len(keys), *keys, *args)


class _Cluster(RedisCluster):
    """redis-py's cluster client fails a command when a node's pool is full (it cannot wait, as
    the single-server BlockingConnectionPool does): scripts wait for one of ``slots`` instead,
    fewer than any node's pool holds, so a burst of publishes queues rather than fails."""

    def __init__(self, *args: Any, in_flight: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = asyncio.Semaphore(in_flight)

    def register_script(self, script: str) -> _Script:  # type: ignore[override]
        return _Script(self, script)


class RedisClusterBroker:
    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 16,
        name: str = "switchboard",
        history: HistoryOptions | None = None,
        idempotency_ttl: float = 300.0,
    ) -> None:
        self.name = name
        self.history_options = history or HistoryOptions()
        self._epochs, self._idempotency_ttl = EpochSource(), idempotency_ttl
        self._args = ScriptArgs(self.history_options, self._epochs, idempotency_ttl)
        target = parse_cluster_url(url)
        self.credentials: dict[str, str | None] = {"username": target.username, "password": target.password}
        self._hosts = list(target.hosts)
        self.client = _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            username=target.username,
            password=target.password,
            in_flight=max_connections,
            max_connections=max_connections + 16,  # per node; the rest for presence, probes...
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            client_name=f"sb-pub:{name}",
            # A shard lost for good must not take the others down: its slots fail, theirs work.
            require_full_coverage=False,
        )
        self._scripts = {script: self.client.register_script(text) for script, text in SHARDED_SCRIPTS.items()}
        self._history = self.client.register_script(HISTORY_SCRIPT)
        self._spublish = self.client.register_script(SPUBLISH_SCRIPT)
        self._shards: dict[str, Shard] = {}
        self._where: dict[str, Shard] = {}
        self._on_message: OnMessage | None = None
        self._on_reconnect: OnReconnect = lambda: None
        self._channels: ChannelSource = tuple
        self._remap = asyncio.Event()
        self._mapper: asyncio.Task[None] | None = None
        self._mapped = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, on_message: OnMessage, channels: ChannelSource, on_reconnect: OnReconnect) -> None:
        self._on_message, self._channels, self._on_reconnect = on_message, channels, on_reconnect
        self._mapper = asyncio.create_task(self._map_loop(), name="switchboard-cluster-map")
        # Start-up waits briefly for the cluster but never fails: readiness reports the state.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._all_up(), timeout=SUBSCRIBE_TIMEOUT)

    async def _all_up(self) -> None:
        await self._mapped.wait()
        await asyncio.gather(*(shard.up.wait() for shard in self._shards.values()))

    async def close(self) -> None:
        if self._mapper is not None:
            self._mapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mapper
        for shard in list(self._shards.values()):
            await shard.stop()
        await self.client.aclose()

    def healthy(self) -> bool:
        return self._mapped.is_set() and bool(self._shards) and all(s.up.is_set() for s in self._shards.values())

    # -- the slot map -----------------------------------------------------------------------------

    def remap(self) -> None:
        """Read the slot map again soon (a shard failed, or a slot moved)."""
        self._remap.set()

    def shard_connected(self) -> None:
        if self._mapped.is_set():
            self._safe(self._on_reconnect)  # what was published meanwhile is in history

    async def _map_loop(self) -> None:
        attempt = 0
        while True:
            try:
                self._remap.clear()
                self._reseed()
                if not self._mapped.is_set():
                    await self.client.initialize()  # nodes and command table; a no-op once done
                await self.client.nodes_manager.initialize()  # the slot map as it is now
                await self._place()
                self._mapped.set()
                attempt = 0
                # While a shard is down, keep re-reading: its replica may be promoted any moment.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._remap.wait(), 1.0 if not self.healthy() else 30.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never dies: log, count, retry
                metrics.LISTENER_ERRORS.inc()
                if attempt == 0:
                    log.warning("redis cluster unreachable (%s); retrying", brief(exc))
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))

    def _reseed(self) -> None:
        """Put the configured nodes back among redis-py's startup nodes. It replaces those with
        the nodes each slot map names, so a map read while the cluster was still forming (no
        slots assigned yet) leaves it no node to ask, for good: an instance started before its
        cluster would never become ready."""
        manager = self.client.nodes_manager
        for host, port in self._hosts:
            if f"{host}:{port}" not in manager.startup_nodes:
                node = ClusterNode(host, port, **manager.connection_kwargs)
                manager.startup_nodes[node.name] = node

    async def _place(self) -> None:
        """One shard per primary; every channel on the shard that owns its slot now."""
        primaries = {node.name: node for node in self.client.get_primaries()}
        for name in [n for n in self._shards if n not in primaries]:
            await self._shards.pop(name).stop()
        for name, node in primaries.items():
            if name not in self._shards:
                self._shards[name] = Shard(self, node, self._probe_for(node), self._publisher_for(node))
            else:  # its slots may have changed: the next (re)connect uses a probe it owns now
                self._shards[name].probe = self._probe_for(node)
        moved = False
        for channel in self._channels():
            owner = self._shards[self._owner(channel)]
            current = self._where.get(channel)
            if current is not owner:
                if current is not None:
                    await current.unsubscribe(channel)
                    moved = True
                self._where[channel] = owner
                owner.adopt(channel)
        if moved:  # what was published while a channel moved is in history
            self._safe(self._on_reconnect)

    def _publisher_for(self, node: ClusterNode) -> Publisher:
        pool = BlockingConnectionPool(
            host=node.host,
            port=int(node.port),
            max_connections=1,
            timeout=5.0,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            client_name=f"sb-pub:{self.name}",
            username=self.credentials["username"],
            password=self.credentials["password"],
        )
        return Publisher(pool, self.history_options, self._epochs, self._idempotency_ttl, sharded=True)

    def _owner(self, key: str) -> str:
        node = self.client.get_node_from_key(key)
        if node is None:
            raise BrokerUnavailable(f"no node serves the slot of {key!r}")
        return str(node.name)

    def _probe_for(self, node: ClusterNode) -> str:
        """A channel that lives on ``node``: the shard's liveness probe travels through it."""
        for n in range(100_000):
            name = f"switchboard:probe:{n}"
            if self._owner(name) == node.name:
                return name
        raise RuntimeError(f"no probe channel for {node.name}")

    # -- the broker interface ---------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        if not self._mapped.is_set():
            raise BrokerUnavailable("redis cluster not reached yet")
        try:
            shard = self._shards[self._owner(channel)]
        except (KeyError, RedisError) as exc:
            raise BrokerUnavailable(f"no shard for {channel!r}: {brief(exc)}") from None
        self._where[channel] = shard
        await shard.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        shard = self._where.pop(channel, None)
        if shard is not None:
            await shard.unsubscribe(channel)

    async def publish(
        self,
        channel: str,
        head: bytes,
        frame: bytes,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
    ) -> Position | None:
        opts = history or self.history_options
        shard = self._shards.get(self._owner(channel)) if self._mapped.is_set() else None
        if shard is not None:
            try:
                return await shard.publisher.publish(channel, head, frame, opts, idempotency_key)
            except SlotMoved:
                self.remap()  # the script did not run, so sending it again is safe
        call = script_call(channel, head, frame, opts, idempotency_key, self._args)
        try:
            if call.script is None:
                await self._spublish(keys=[channel], args=list(call.args))
                return None
            found = await self._scripts[call.script](keys=list(call.keys), args=list(call.args))
        except _TRANSIENT as exc:
            raise BrokerUnavailable(brief(exc)) from exc
        offset, epoch = int(found[0]), found[1].decode() if isinstance(found[1], bytes) else str(found[1])
        return Position(offset, epoch) if epoch else None

    async def remove_history(self, channel: str) -> None:
        # The meta key (epoch, offset) stays: only the stream of messages goes.
        try:
            await self.client.delete(history_keys(channel)[1])
        except _TRANSIENT as exc:
            raise BrokerUnavailable(brief(exc)) from exc

    async def history(self, channel: str, since: int, limit: int | None = None) -> History:
        try:
            epoch, top, entries = await self._history(
                keys=list(history_keys(channel)), args=[since, limit or 0, self.history_options.read_bytes]
            )
        except _TRANSIENT as exc:
            raise BrokerUnavailable(brief(exc)) from exc
        return History(Position(int(top), epoch.decode()), [unpack(fields[1]) for _, fields in entries])

    def deliver(self, channel: str, data: bytes) -> None:
        if self._on_message is not None:
            on_message = self._on_message
            self._safe(lambda: on_message(channel, data))

    @staticmethod
    def _safe(call: Any) -> None:
        try:
            call()
        except Exception:
            metrics.LISTENER_ERRORS.inc()
            log.exception("dispatch failed on a shard message")
