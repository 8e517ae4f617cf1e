"""Questions every instance answers about its own connections: the server API's ``top_channels``
and ``user_connections``.

No instance knows another's sockets, and keeping a cluster-wide copy of them in Redis would cost a
write per connection and per subscribe. So a question is asked when someone asks it: ONE message
on the ``switchboard:queries`` control channel; every instance (the asker too), and each of its
gunicorn workers, answers from its own memory, bounded, with an ``RPUSH`` to a reply list named
in the question; the asker pops answers until every instance that ``info`` lists has answered
from all its workers, or ``DEADLINE`` passes. A reply
says which instances did not answer in time (``missing``), so a partial view is never passed off
as whole. With the memory broker the process is the cluster and answers itself.

The asker's BLPOP holds a connection of the broker's bounded pool (the one publishes use) for up
to ``DEADLINE``, so at most ``AT_ONCE`` questions a process are waited on at a time; another waits
for its turn within the deadline, and is then refused 111 (the server API's 429). An answer that
cannot be read (a rolling upgrade's other shape) is counted, logged and skipped: its instance is
reported ``missing``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any

import orjson
from redis.exceptions import RedisError

from app import admission, metrics
from app.broker import BrokerUnavailable
from app.broker.redis_target import RedisClient
from app.errors import ErrorCode, ProtocolError
from app.hub import NO_HISTORY, Hub
from app.instances import Instances
from app.protocol import header
from app.users import Users

log = logging.getLogger("switchboard.queries")

QUERIES = "switchboard:queries"
REPLY_PREFIX = "switchboard:query-reply:"
DEADLINE = 2.0  # seconds an asker waits for the slowest instance
REPLY_TTL = 10  # seconds a reply list outlives a question nobody waits for any more
LOCAL_LIMIT = 100  # channels (by subscribers, and by rate) or connections each instance reports
CHANNELS_SHOWN = 50  # of a user connection's channels
AT_ONCE = 2  # questions a process waits on at once: each holds a pooled Redis connection
BUSY = "too many cluster questions at once: try again"


def local_channels(hub: Hub) -> list[dict[str, Any]]:
    """This instance's busiest channels: the top ``LOCAL_LIMIT`` by subscribers and by rate."""
    now = time.perf_counter()
    rows: list[dict[str, Any]] = [
        {"channel": name, "subscribers": len(ch.members), "rate": round(ch.rate(now), 3)}
        for name, ch in tuple(hub.local_channels())
    ]
    by_subscribers = sorted(rows, key=lambda r: -int(r["subscribers"]))[:LOCAL_LIMIT]
    by_rate = sorted(rows, key=lambda r: -float(r["rate"]))[:LOCAL_LIMIT]
    chosen = {r["channel"]: r for r in (*by_subscribers, *by_rate)}
    return list(chosen.values())


def local_connections(users: Users, user: str, instance: str) -> list[dict[str, Any]]:
    found = []
    for session in tuple(users.sessions_of(user))[:LOCAL_LIMIT]:
        channels = sorted(session.subscriptions)
        found.append(
            {
                "client": session.client,
                "instance": instance,
                "endpoint": session.conn.endpoint,
                "channels": channels[:CHANNELS_SHOWN],
                "channel_count": len(channels),
            }
        )
    return found


# The fields of each kind's rows that the merging and sorting read, with their types.
SHAPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "channels": {"channel": str, "subscribers": int, "rate": (int, float)},
    "user": {"client": str, "instance": str, "endpoint": str, "channels": list, "channel_count": int},
}


def readable(kind: str, rows: object) -> bool:
    """Whether an answer's rows have the shape this version reads for ``kind``."""
    if not isinstance(rows, list):
        return False
    shape = SHAPES.get(kind, {})
    return all(isinstance(row, dict) and all(isinstance(row.get(k), t) for k, t in shape.items()) for row in rows)


def merge_channels(answers: list[list[dict[str, Any]]], sort: str, limit: int) -> list[dict[str, Any]]:
    """Subscribers add up across instances; the rate is the same publications seen on each
    instance that delivers them, so the cluster's is the highest, not the sum."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in answers:
        for row in rows:
            seen = merged.setdefault(row["channel"], {"channel": row["channel"], "subscribers": 0, "rate": 0.0})
            seen["subscribers"] += int(row["subscribers"])
            seen["rate"] = max(seen["rate"], float(row["rate"]))
    key = "rate" if sort == "rate" else "subscribers"
    return sorted(merged.values(), key=lambda r: (-r[key], r["channel"]))[:limit]


class ClusterQuery:
    def __init__(self, hub: Hub, users: Users, instances: Instances, client: RedisClient | None, instance: str) -> None:
        self._hub, self._users, self._instances = hub, users, instances
        self._client = client
        self._instance = instance
        self._tasks: set[asyncio.Task[None]] = set()
        self._turns = asyncio.Semaphore(AT_ONCE)

    async def start(self) -> None:
        if self._client is not None:
            await self._hub.add_control(QUERIES, self.on_query)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def answer(self, kind: str, question: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "channels":
            return local_channels(self._hub)
        if kind == "user":
            return local_connections(self._users, str(question.get("user", "")), self._instance)
        return []  # a kind from a newer version, during a rolling upgrade: answered, empty

    async def ask(self, kind: str, **question: Any) -> tuple[list[list[dict[str, Any]]], list[str]]:
        """Every instance's answer, and the ids of live instances that did not answer in time.

        Raises BrokerUnavailable, or ProtocolError (111) when ``AT_ONCE`` questions are waited on
        already and none ends within the deadline.
        """
        if self._client is None:
            return [self.answer(kind, question)], []
        try:
            await asyncio.wait_for(self._turns.acquire(), DEADLINE)
        except TimeoutError:
            raise ProtocolError(ErrorCode.TOO_MANY_REQUESTS, BUSY) from None
        try:
            return await self._ask(kind, question)
        finally:
            self._turns.release()

    async def _ask(self, kind: str, question: dict[str, Any]) -> tuple[list[list[dict[str, Any]]], list[str]]:
        assert self._client is not None
        expected = {str(entry["id"]) for entry in await self._instances.list()}
        reply = REPLY_PREFIX + uuid.uuid4().hex
        frame = orjson.dumps({"kind": kind, "reply": reply, **question})
        await self._hub.broker.publish(QUERIES, header(), frame, NO_HISTORY)
        answers: list[list[dict[str, Any]]] = []
        # Under gunicorn an instance is several worker processes, each with its own sockets, and
        # each answers: an instance is complete once as many of its workers as it runs have.
        workers: dict[str, set[int]] = {name: set() for name in expected}
        running: dict[str, int] = dict.fromkeys(expected, 1)

        def short() -> list[str]:
            return sorted(name for name, seen in workers.items() if len(seen) < running[name])

        deadline = time.monotonic() + DEADLINE
        try:
            while short() and (left := deadline - time.monotonic()) > 0:
                popped = await self._client.blpop([reply], timeout=max(0.01, left))
                if popped is None:
                    break
                try:
                    found = orjson.loads(popped[1])
                    name, worker, count = str(found["instance"]), int(found["worker"]), int(found["workers"])
                    rows = found["rows"]
                    if not readable(kind, rows):
                        raise TypeError("rows")
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    metrics.LISTENER_ERRORS.inc()
                    log.warning("skipped an unreadable answer to a cluster query")
                    continue
                workers.setdefault(name, set()).add(worker)
                running[name] = max(running.get(name, 1), count)
                answers.append(rows)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return answers, short()

    def on_query(self, frame: bytes) -> None:
        try:
            question = orjson.loads(frame)
            kind, reply = str(question["kind"]), str(question["reply"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            metrics.LISTENER_ERRORS.inc()
            log.warning("dropped a malformed cluster query")
            return
        if not reply.startswith(REPLY_PREFIX):
            return  # only a list of ours: the question names the key this instance writes
        answer = {"instance": self._instance, "worker": os.getpid(), "workers": admission.workers()}
        rows = orjson.dumps({**answer, "rows": self.answer(kind, question)})
        task = asyncio.create_task(self._reply(reply, rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, key: str, rows: bytes) -> None:
        assert self._client is not None
        try:
            await self._client.rpush(key, rows)
            await self._client.expire(key, REPLY_TTL)
        except (RedisError, OSError) as exc:
            metrics.LISTENER_ERRORS.inc()
            log.warning("answering a cluster query failed: %s", exc)
