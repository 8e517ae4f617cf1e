"""Locust load test for Switchboard: chat users, room members, global subscribers and a publisher.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080            (web UI)
    make loadtest USERS=200 SPAWN_RATE=50 DURATION=60s                        (headless, vs make cluster)

Plain WebSocket users on websocket-client, which gevent makes cooperative. Every message carries
``{"pub", "seq", "ts"}``: receivers report publish-to-receive latency as a Locust request
("deliver <endpoint>"); a gap in a publisher's sequence is a failure row "lost" (one per missing
message), a repeat or step back one "duplicate". Connect time is reported as "connect <endpoint>".

Environment: LOAD_ROOMS (rooms for room members, default 10), LOAD_CHANNEL (global channel,
default "load"), PUBLISH_RATE (publisher messages per second, default 10).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import gevent
import websocket
from locust import User, between, constant, events, task

ROOMS = int(os.environ.get("LOAD_ROOMS", "10"))
CHANNEL = os.environ.get("LOAD_CHANNEL", "load")
PUBLISH_RATE = float(os.environ.get("PUBLISH_RATE", "10"))
_numbers = itertools.count()
_sources = itertools.count()


def source_socket(url: str) -> dict[str, Any]:
    """On loopback, give each user its own 127.x source address.

    nginx's stickiness hashes the client address, so users all on 127.0.0.1 would all land on one
    instance and the cluster would never carry cross-instance traffic.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.startswith("127.") and host != "localhost":
        return {}
    n = next(_sources)
    sock = socket.socket()
    sock.bind((f"127.0.{1 + n // 250 % 250}.{1 + n % 250}", 0))
    sock.connect((host, parts.port or 80))
    return {"socket": sock}


class SequenceTracker:
    """Per-publisher sequence numbers seen by one socket: gaps are losses, repeats duplicates."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def check(self, pub: str, seq: int) -> tuple[str, int, str] | None:
        """None, or the failure row to report (``lost`` or ``duplicate``), how many, and why."""
        last = self.last.get(pub)
        self.last[pub] = max(seq, last if last is not None else seq)
        if last is None or seq == last + 1:
            return None  # the first message from a publisher is the baseline
        if seq <= last:
            return "duplicate", 1, f"duplicate or reordered: seq {seq} after {last}"
        return "lost", seq - last - 1, f"lost {seq - last - 1} message(s) before seq {seq}"


class WebSocketUser(User):
    """One socket per user, read by its own greenlet so the server never sees a slow consumer."""

    abstract = True
    endpoint = "ws"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.tracker = SequenceTracker()
        self.pub_id = uuid.uuid4().hex[:8]
        self.seq = 0

    def path(self) -> str:
        raise NotImplementedError

    def on_start(self) -> None:
        url = (self.host or "").replace("http://", "ws://").replace("https://", "wss://") + self.path()
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(url, timeout=30, **source_socket(url))
        except Exception as exc:
            self.fire(f"connect {self.endpoint}", started, exc)
            raise
        self.fire(f"connect {self.endpoint}", started)
        self.reader = gevent.spawn(self.read_forever)

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.reader is not None:
            self.reader.kill(block=False)

    def fire(self, name: str, started: float, exc: Exception | None = None, length: int = 0) -> None:
        events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    def read_forever(self) -> None:
        assert self.ws is not None
        while True:
            try:
                raw = self.ws.recv()
            except Exception:
                return  # closed by on_stop, or by the server: the next send reports it
            if raw:
                self.on_frame(json.loads(raw), len(raw))

    def on_frame(self, frame: dict[str, Any], length: int) -> None:
        content = frame.get("content")
        if not isinstance(content, dict) or "seq" not in content:
            return  # join/leave notices and other frames carry no sequence
        latency_ms = max(0.0, (time.time() - content["ts"]) * 1000)
        events.request.fire(
            request_type="WS",
            name=f"deliver {self.endpoint}",
            response_time=latency_ms,
            response_length=length,
            exception=None,
            context={},
        )
        problem = self.tracker.check(content["pub"], content["seq"])
        if problem is not None:  # one failure per missing message, so the summary counts messages
            name, count, why = problem
            for _ in range(count):
                events.request.fire(
                    request_type="WS",
                    name=name,
                    response_time=0,
                    response_length=0,
                    exception=AssertionError(why),
                    context={},
                )

    def send_numbered(self) -> None:
        assert self.ws is not None
        self.seq += 1
        payload = {"content": {"pub": self.pub_id, "seq": self.seq, "ts": time.time()}}
        started = time.perf_counter()
        try:
            self.ws.send(json.dumps(payload))
        except Exception as exc:
            self.fire(f"send {self.endpoint}", started, exc)
            raise
        self.fire(f"send {self.endpoint}", started)


class ChatUser(WebSocketUser):
    endpoint = "chat"
    wait_time = between(1, 3)
    weight = 3

    def path(self) -> str:
        return f"/ws/chat?username=locust-{next(_numbers)}"

    @task
    def say(self) -> None:
        self.send_numbered()


class RoomMember(WebSocketUser):
    endpoint = "room"
    wait_time = between(1, 3)
    weight = 3

    def path(self) -> str:
        return f"/ws/room/load-{next(_numbers) % ROOMS}"

    @task
    def say(self) -> None:
        self.send_numbered()


class GlobalSubscriber(WebSocketUser):
    """Listens only; every frame the publisher sends must arrive exactly once, in order."""

    endpoint = "global"
    wait_time = constant(1)
    weight = 3

    def path(self) -> str:
        return f"/ws/global/{CHANNEL}"

    @task
    def idle(self) -> None:
        pass


class Publisher(WebSocketUser):
    endpoint = "global"
    wait_time = constant(1 / PUBLISH_RATE)
    fixed_count = 1

    def path(self) -> str:
        return f"/ws/global/{CHANNEL}"

    @task
    def publish(self) -> None:
        self.send_numbered()
