"""What the churn and storm scenarios share: resuming users, a publisher, an echo probe, counts.

Every user holds one resuming socket on a tutorial channel (``/ws/global/{ch}``) or on ``/ws``
(``LOAD_PROTOCOL=ws``), remembers the last ``offset``/``epoch`` it saw, and reconnects with them.
Offsets are consecutive per channel, so a user checks its own stream without knowing what was
published: a skipped offset is a loss, a repeated one a duplicate, a lower one out of order.

Locust statistics (``WS`` requests; failures are the problems):

* ``deliver``: each new message; its time is publish-to-receive latency.
* ``replay``: reconnect started -> ``recovered`` frame (everything missed delivered before it).
* ``lost`` (one per missing message), ``duplicate``, ``out of order``, ``history lost``
  (``recovered`` with ``ok:false``): failures. Zero failures means nothing was lost or repeated.
* ``refused``: a handshake answered 503 (admission control or a draining instance); retried.
* ``echo``: the probe's round trip, on an instance that is not being disturbed.

Environment: LOAD_CHANNELS (default 10), LOAD_PREFIX (channel prefix, default "churn"),
LOAD_RATE (the publisher's messages per second over all channels, default 20), LOAD_API_KEY (or
CLUSTER_DIR/api-key), LOAD_PROTOCOL (``global`` or ``ws``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import gevent
import websocket
from locust import HttpUser, User, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtest.locustfile import source_socket

CHANNELS = int(os.environ.get("LOAD_CHANNELS", "10"))
PREFIX = os.environ.get("LOAD_PREFIX", "churn")
RATE = float(os.environ.get("LOAD_RATE", "20"))
PROTOCOL = os.environ.get("LOAD_PROTOCOL", "global")
CLUSTER_DIR = Path(os.environ.get("CLUSTER_DIR", Path(__file__).resolve().parent.parent / ".cluster"))
_numbers = itertools.count()


@events.init.add_listener
def _one_summary(environment: Environment, **_: Any) -> None:
    # With --processes, every worker also writes --json-file at exit, after its stats went to the
    # master and were reset: an empty list that can land after, and over, the master's summary.
    if isinstance(environment.runner, WorkerRunner) and environment.parsed_options is not None:
        environment.parsed_options.json_file = None


def api_key() -> str:
    key = os.environ.get("LOAD_API_KEY")
    if key:
        return key
    return (CLUSTER_DIR / "api-key").read_text().strip()


def fire(name: str, milliseconds: float, problem: str | None = None, count: int = 1) -> None:
    for _ in range(count):
        events.request.fire(
            request_type="WS",
            name=name,
            response_time=milliseconds,
            response_length=0,
            exception=AssertionError(problem) if problem else None,
            context={},
        )


def ws_url(host: str, path: str) -> str:
    return host.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + path


class ResumingUser(User):
    """One resuming socket, read by its own greenlet; subclasses decide when it drops."""

    abstract = True
    wait_time = constant(1)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.channel = f"{PREFIX}-{next(_numbers) % CHANNELS}"
        self.position: tuple[int, str] | None = None
        self.ws: websocket.WebSocket | None = None
        self.started = 0.0  # when the current connection attempt began
        self.dropped: float | None = None  # when the last connection was lost, until caught up
        self.runner: gevent.Greenlet | None = None
        self.stopping = False

    # -- where to connect -------------------------------------------------------------------------

    def first_url(self) -> str:
        return self.next_url()

    def next_url(self) -> str:
        return ws_url(self.host or "", "/ws" if PROTOCOL == "ws" else f"/ws/global/{self.channel}")

    # -- the connection loop ----------------------------------------------------------------------

    def on_start(self) -> None:
        self.runner = gevent.spawn(self.hold)

    def on_stop(self) -> None:
        # First: the reader must not take our own close for a drop, reconnect, and count it.
        self.stopping = True
        if self.runner is not None:
            self.runner.kill(block=False)
        if self.ws is not None:
            self.ws.close()

    @task
    def idle(self) -> None:
        pass  # the work is the reader greenlet's

    def hold(self) -> None:
        """Keep a connection: reconnect (resuming) whenever it is lost, until the user stops."""
        attempt, url, connected = 0, self.first_url(), False
        while not self.stopping:
            self.away()
            self.started = time.perf_counter()
            try:
                self.ws = self.connect(url)
            except websocket.WebSocketBadStatusException as exc:
                if exc.status_code == 503:
                    fire("refused", (time.perf_counter() - self.started) * 1000)
                attempt += 1
            except Exception:
                attempt += 1
            else:
                attempt, connected = 0, True
                self.read(self.ws)
                self.ws = None
                if self.stopping:
                    return
                if self.dropped is None:
                    self.dropped = time.perf_counter()
            if connected:  # until the first connection, keep trying where the scenario starts
                url = self.next_url()
            # Full jitter, as the package's clients do: a fleet must not come back in lockstep.
            gevent.sleep(random.uniform(0, min(5.0, 0.25 * 2**attempt)))

    def away(self) -> None:
        """Hook: the churn user stays away for its flap here."""

    def connect(self, url: str) -> websocket.WebSocket:
        query: dict[str, Any] = {}
        if self.position is not None and PROTOCOL != "ws":
            query = {"since": self.position[0], "epoch": self.position[1]}
        full = url + ("?" + urlencode(query) if query else "")
        ws = websocket.create_connection(full, timeout=30, **source_socket(full))
        if PROTOCOL == "ws":
            ws.send(json.dumps({"id": 1, "op": "connect"}))
            sub: dict[str, Any] = {"id": 2, "op": "subscribe", "channel": f"global:{self.channel}"}
            if self.position is not None:
                sub.update(since=self.position[0], epoch=self.position[1])
            ws.send(json.dumps(sub))
        ws.settimeout(None)
        return ws

    def read(self, ws: websocket.WebSocket) -> None:
        while True:
            try:
                raw = ws.recv()
            except Exception:
                return
            if not raw:
                return
            frame = json.loads(raw)
            if PROTOCOL == "ws":
                frame = self.unwrap(ws, frame)
                if frame is None:
                    continue
            self.on_frame(frame)

    @staticmethod
    def unwrap(ws: websocket.WebSocket, frame: dict[str, Any]) -> dict[str, Any] | None:
        """A ``/ws`` frame as the tutorial one it carries (the subscribe reply as ``recovered``)."""
        op = frame.get("op")
        if op == "ping":
            ws.send('{"op":"pong"}')
        elif op == "pub":
            data = frame.get("data")
            return data if isinstance(data, dict) else None
        elif frame.get("id") == 2 and frame.get("ok") and "recovered" in frame:
            return {"type": "recovered", "ok": frame["recovered"], "offset": frame["offset"], "epoch": frame["epoch"]}
        elif op == "recovered":
            return {"type": "recovered", **{k: frame.get(k) for k in ("ok", "offset", "epoch")}}
        return None

    def on_frame(self, frame: dict[str, Any]) -> None:
        if self.stopping:
            return
        if frame.get("type") == "recovered":
            now = time.perf_counter()
            fire("replay", (now - self.started) * 1000, None if frame["ok"] else f"history lost: {frame}")
            if self.dropped is not None:
                self.caught_up(now - self.dropped)
                self.dropped = None
            self.position = (int(frame["offset"]), str(frame["epoch"]))
            return
        offset, epoch = frame.get("offset"), frame.get("epoch")
        if not isinstance(offset, int) or not isinstance(epoch, str):
            return  # not a positioned channel message
        if self.position is not None and self.position[1] == epoch:
            last = self.position[0]
            if offset <= last:
                fire("duplicate", 0, f"offset {offset} after {last}")
                return
            if offset > last + 1:
                fire("lost", 0, f"offsets {last + 1}..{offset - 1} skipped", offset - last - 1)
        elif self.position is not None:
            fire("lost", 0, f"epoch changed from {self.position[1]} to {epoch} without a recovered frame")
        self.position = (offset, epoch)
        if self.dropped is not None:  # a fresh connection with nothing to resume: live again
            self.caught_up(time.perf_counter() - self.dropped)
            self.dropped = None
        content = frame.get("content")
        sent = content.get("ts") if isinstance(content, dict) else None
        fire("deliver", max(0.0, (time.time() - sent) * 1000) if isinstance(sent, float) else 0.0)

    def caught_up(self, seconds: float) -> None:
        """Hook: the storm user reports the time from its drop until it was whole again."""

    def drop(self) -> None:
        """Lose the connection as a network would: no close frame, a reset."""
        ws = self.ws
        if ws is None or ws.sock is None:
            return
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.sock.close()


class Publisher(HttpUser):
    """Exactly one: ``LOAD_RATE`` messages a second, round-robin over the channels, by the server
    API; refused publishes (503, 502 while an instance dies) are retried, so none is skipped."""

    fixed_count = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        self.key = api_key()
        self.n = 0
        self.next_at = time.monotonic()

    @task
    def publish(self) -> None:
        gevent.sleep(max(0.0, self.next_at - time.monotonic()))
        self.next_at += 1 / RATE
        channel = f"{PREFIX}-{self.n % CHANNELS}"
        self.n += 1
        body = {"content": {"n": self.n, "ts": time.time()}}
        for _ in range(200):  # 10 s of retries at most
            with self.client.post(
                f"/api/global/{channel}",
                json=body,
                headers={"X-API-Key": self.key},
                name="publish",
                catch_response=True,
            ) as response:
                if response.status_code == 202:
                    response.success()
                    return
                if response.status_code not in (502, 503):
                    response.failure(f"publish refused: {response.status_code}")
                    return
                response.success()  # an instance dying or draining: not published, so retried
            fire("publish retried", 0)
            gevent.sleep(0.05)
        fire("publish", 0, "refused for 10 s")


class EchoProbe(User):
    """Exactly one: an unrelated client's echo round trip, every 100 ms (``PROBE_URL``'s instance)."""

    abstract = True  # the storm scenario enables it; it needs an instance that stays up
    fixed_count = 1
    wait_time = constant(0.1)

    def on_start(self) -> None:
        self.ws = websocket.create_connection(ws_url(os.environ.get("PROBE_URL", self.host or ""), "/ws/echo"))
        self.n = 0

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def echo(self) -> None:
        self.n += 1
        started = time.perf_counter()
        try:
            self.ws.send(str(self.n))
            reply = self.ws.recv()
        except Exception as exc:
            fire("echo", (time.perf_counter() - started) * 1000, f"echo failed: {exc}")
            with contextlib.suppress(Exception):  # reconnect now, or on the next round
                self.ws = websocket.create_connection(ws_url(os.environ.get("PROBE_URL", self.host or ""), "/ws/echo"))
            return
        fire("echo", (time.perf_counter() - started) * 1000, None if reply == f"Echo: {self.n}" else repr(reply))
