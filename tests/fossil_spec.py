"""A Fossil delta decoder written from the format's description, for checking app/fossil.py with
something that shares none of its code (tests/unit/test_fossil.py, tests/sdk/test_delta.py)."""

from __future__ import annotations

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
VALUE = {ord(c): i for i, c in enumerate(DIGITS)}


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def number(self) -> int:
        value, start = 0, self.pos
        while self.pos < len(self.data) and self.data[self.pos] in VALUE:
            value = value * 64 + VALUE[self.data[self.pos]]
            self.pos += 1
        if self.pos == start:
            raise ValueError(f"a number expected at {start}")
        return value

    def char(self) -> str:
        if self.pos >= len(self.data):
            raise ValueError("truncated delta")
        self.pos += 1
        return chr(self.data[self.pos - 1])


def spec_checksum(data: bytes) -> int:
    total = 0
    for i in range(0, len(data), 4):
        word = data[i : i + 4]
        total += int.from_bytes(word + b"\0" * (4 - len(word)), "big")
    return total % (1 << 32)


def apply(source: bytes, delta: bytes) -> bytes:
    """The target ``delta`` makes of ``source``; ValueError for any malformed delta."""
    reader = Reader(delta)
    size = reader.number()
    if reader.char() != "\n":
        raise ValueError("the size ends with a newline")
    out = bytearray()
    while True:
        count = reader.number()
        op = reader.char()
        if op == "@":
            offset = reader.number()
            if reader.char() != ",":
                raise ValueError("a copy ends with ','")
            if offset + count > len(source):
                raise ValueError("a copy past the source's end")
            out += source[offset : offset + count]
        elif op == ":":
            if reader.pos + count > len(delta):
                raise ValueError("an insert past the delta's end")
            out += delta[reader.pos : reader.pos + count]
            reader.pos += count
        elif op == ";":
            if reader.pos != len(delta):
                raise ValueError("bytes after the checksum")
            if len(out) != size or spec_checksum(bytes(out)) != count:
                raise ValueError("size or checksum mismatch")
            return bytes(out)
        else:
            raise ValueError(f"unknown command {op!r}")
        if len(out) > size:
            raise ValueError("output longer than announced")
