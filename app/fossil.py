"""A Fossil delta encoder: the format Centrifugo's SDKs decode for ``delta: "fossil"``.

Written from the published format (fossil-scm.org, "Fossil Delta Format"): a delta is the
target's length, then copy (``N@OFFSET,``) and insert (``N:BYTES``) commands, then a checksum of
the target (``SUM;``); numbers are base 64 in the digits ``0-9A-Z_a-z~``, most significant first.

Matches are found the way the format's authors describe: the source is cut into blocks of
``NHASH`` bytes, each indexed by a rolling hash, and a window slides over the target looking for
a block it shares, which is then grown both ways. Publications that change a little between
messages share a long head and tail with the previous one, so those are matched first with a few
slice comparisons (memcmp in C), and only the changed middle is walked byte by byte.

The byte-by-byte walk runs on the event loop, once per publication, so it is bounded: a changed
middle longer than ``SEARCH_BYTES`` (or whose source side is) is inserted as it is, and the
caller, seeing a delta no smaller than the target, sends the full publication instead. That
keeps the worst case to a few milliseconds per publication whatever its size.

``utf8=True`` (the JSON protocol, where a delta travels as a JSON string) keeps every insert on
whole UTF-8 characters, so the delta is itself valid UTF-8 whenever the target is.
"""

from __future__ import annotations

import struct

NHASH = 16  # bytes per indexed source block, and the width of the rolling window
SEARCH_BYTES = 16 * 1024  # the most of a changed middle walked, and of source indexed, per delta
DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_MASK = 0xFFFF


def _int(value: int) -> bytes:
    if value == 0:
        return b"0"
    out = bytearray()
    while value:
        out.append(DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def checksum(data: bytes) -> int:
    """The format's checksum: the sum of the data as big-endian 32-bit words (the tail padded with
    zero bytes on the right), modulo 2**32."""
    whole = len(data) // 4 * 4
    total = sum(struct.unpack(f">{whole // 4}I", data[:whole])) if whole else 0
    if whole < len(data):
        total += int.from_bytes(data[whole:].ljust(4, b"\0"), "big")
    return total & 0xFFFFFFFF


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix, by halving: each probe is one C slice comparison."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    low, high = 0, limit
    la, lb = len(a), len(b)
    while low < high:
        mid = (low + high + 1) // 2
        if a[la - mid : la - low] == b[lb - mid : lb - low]:
            low = mid
        else:
            high = mid - 1
    return low


def _is_continuation(data: bytes, index: int) -> bool:
    return index < len(data) and 0x80 <= data[index] < 0xC0


def _hash(data: bytes, start: int) -> tuple[int, int]:
    a = b = 0
    for i in range(NHASH):
        byte = data[start + i]
        a += byte
        b += (NHASH - i) * byte
    return a & _MASK, b & _MASK


class _Encoder:
    __slots__ = ("index", "indexed", "out", "source", "target", "utf8")

    def __init__(self, source: bytes, target: bytes, utf8: bool, indexed: tuple[int, int]) -> None:
        self.source, self.target, self.utf8 = source, target, utf8
        self.indexed = indexed  # the part of the source whose blocks are looked up
        self.out: list[bytes] = [_int(len(target)), b"\n"]
        self.index: dict[int, list[int]] | None = None  # built on first need

    def _index(self) -> dict[int, list[int]]:
        """Each source block's rolling hash -> the blocks that have it (collisions are checked
        byte-wise). Built only when a changed middle is long enough to look for copies in."""
        if self.index is None:
            self.index = {}
            low, high = self.indexed
            for block in range(low, high - NHASH + 1, NHASH):
                a, b = _hash(self.source, block)
                self.index.setdefault(a | b << 16, []).append(block)
        return self.index

    def copy(self, count: int, offset: int) -> None:
        if count:
            self.out += (_int(count), b"@", _int(offset), b",")

    def insert(self, start: int, end: int) -> None:
        if end > start:
            self.out += (_int(end - start), b":", self.target[start:end])

    def middle(self, start: int, end: int) -> None:
        """Encode ``target[start:end]``: copies of what the source holds, inserts for the rest."""
        literal = pos = start  # literal: the first target byte not yet covered by a command
        low, high = self.indexed
        if end - start < NHASH or high - low < NHASH or end - start > SEARCH_BYTES:
            self.insert(start, end)
            return
        tgt, index = self.target, self._index()
        a, b = _hash(tgt, pos)
        while True:
            found = index.get(a | b << 16)
            best = None
            if found:
                best = self._best_match(found, pos, literal, end)
            if best is not None:
                t_start, s_start, count = best
                self.insert(literal, t_start)
                self.copy(count, s_start)
                literal = pos = t_start + count
                if pos + NHASH > end:
                    break
                a, b = _hash(tgt, pos)
                continue
            if pos + NHASH >= end:
                break
            old, new = tgt[pos], tgt[pos + NHASH]
            a = (a - old + new) & _MASK
            b = (b - NHASH * old + a) & _MASK
            pos += 1
        self.insert(literal, end)

    def _best_match(self, found: list[int], pos: int, literal: int, end: int) -> tuple[int, int, int] | None:
        src, tgt = self.source, self.target
        best: tuple[int, int, int] | None = None
        best_count = 0
        for s_pos in found:
            # Grow forwards, then backwards over target bytes not yet covered.
            forward = 0
            limit = min(len(src) - s_pos, end - pos)
            while forward < limit and src[s_pos + forward] == tgt[pos + forward]:
                forward += 1
            back = 0
            while back < min(s_pos, pos - literal) and src[s_pos - back - 1] == tgt[pos - back - 1]:
                back += 1
            t_start, s_start, t_end = pos - back, s_pos - back, pos + forward
            if self.utf8:  # a copy starts and ends on character boundaries, so inserts do too
                while t_start < t_end and _is_continuation(tgt, t_start):
                    t_start += 1
                    s_start += 1
                while t_end > t_start and _is_continuation(tgt, t_end):
                    t_end -= 1
            count = t_end - t_start
            # Worth it only if the copy command is shorter than the bytes it stands for.
            cost = len(_int(count)) + len(_int(s_start)) + 2
            if count > best_count and count > cost:
                best, best_count = (t_start, s_start, count), count
        return best


def encode(source: bytes, target: bytes, *, utf8: bool = False) -> bytes:
    """The Fossil delta that turns ``source`` into ``target``."""
    head = _common_prefix(source, target)
    tail = _common_suffix(source, target, min(len(source), len(target)) - head)
    if utf8:
        while head and _is_continuation(target, head):
            head -= 1
        while tail and _is_continuation(target, len(target) - tail):
            tail -= 1
    # Short shared ends cost more as copies than as bytes: leave them to the middle.
    if head <= NHASH:
        head = 0
    if tail <= NHASH:
        tail = 0
    # Copies are looked for in the whole source when it is small, else in its own changed middle.
    indexed = (0, len(source)) if len(source) <= SEARCH_BYTES else (head, len(source) - tail)
    if indexed[1] - indexed[0] > SEARCH_BYTES:
        indexed = (0, 0)
    enc = _Encoder(source, target, utf8, indexed)
    enc.copy(head, 0)
    enc.middle(head, len(target) - tail)
    enc.copy(tail, len(source) - tail)
    enc.out += (_int(checksum(target)), b";")
    return b"".join(enc.out)
