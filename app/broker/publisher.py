"""The Redis broker's publisher: ONE connection, ONE flusher task, publishes sent in batches.

``publish()`` queues the command and awaits its reply; the flusher sends every waiting command in
one write and reads the replies in order (FIFO, so per-publisher order holds). Through redis-py's
pool a PUBLISH cost about 160 us of CPU; batched on one connection, about 10 us.

With history on, a publish is an EVALSHA of ``PUBLISH_SCRIPT`` (offset, history, PUBLISH in one
atomic step); with an idempotency key it is checked and recorded in that same step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import ConnectionPool
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError

from app.broker.base import BrokerUnavailable, EpochSource, HistoryOptions, Position, SlotMoved
from app.broker.scripts import PUBLISH_ONCE_SCRIPT, PUBLISH_SCRIPT, SHARDED_SCRIPTS, history_keys, idempotency_key
from app.protocol import pack

# A connection idle for longer than this is PINGed before the next batch goes out on it: proxies
# and firewalls drop idle connections silently. (A Redis restart is caught sooner: ``suspect``.)
IDLE_CHECK = 30.0


class Publisher:
    def __init__(
        self,
        pool: ConnectionPool,
        default: HistoryOptions,
        epochs: EpochSource,
        idempotency_ttl: float,
        *,
        sharded: bool = False,
    ) -> None:
        self._pool = pool
        # One deadline per batch (its write and all its replies), not redis-py's per call: its
        # per-call timeouts were a task (``wait_for``) per write and a timeout context per reply.
        self._timeout: float | None = pool.connection_kwargs.get("socket_timeout")
        self._args = ScriptArgs(default, epochs, idempotency_ttl)
        self._outbox: list[_Publish] = []
        self._suspect = False  # the listener lost Redis meanwhile: check the connection first
        self._outbox_ready = asyncio.Event()
        # Redis Cluster: each shard has its own publisher, which publishes with SPUBLISH.
        self._bare = "SPUBLISH" if sharded else "PUBLISH"
        self._texts = SHARDED_SCRIPTS if sharded else {s: s for s in (PUBLISH_SCRIPT, PUBLISH_ONCE_SCRIPT)}
        # The shas EVALSHA names: the same for every connection, as SCRIPT LOAD computes them.
        self._shas = {script: _sha(text) for script, text in self._texts.items()}

    async def publish(
        self, channel: str, head: bytes, frame: bytes, history: HistoryOptions, key: str | None
    ) -> Position | None:
        if history.enabled and (frame[:1] != b"{" or frame[-1:] != b"}"):
            raise ValueError("channel frames must be JSON objects")
        done: asyncio.Future[Position | None] = asyncio.get_running_loop().create_future()
        self._outbox.append(_Publish(channel, head, frame, done, history, key))
        self._outbox_ready.set()
        return await done

    def suspect(self) -> None:
        """Redis was lost (and maybe restarted): check the connection before the next batch."""
        self._suspect = True

    async def close(self) -> None:
        """After the flusher task is cancelled: nothing waits forever."""
        self._fail(self._outbox, "broker closed")
        await self._pool.aclose()

    def _command(self, item: _Publish) -> tuple[Any, ...]:
        call = script_call(item.channel, item.head, item.frame, item.history, item.idempotency_key, self._args)
        if call.script is None:
            return (self._bare, item.channel, call.args[0])
        return ("EVALSHA", self._shas[call.script], len(call.keys), *call.keys, *call.args)

    async def run(self) -> None:
        """Send every waiting publish in one write on a dedicated connection, then read the replies.

        A PUBLISH through redis-py's pool costs about 160 us of CPU; batched on one connection it
        costs about 10 us. With many publishers at once (many rooms) a batch holds many commands.
        """
        conn = None
        last_used = 0.0
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            try:
                async with asyncio.timeout(self._timeout):
                    if conn is not None and (self._suspect or time.monotonic() - last_used > IDLE_CHECK):
                        self._suspect = False
                        conn = await self._alive(conn)  # before sending: nothing is lost if it is not
                    if conn is None:
                        conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
                        conn.socket_timeout = None  # the batch's deadline above bounds every call on it
                        await conn.connect()
                        # A new connection may be to a restarted Redis with an empty script cache.
                        await self._load_scripts(conn)
                    last_used = time.monotonic()
                    await conn.send_packed_command(resp([self._command(item) for item in batch]), check_health=False)
                    await self._replies(conn, batch)
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

    async def _replies(self, conn: Any, batch: list[_Publish]) -> None:
        """Read the batch's replies in order and settle each publish with its own."""
        reload = False
        for item in batch:
            try:
                reply = await conn.read_response()
            except ResponseError as exc:
                # The script did not run (NOSCRIPT after SCRIPT FLUSH, OOM, a moved slot): refuse it.
                reload = reload or isinstance(exc, NoScriptError)
                moved = isinstance(exc, MovedError | AskError)
                item.fail(str(exc), SlotMoved if moved else BrokerUnavailable)
                continue
            if not item.done.done():
                offset = int(reply[0]) if isinstance(reply, list) else 0
                item.done.set_result(Position(offset, reply[1].decode()) if offset else None)
        if reload:
            await self._load_scripts(conn)

    @staticmethod
    async def _alive(conn: Any) -> Any:
        """The connection if a PING still goes through, else None (after a Redis restart, say).

        Checked before a batch is sent, never after: a batch whose replies were lost has an
        unknown outcome and is failed, not resent.
        """
        try:
            await conn.send_command("PING", check_health=False)
            await conn.read_response()
            return conn
        except Exception:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            return None

    async def _load_scripts(self, conn: Any) -> None:
        for text in self._texts.values():
            await conn.send_command("SCRIPT", "LOAD", text)
            await conn.read_response()

    @staticmethod
    def _fail(batch: list[_Publish], reason: str) -> None:
        for item in batch:
            item.fail(reason)


class ScriptArgs:
    """What every publish script call shares: the default history, epochs, the idempotency TTL."""

    def __init__(self, default: HistoryOptions, epochs: EpochSource, idempotency_ttl: float) -> None:
        self.default, self.ttls, self.epochs = default, whole_seconds(default), epochs
        self.idempotency_ms = str(math.ceil(idempotency_ttl * 1000))


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """``script`` (PUBLISH_SCRIPT, PUBLISH_ONCE_SCRIPT, or None for a bare publish of args[0])."""

    script: str | None
    keys: tuple[str, ...]
    args: tuple[Any, ...]


def script_call(
    channel: str, head: bytes, frame: bytes, opts: HistoryOptions, key: str | None, shared: ScriptArgs
) -> ScriptCall:
    """How one publish is sent: which script, with which keys (all in the channel's slot) and args.
    The Redis Cluster broker sends the same calls through the sharded variants of the scripts."""
    if not opts.enabled:
        envelope = pack(head, frame)
        if key is None:
            return ScriptCall(None, (), (envelope,))
        return ScriptCall(
            PUBLISH_ONCE_SCRIPT, (idempotency_key(channel, key),), (channel, envelope, shared.idempotency_ms)
        )
    meta, stream = history_keys(channel)
    ttl, meta_ttl = shared.ttls if opts is shared.default else whole_seconds(opts)
    args = (shared.epochs(), meta_ttl, channel, head, frame, opts.size, ttl)
    if key is None:
        return ScriptCall(PUBLISH_SCRIPT, (meta, stream), args)
    return ScriptCall(PUBLISH_SCRIPT, (meta, stream, idempotency_key(channel, key)), (*args, shared.idempotency_ms))


def resp(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands as one RESP write: what redis-py's ``pack_commands`` sends, without its encoder
    object, per-argument type dispatch and buffer chunking (about 5 % of a rooms instance's CPU).
    Arguments are bytes, str (UTF-8) or int, as ``_command`` builds them."""
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


def whole_seconds(opts: HistoryOptions) -> tuple[str, str]:
    """EXPIRE takes whole seconds; rounding up never shortens a promise."""
    return str(math.ceil(opts.ttl)), str(math.ceil(opts.meta_ttl))


class _Publish:
    __slots__ = ("channel", "done", "frame", "head", "history", "idempotency_key")

    def __init__(
        self,
        channel: str,
        head: bytes,
        frame: bytes,
        done: asyncio.Future[Position | None],
        history: HistoryOptions,
        idempotency_key: str | None,
    ) -> None:
        self.channel, self.head, self.frame, self.done = channel, head, frame, done
        self.history, self.idempotency_key = history, idempotency_key

    def fail(self, reason: str, kind: type[BrokerUnavailable] = BrokerUnavailable) -> None:
        if not self.done.done():
            self.done.set_exception(kind(reason))


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
