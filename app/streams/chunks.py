"""Direct chunked writes for a streaming HTTP response, as the WebSocket fast path writes frames.

``app.server.HttpProtocol`` puts one ``ChunkWriter`` in each HTTP request's scope under FAST_WRITE;
``app.connection.Connection`` uses it for a stream exactly as it uses the WebSocket protocol's:
the bytes of a message go to the transport at once, with no coroutine or task switch per client.
gunicorn's master imports this module (through app.server) first: it must not touch app.metrics.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


class ChunkWriter:
    """FAST_WRITE for a streaming HTTP response (``/sse``, ``/stream``): body pieces written to
    the transport as HTTP/1.1 chunks at once, as the WebSocket fast path writes frames, once the
    response head went through ASGI. Declines (the caller queues, or sends through ASGI) while
    the response is not started, complete, unchunked, or backed up."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    def try_write(self, data: bytes) -> bool:
        c = self._cycle
        if (
            not c.response_started
            or c.response_complete
            or not c.chunked_encoding
            or c.disconnected
            or c.flow.write_paused
            or c.transport.is_closing()
        ):
            return False
        if data:  # an empty chunk would end the body
            c.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        return True

    async def wait_writable(self) -> None:
        c = self._cycle
        if c.flow.write_paused and not c.disconnected:
            await c.flow.drain()

    def abort(self) -> None:
        self._cycle.transport.abort()
