"""How a ``/connection/websocket`` frame becomes commands, per encoding: JSON lines, or
length-delimited Protobuf Commands (app/protocols/centrifuge_protobuf.py).

``commands(frame)`` is lazy: each command is decoded when the previous one has run, so a frame
that breaks halfway runs the commands before the break, then the connection is closed 3501 with
MalformedFrame's reason; and 10,000 commands in one frame cost no more than the rate limit lets
run. A command is ``(id, method, raw)``; ``params(raw)`` is what the commands take (the JSON
protocol's object), made only for a command that runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from google.protobuf.message import Message

from app.errors import CentrifugeError
from app.protocols import centrifuge_protobuf as pb
from app.protocols.centrifuge_codec import parse_command
from app.protocols.centrifuge_commands import CommandError
from app.protocols.centrifuge_protobuf import MalformedFrame

Parsed = tuple[int, str, Any]
PONG: Parsed = (0, "", {})

__all__ = ["JsonFrames", "MalformedFrame", "Parsed", "ProtobufFrames", "take"]


def take(commands: Iterator[Parsed]) -> Parsed | MalformedFrame | None:
    """The next command; None after the last; the MalformedFrame where the frame breaks."""
    try:
        return next(commands, None)
    except MalformedFrame as exc:
        return exc


class Frames(Protocol):
    def commands(self, frame: str | bytes) -> Iterator[Parsed]: ...

    def params(self, raw: Any) -> dict[str, Any]: ...


class JsonFrames:
    """One JSON object a line; a blank line counts as a pong (``{}``), as it always has."""

    def commands(self, frame: str | bytes) -> Iterator[Parsed]:
        assert isinstance(frame, str)
        for line in frame.split("\n"):
            if not line.strip():
                yield PONG
                continue
            parsed = parse_command(line)
            if parsed is None:
                raise MalformedFrame("malformed command")
            yield parsed

    def params(self, raw: Any) -> dict[str, Any]:
        params: dict[str, Any] = raw
        return params


class ProtobufFrames:
    """Varint-length-delimited Commands; no message may be longer than ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def commands(self, frame: str | bytes) -> Iterator[Parsed]:
        assert isinstance(frame, bytes)
        for body in pb.split(frame, self.max_bytes):
            yield pb.command(body)

    def params(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, Message):
            return {}
        try:
            return pb.as_params(raw)
        except pb.BadData as exc:
            raise CommandError(CentrifugeError.BAD_REQUEST, str(exc)) from None
