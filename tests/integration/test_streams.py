"""``/sse`` and ``/stream`` against two real instances and redis: curl, a Python SSE reader,
resume with ``Last-Event-ID`` across instances, the gap report, refusals, keep-alives, the
slow-consumer bound (with the process's RSS), and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.auth import mint_token
from app.config import Settings
from tests.integration.conftest import Cluster, token
from tests.sse import Reader, events, next_data
from tests.support import API_HEADERS, TEST_SECRET

CONFIG = """
[default]
subscribe = "public"
publish = "subscribers"

[namespaces.feed]
subscribe = "public"
publish = "server"
history_size = 1000

[namespaces.short]
subscribe = "public"
publish = "server"
history_size = 5

[namespaces.team]
subscribe = "granted"
publish = "server"
"""
QUEUE = 8
PAYLOAD = "x" * 32_000


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    config = tmp_path_factory.mktemp("streams") / "switchboard.toml"
    config.write_text(CONFIG)
    return {
        "SWITCHBOARD_CONFIG": str(config),
        "SWITCHBOARD_PING_INTERVAL": "1",
        "SWITCHBOARD_SEND_QUEUE_SIZE": str(QUEUE),
        "SWITCHBOARD_USER_CONNECTION_LIMIT": "2",
    }


async def publish(http: httpx.AsyncClient, base: str, channel: str, n: int, **extra: object) -> None:
    body = {"channel": channel, "data": {"n": n, **extra}}
    response = await http.post(f"{base}/api/v1/publish", json=body, headers=API_HEADERS)
    assert response.status_code == 200, response.text


def metric(base: str, name: str, labels: str = "") -> float:
    text = httpx.get(base + "/metrics", timeout=5).text
    match = re.search(rf"^{name}(?:{{[^}}]*{labels}[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling what another task collects
    assert predicate(), what


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert found is not None
    return int(found.group(1))


async def test_curl_reads_an_sse_stream_and_the_query_token_never_reaches_the_log(cluster: Cluster) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is required"
    secret = token("carol")
    url = f"{cluster.a.http}/sse?channel=feed:curl&token={secret}"
    proc = await asyncio.create_subprocess_exec(curl, "-sN", "--max-time", "20", url, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(15):
            lines = [await proc.stdout.readline() for _ in range(3)]  # retry:, blank, first data:
            assert lines[0].startswith(b"retry: ")
            assert orjson.loads(lines[2].removeprefix(b"data: "))["op"] == "subscribed"
            await publish(http, cluster.b.http, "feed:curl", 1)
            while not (line := await proc.stdout.readline()).startswith(b'data: {"op":"pub"'):
                assert line, "curl's stream ended"
            pub = orjson.loads(line.removeprefix(b"data: "))
            assert (pub["channel"], pub["data"]) == ("feed:curl", {"n": 1})
            assert (await proc.stdout.readline()) == b"id: %d.%s\n" % (pub["offset"], pub["epoch"].encode())
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    log = cluster.a.log_text()
    assert "GET /sse?channel=feed:curl&token=[redacted]" in log
    assert secret not in log


async def test_resume_with_last_event_id_on_the_other_instance_loses_and_repeats_nothing(cluster: Cluster) -> None:
    channels = ["feed:r1", "feed:r2"]
    query = "&".join(f"channel={c}" for c in channels)
    async with httpx.AsyncClient(timeout=10) as http:
        reader = Reader(f"{cluster.a.http}/sse?{query}")
        async with http.stream("GET", reader.url) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            stream = events(response)
            for n in range(10):
                await publish(http, cluster.b.http, channels[n % 2], n)
            async for event in stream:
                if event.data is not None and event.data["op"] == "pub":
                    reader.numbers.append(event.data["data"]["n"])
                    reader.last_id = event.id
                    if len(reader.numbers) == 6:
                        break
        # Disconnected after 6 of 10; 10 more are published meanwhile.
        for n in range(10, 20):
            await publish(http, cluster.b.http, channels[n % 2], n)
        resumed = Reader(f"{cluster.b.http}/sse?{query}", last_id=reader.last_id).start()
        try:
            await asyncio.wait_for(resumed.connected.wait(), 20)
            for n in range(20, 24):
                await publish(http, cluster.a.http, channels[n % 2], n)
            await eventually(lambda: len(resumed.numbers) >= 18, "the missed and the live publications")
        finally:
            await resumed.stop()
    got = reader.numbers + resumed.numbers
    # Exactly once each; in order within each channel (a resume replays one channel after another).
    assert sorted(got) == list(range(24))
    assert [n for n in got if n % 2 == 0] == list(range(0, 24, 2))
    assert [n for n in got if n % 2 == 1] == list(range(1, 24, 2))
    notices = [e for e in resumed.seen if e["op"] == "subscribed"]
    assert [(e["channel"], e["recovered"], e["count"]) for e in notices] == [
        (channels[0], True, 7),
        (channels[1], True, 7),
    ]


async def test_ndjson_stream_resumes_from_the_cursor_of_its_last_line(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for n in range(3):
            await publish(http, cluster.a.http, "feed:nd", n)
        seen: list[dict[str, Any]] = []
        async with http.stream("GET", f"{cluster.a.http}/stream?channel=feed:nd&cursor=0.") as response:
            assert response.headers["content-type"] == "application/x-ndjson; charset=utf-8"
            async for line in response.aiter_lines():
                seen.append(orjson.loads(line))
                if seen[-1]["op"] == "subscribed":
                    break
        assert [item["data"]["n"] for item in seen[:3]] == [0, 1, 2]
        cursor = seen[-1]["cursor"]
        await publish(http, cluster.a.http, "feed:nd", 3)
        async with http.stream("GET", f"{cluster.b.http}/stream", params={"channel": "feed:nd", "cursor": cursor}) as r:
            lines = r.aiter_lines()
            pub = orjson.loads(await anext(lines))
            notice = orjson.loads(await anext(lines))
    assert (pub["data"], pub["cursor"]) == ({"n": 3}, f"{pub['offset']}.{pub['epoch']}")
    assert (notice["op"], notice["recovered"], notice["count"]) == ("subscribed", True, 1)


async def test_a_gap_history_no_longer_covers_is_reported_as_an_event(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        await publish(http, cluster.a.http, "short:gap", 0)
        async with http.stream("GET", f"{cluster.a.http}/sse?channel=short:gap") as response:
            first = await next_data(events(response))
        stale = first.id
        assert stale is not None
        for n in range(1, 12):  # history keeps 5
            await publish(http, cluster.a.http, "short:gap", n)
        async with http.stream("GET", f"{cluster.b.http}/sse?channel=short:gap", headers={"Last-Event-ID": stale}) as r:
            got = [(await next_data(events(r))).data]
    assert (got[0]["op"], got[0]["recovered"]) == ("subscribed", False)
    assert (got[0]["reason"], got[0]["offset"]) == ("history too short", 12)


async def test_keepalive_comments_come_at_the_ping_interval(cluster: Cluster) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", f"{cluster.a.http}/sse?channel=feed:idle") as r,
    ):
        comments = 0
        async with asyncio.timeout(8):
            async for event in events(r):
                comments += event.comment == "ping"
                if comments == 2:
                    break
    assert comments == 2


async def test_refusals_are_http_statuses_with_the_protocol_error_codes(cluster: Cluster) -> None:
    base = cluster.a.http
    granted = mint_token(Settings(jwt_secret=TEST_SECRET), "dana", channels=["team:blue", "team:g*"])
    cases = [
        ("/sse", {}, 400, 107),  # no channel
        ("/sse?channel=feed:x", {"Authorization": "Bearer nonsense"}, 401, 101),
        ("/sse?channel=nope:x", {}, 404, 102),
        ("/sse?channel=team:red", {}, 403, 103),
        ("/sse?channel=feed:x", {"Last-Event-ID": "1.abc,2.abc"}, 400, 107),  # two positions, one channel
        ("/stream?channel=feed:x&cursor=5", {}, 400, 107),
        ("/sse?channel=team:red", {"Authorization": f"Bearer {granted}"}, 403, 103),
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        posted = await http.post(base + "/sse?channel=feed:x")
        assert (posted.status_code, posted.headers["allow"], posted.json()["error"]["code"]) == (405, "GET", 107)
        for path, headers, status, code in cases:
            response = await http.get(base + path, headers=headers)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), path
        # The claim names the channels (patterns are grants, not names): team:blue only.
        async with http.stream("GET", base + "/sse", headers={"Authorization": f"Bearer {granted}"}) as ok:
            assert ok.status_code == 200
            stream = events(ok)
            assert (await next_data(stream)).data["channel"] == "team:blue"
            # The per-user limit (2 here) counts streams like sockets, cluster-wide.
            async with http.stream(
                "GET", cluster.b.http + "/sse?channel=feed:x", headers={"Authorization": f"Bearer {granted}"}
            ) as second:
                assert second.status_code == 200
                third = await http.get(base + "/sse?channel=feed:x", headers={"Authorization": f"Bearer {granted}"})
                assert (third.status_code, third.json()["error"]["code"]) == (429, 106)


async def test_a_reader_that_stops_is_cut_off_at_the_queue_bound_and_its_memory_stays_bounded(
    cluster: Cluster,
) -> None:
    app, messages = cluster.a, 600  # 600 x 32 KB: 19 MB that an unbounded backlog would hold
    assert app.proc is not None
    cut_before = metric(app.http, "switchboard_slow_consumer_disconnects_total")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", app.port))
    stalled.sendall(b"GET /sse?channel=feed:firehose HTTP/1.1\r\nHost: test\r\n\r\n")  # and never reads
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", f"{app.http}/sse?channel=feed:firehose") as fast,
    ):
        stream = events(fast)
        await next_data(stream)  # subscribed
        await eventually(lambda: metric(app.http, "switchboard_connections", 'endpoint="sse"') == 2, "both in")
        rss_before = rss_kb(app.proc.pid)

        async def publish_all() -> None:
            for n in range(messages):
                await publish(http, cluster.b.http, "feed:firehose", n, pad=PAYLOAD)

        async def read_all() -> list[int]:
            return [(await next_data(stream)).data["data"]["n"] for _ in range(messages)]

        _, seen = await asyncio.gather(publish_all(), read_all())
        rss_after = rss_kb(app.proc.pid)
        # The reader that reads got everything, in order, while the other one backed up.
        assert seen == list(range(messages))
        assert metric(app.http, "switchboard_slow_consumer_disconnects_total") == cut_before + 1
        assert metric(app.http, "switchboard_connections", 'endpoint="sse"') == 1
    # Bounded: the stalled stream held its queue (8 messages) and a transport buffer, not 19 MB.
    assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
    # It now reads: a prefix of the stream, in order, then the connection is gone.
    stalled.settimeout(5)
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := stalled.recv(1 << 16):
            received += chunk
    stalled.close()
    got = [int(n) for n in re.findall(rb'"data":\{"n":(\d+)', received)]
    assert got == list(range(len(got)))
    assert len(got) < messages // 2  # what the kernel's socket buffers held when it was cut
