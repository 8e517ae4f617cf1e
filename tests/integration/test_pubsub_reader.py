"""app/broker/pubsub_reader.py against a real redis-server: order, chunking, loss."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.connection import Connection

from app.broker.pubsub_reader import PubSubReader, pack
from tests.support import RedisServer

pytestmark = pytest.mark.timeout(60)


async def open_reader(redis_server: RedisServer, replies: list[Any]) -> PubSubReader:
    connection = Connection(host="127.0.0.1", port=redis_server.port, client_name="reader-test")
    await connection.connect()  # type: ignore[no-untyped-call]
    return PubSubReader.take_over(connection, replies.append)


async def wait_for_count(replies: list[Any], count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while len(replies) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(replies)} of {count} replies"
        await asyncio.sleep(0.01)


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert pack("SUBSCRIBE", "a", b"\xff") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\n\xff\r\n"


async def test_every_message_arrives_once_and_in_order(redis_server: RedisServer) -> None:
    replies: list[Any] = []
    reader = await open_reader(redis_server, replies)
    reader.send("SUBSCRIBE", "news", "sport")
    await wait_for_count(replies, 2)
    assert replies == [[b"subscribe", b"news", 1], [b"subscribe", b"sport", 2]]
    publisher = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port)
    async with publisher.pipeline(transaction=False) as pipe:
        for n in range(2000):
            pipe.publish("news" if n % 2 else "sport", b"x" * (n % 300) + str(n).encode())
        assert sum(await pipe.execute()) == 2000
    await wait_for_count(replies, 2002)
    got = [(r[1], int(r[2].lstrip(b"x"))) for r in replies[2:]]
    assert got == [(b"news" if n % 2 else b"sport", n) for n in range(2000)]
    assert redis_server.client().client_list(_type="pubsub")[0]["name"] == "reader-test"
    reader.close()
    await publisher.aclose()


async def test_a_reply_split_anywhere_is_handed_over_whole() -> None:
    replies: list[Any] = []
    reader = PubSubReader(replies.append)
    wire = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n" * 2
    for i in range(len(wire)):
        reader.data_received(wire[i : i + 1])
    assert replies == [[b"message", b"news", b"hello"]] * 2


async def test_a_handler_error_does_not_stop_the_next_reply() -> None:
    seen: list[Any] = []

    def handle(reply: Any) -> None:
        seen.append(reply)
        if len(seen) == 1:
            raise RuntimeError("boom")

    reader = PubSubReader(handle)
    reader.data_received(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\n1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\n2\r\n")
    assert [r[2] for r in seen] == [b"1", b"2"]


async def test_a_killed_connection_resolves_lost(redis_server: RedisServer) -> None:
    replies: list[Any] = []
    reader = await open_reader(redis_server, replies)
    reader.send("SUBSCRIBE", "news")
    await wait_for_count(replies, 1)
    redis_server.client().client_kill_filter(_type="pubsub")
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(reader.lost, 5)
    with pytest.raises(ConnectionError):
        reader.send("SUBSCRIBE", "again")


async def test_garbage_on_the_wire_resolves_lost() -> None:
    reader = PubSubReader(lambda reply: None)
    reader.data_received(b"?not resp\r\n")
    with pytest.raises(ConnectionError, match="protocol error"):
        await asyncio.wait_for(reader.lost, 1)
