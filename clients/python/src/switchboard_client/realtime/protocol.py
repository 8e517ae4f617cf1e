"""``Client``: the ``/ws`` protocol in async Python, many channels on one reconnecting socket.

    async with Client("ws://127.0.0.1:8000/ws", token=get_token) as client:
        news = await client.subscribe("news:eu")
        offset = await client.publish("chat:lobby", {"text": "hi"})
        async for pub in news:
            print(pub.offset, pub.data)

* Reconnects with the same full-jitter backoff as ``SwitchboardClient`` and stops on a terminal
  close code (``is_terminal``: 1003, 1008, and the server's 4xxx codes but 4000-4002, such as 4003
  from the server API's ``disconnect``): retrying with the same token cannot help.
* After a reconnect every subscription is resumed from its own last offset (``since``/``epoch``):
  the server pushes what it missed, in order, then live publications. If history could not cover
  the gap, ``Subscription.lost`` says why: resync that channel from your own source of truth.
* ``url`` may be a function (sync or async) called before every connect, to rotate servers.
* ``token`` (a string, or a function, sync or async) goes in ``connect``, never in the URL. A
  function is called again before the token expires, and the fresh token is sent as ``refresh``.
* ``rpc(method, data)`` asks your backend through the server (docs/proxies.md) and returns its data.
* ``publish`` waits for the server's acknowledgement and returns the offset. While disconnected it
  waits (bounded by ``queue_limit`` commands) for the next connection. A publish whose connection
  died before its reply raises ``ConnectionError``: it may or may not have been published.
* The server API reaches this client too: ``send`` lands in ``client.messages``, and a server-side
  ``subscribe`` adds a subscription (``client.subscriptions[channel]``), resumed like the others.
* Publications wait in a bounded buffer per subscription; a consumer that stops reading stops the
  socket being read, so the server, not this process, decides when it is too slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from switchboard_client.realtime.channel import backoff_delay, is_terminal
from switchboard_client.realtime.subscription import CommandError, Publication, Subscription

TokenSource = str | Callable[[], str | Awaitable[str]] | None
UrlSource = str | Callable[[], str | Awaitable[str]]
# Refresh this long before the token expires (a short-lived token: at 80% of its life).
REFRESH_MARGIN = 30.0


class Client:
    def __init__(
        self,
        url: UrlSource,
        *,
        token: TokenSource = None,
        base_delay: float = 0.5,
        max_delay: float = 15.0,
        queue_limit: int = 1000,
        buffer: int = 10_000,
        reply_timeout: float = 10.0,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.base_delay, self.max_delay = base_delay, max_delay
        self.reply_timeout = reply_timeout
        self.connect_options = connect_options or {}
        self.subscriptions: dict[str, Subscription] = {}
        self.client_id: str | None = None
        self.connections = 0
        self.close_codes: list[int | None] = []
        self.connected = asyncio.Event()
        self._buffer = buffer
        self._slots = asyncio.Semaphore(queue_limit)
        self._ws: ClientConnection | None = None
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._changed = asyncio.Condition()
        # Messages the server API sent to this user (``send``), in order; bounded like the rest.
        self.messages: asyncio.Queue[Any] = asyncio.Queue(maxsize=buffer)

    async def __aenter__(self) -> Client:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="switchboard-protocol-client")

    async def close(self) -> None:
        for task in (self._refresher, self._runner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._ws is not None:
            await self._ws.close()
        self._end(EOFError("client closed"))

    # -- commands -------------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> Subscription:
        """Subscribe now (raises CommandError if refused); resumed by itself after reconnects."""
        if channel in self.subscriptions:
            return self.subscriptions[channel]
        # Registered first: publications recovered for it may arrive before the reply. Not
        # active until that reply, so a reconnect meanwhile does not subscribe it twice.
        sub = self.subscriptions[channel] = Subscription(self, channel, self._buffer)
        try:
            self._subscribed(sub, await self.call("subscribe", **self._resume_fields(sub)))
        except BaseException:
            del self.subscriptions[channel]
            raise
        async with self._changed:
            self._changed.notify_all()
        return sub

    async def subscribed(self, channel: str) -> Subscription:
        """Wait until ``channel`` is subscribed: by this client, or by the server API for it."""
        async with self._changed:
            await self._changed.wait_for(lambda: channel in self.subscriptions and self.subscriptions[channel].active)
        return self.subscriptions[channel]

    async def unsubscribe(self, channel: str) -> None:
        sub = self.subscriptions.pop(channel, None)
        if sub is not None:
            with contextlib.suppress(ConnectionError):
                await self.call("unsubscribe", channel=channel)
            with contextlib.suppress(asyncio.QueueFull):
                sub._queue.put_nowait(EOFError("unsubscribed"))

    async def publish(self, channel: str, data: Any) -> int:
        """Publish and wait for the server to store it; returns its offset (0 without history)."""
        reply = await self.call("publish", channel=channel, data=data)
        offset: int = reply["offset"]
        return offset

    async def history(self, channel: str, **fields: Any) -> dict[str, Any]:
        return await self.call("history", channel=channel, **fields)

    async def rpc(self, method: str, data: Any = None) -> Any:
        """Ask the server's backend (its rpc proxy or ``on_rpc`` hook); its answer's ``data``."""
        return (await self.call("rpc", method=method, data=data)).get("data")

    async def presence_stats(self, channel: str) -> dict[str, Any]:
        return await self.call("presence_stats", channel=channel)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command once connected and return its ok reply; CommandError on an error reply."""
        async with self._slots:
            await self.connected.wait()
            return await self._send_command(op, fields)

    async def _send_command(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        self._ids += 1
        cmd_id = self._ids
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cmd_id] = future
        try:
            await ws.send(orjson.dumps({"id": cmd_id, "op": op, **fields}).decode())
            async with asyncio.timeout(self.reply_timeout):
                reply = await future
        except ConnectionClosed:
            raise ConnectionError("connection lost before the reply") from None
        finally:
            self._waiting.pop(cmd_id, None)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise CommandError(int(error.get("code", 100)), str(error.get("message", "")))
        return reply

    @staticmethod
    def _resume_fields(sub: Subscription) -> dict[str, Any]:
        fields: dict[str, Any] = {"channel": sub.channel}
        if sub.position is not None:
            fields["since"], fields["epoch"] = sub.position
        return fields

    @staticmethod
    def _subscribed(sub: Subscription, reply: dict[str, Any]) -> None:
        sub.active = True
        if reply.get("recovered") is False:
            sub.lost = str(reply.get("reason"))
        sub._moved(int(reply.get("offset") or 0), str(reply.get("epoch") or ""))

    # -- connection -----------------------------------------------------------------------------

    async def _token(self) -> str | None:
        return await _resolve(self.token)

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                try:
                    url = await _resolve(self.url)
                    assert url is not None
                    async with connect(url, open_timeout=10, close_timeout=2, **self.connect_options) as ws:
                        await self._session(ws)
                        attempt = 0
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, ConnectionError, CommandError):
                    pass
                finally:
                    self._disconnected()
                rcvd = self._ws.protocol.close_rcvd if self._ws is not None else None
                self.close_codes.append(rcvd.code if rcvd is not None else None)
                self._ws = None
                if is_terminal(self.close_codes[-1]):
                    self._end(ConnectionError(f"refused by the server ({self.close_codes[-1]})"))
                    return
                await asyncio.sleep(backoff_delay(attempt, self.base_delay, self.max_delay))
                attempt += 1
        finally:
            self._stopped.set()

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.connections += 1
        reader = asyncio.create_task(self._read(ws))
        try:
            token = await self._token()
            try:
                reply = await self._send_command("connect", {"token": token} if token else {})
            except CommandError:
                # The server closes after refusing a connect (1008, or 4004 after error 106), and
                # its close code decides whether to retry. Leaving the `async with` now would close
                # first, with 1011, and turn a terminal refusal into a retry.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.reply_timeout):
                        await ws.wait_closed()
                raise
            self.client_id = reply["client"]
            self._schedule_refresh(reply.get("expires"))
            # Resume every channel from its own position before anything else is sent.
            active = [sub for sub in self.subscriptions.values() if sub.active]
            await asyncio.gather(*(self._resume_one(sub) for sub in active))
            self.connected.set()
            await reader
        finally:
            reader.cancel()

    async def _resume_one(self, sub: Subscription) -> None:
        try:
            self._subscribed(sub, await self._send_command("subscribe", self._resume_fields(sub)))
        except CommandError as exc:  # refused now (a permission revoked): the iterator raises it
            self.subscriptions.pop(sub.channel, None)
            await sub._put(exc)

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = orjson.loads(raw)
            if "id" in frame:
                future = self._waiting.get(frame["id"])
                if future is not None and not future.done():
                    future.set_result(frame)
                continue
            op = frame.get("op")
            if op == "ping":
                await ws.send('{"op":"pong"}')
            elif op == "pub" and (sub := self.subscriptions.get(frame.get("channel", ""))) is not None:
                offset, epoch = int(frame.get("offset") or 0), str(frame.get("epoch") or "")
                sub._moved(offset, epoch)
                pub = Publication(sub.channel, frame.get("data"), offset, epoch, frame.get("info"))
                await sub._put(pub)
            elif op == "recovered" and (sub := self.subscriptions.get(frame.get("channel", ""))) is not None:
                sub.lost = str(frame.get("reason"))
                sub._moved(int(frame.get("offset") or 0), str(frame.get("epoch") or ""))
            else:
                await self._server_push(op, frame)

    async def _server_push(self, op: object, frame: dict[str, Any]) -> None:
        """What the server API sends: a message to this user, subscriptions made or ended for it."""
        channel = str(frame.get("channel", ""))
        if op == "message":
            await self.messages.put(frame.get("data"))
        elif op == "sub" and channel:
            sub = self.subscriptions.get(channel)
            if sub is None:
                sub = self.subscriptions[channel] = Subscription(self, channel, self._buffer)
            sub.active = True
            sub._moved(int(frame.get("offset") or 0), str(frame.get("epoch") or ""))
            async with self._changed:
                self._changed.notify_all()
        elif op == "unsub" and (sub := self.subscriptions.pop(channel, None)) is not None:
            await sub._put(EOFError(f"unsubscribed by the server: {frame.get('reason')}"))

    def _schedule_refresh(self, expires: object) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if isinstance(expires, int | float) and callable(self.token):
            self._refresher = asyncio.create_task(self._refresh_at(float(expires)))

    async def _refresh_at(self, expires: float) -> None:
        while True:
            left = expires - time.time()
            # REFRESH_MARGIN early, or at 80% of a short token's life; never in a tight loop.
            await asyncio.sleep(max(0.5, left - min(REFRESH_MARGIN, left * 0.2)))
            try:
                reply = await self._send_command("refresh", {"token": await self._token()})
            except (CommandError, ConnectionError, TimeoutError):
                return  # the server closes with 4002 later; the reconnect brings a fresh token
            expires = float(reply["expires"])

    def _disconnected(self) -> None:
        self.connected.clear()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost before the reply"))
        self._waiting.clear()

    def _end(self, error: BaseException) -> None:
        for sub in self.subscriptions.values():
            with contextlib.suppress(asyncio.QueueFull):
                sub._queue.put_nowait(error)


async def _resolve(source: str | Callable[[], str | Awaitable[str]] | None) -> str | None:
    if source is None or isinstance(source, str):
        return source
    found = source()
    return found if isinstance(found, str) else await found
