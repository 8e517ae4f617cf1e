"""The bounds of the questions every instance answers (app/cluster_query.py): each waits on a
pooled Redis connection, so only a few are waited on at once, and an answer that cannot be read
is skipped rather than taken for a server error."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from app.cluster_query import AT_ONCE, QUERIES
from tests.integration.test_server_api import Three, start_three
from tests.support import API_HEADERS, running, wait_until


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Three]:
    redis_server, apps = start_three(tmp_path_factory.mktemp("three"))
    try:
        with running(*apps):
            yield Three(redis_server, apps)  # type: ignore[arg-type]
    finally:
        redis_server.stop()


def blpops(client: redis.Redis) -> int:
    return sum(1 for entry in client.client_list() if entry.get("cmd") == "blpop")


def test_questions_waited_on_at_once_are_bounded_and_publishes_go_on(three: Three) -> None:
    stopped = three.apps[2]
    assert stopped.proc is not None
    os.kill(stopped.proc.pid, signal.SIGSTOP)  # listed but silent: every question waits 2 s
    client = redis.Redis.from_url(three.redis.url, decode_responses=True)
    most, done = 0, threading.Event()

    def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, blpops(client))
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            asked = [pool.submit(three.call, "top_channels", {}) for _ in range(6)]
            wait_until(lambda: blpops(client) >= 1, 5, "a question waiting on its answers")
            # The broker's pool still has connections for publishes meanwhile.
            assert three.ok("publish", {"channel": "x:meanwhile", "data": 1})["offset"] >= 1
            answers = [future.result() for future in asked]
    finally:
        done.set()
        watcher.join()
        os.kill(stopped.proc.pid, signal.SIGCONT)
    statuses = sorted(response.status_code for response in answers)
    assert 1 <= most <= AT_ONCE
    assert statuses.count(200) >= AT_ONCE
    assert statuses.count(429) >= 1
    assert set(statuses) == {200, 429}
    for response in answers:
        if response.status_code == 200:
            assert response.json()["missing"] == ["c"]
        else:
            assert response.json()["error"]["code"] == 111
    wait_until(lambda: three.ok("top_channels")["missing"] == [], 5, "c answers again")


def test_an_unreadable_answer_is_skipped_not_a_server_error(three: Three) -> None:
    """An answer from a version that writes another shape (a rolling upgrade) is skipped: the
    reply still holds every instance that answered readably, and is never a 500. One instance is
    stopped, so that the question is still waited on when the junk arrives."""
    stopped = three.apps[2]
    assert stopped.proc is not None
    client = redis.Redis.from_url(three.redis.url)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(QUERIES)
    assert pubsub.get_message(timeout=5) is not None  # the subscribe confirmation
    junk = [b"not json", b'{"instance":"z"}', b'{"instance":"z","worker":1,"workers":1,"rows":[{"channel":5}]}']

    def answer_with_junk() -> None:
        message = pubsub.get_message(timeout=5)
        while message is not None and message["type"] != "message":
            message = pubsub.get_message(timeout=5)
        assert message is not None
        reply = message["data"].split(b'"reply":"', 1)[1].split(b'"', 1)[0]
        client.rpush(reply, *junk)

    helper = threading.Thread(target=answer_with_junk)
    helper.start()
    os.kill(stopped.proc.pid, signal.SIGSTOP)
    try:
        response = httpx.post(f"{three.apps[0].http}/api/v1/top_channels", json={}, headers=API_HEADERS, timeout=10)
    finally:
        os.kill(stopped.proc.pid, signal.SIGCONT)
        helper.join()
        pubsub.close()
    assert response.status_code == 200, response.text
    assert (response.json()["answered"], response.json()["missing"]) == (2, ["c"])
    metrics = httpx.get(three.apps[0].http + "/metrics", timeout=5).text
    errors = [line for line in metrics.splitlines() if line.startswith("switchboard_listener_errors_total")]
    assert errors
    assert float(errors[0].split()[-1]) >= len(junk)
