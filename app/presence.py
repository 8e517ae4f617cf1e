"""Cluster-wide presence: who is in a channel, across every instance.

Guarantees (both implementations):

* A member is what ``member_id`` encodes: ``[client, user, info, name]``, unique per connection,
  so counts, lists and leave notices all come from one set per channel.
* ``stats`` counts clients and distinct signed-in users without reading the members (Redis keeps
  a per-user counter beside the set).
* ``join`` and ``leave`` return the cluster-wide count after them.
* A member whose instance stops refreshing it (the instance died) stops counting within the TTL,
  and ``sweep`` hands it, once cluster-wide, to whoever announces its leaving (``app/sweeper.py``).
* ``page`` lists a channel in pages of at most ``limit`` members: a member present for the whole
  listing is returned at least once (members joining or leaving meanwhile may be missed or repeat).

Redis: ``app/presence_redis.py`` (which builds on this module; ``Services.build`` picks one of the
two). In one process (the memory broker) no instance can die alone, so
``MemoryPresence.sweep`` finds nothing.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

PAGE_LIMIT = 1000
Cursor = tuple[int, int]
"""Where a page starts: a scan position, and how many of that batch were already returned."""


class Presence(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def join(self, channel: str, member: str) -> int:
        """Add a member; returns the cluster-wide count including it."""
        ...

    async def leave(self, channel: str, member: str) -> int:
        """Remove a member; returns the remaining cluster-wide count."""
        ...

    async def count(self, channel: str) -> int: ...

    async def stats(self, channel: str, anonymous: bool = False) -> dict[str, int]:
        """``clients`` and distinct signed-in ``users``, counted without reading the members;
        with ``anonymous``, also how many of the clients are ``anonymous``."""
        ...

    async def members(self, channel: str) -> list[str]:
        """Every live member, across instances (``member`` strings as joined)."""
        ...

    async def page(self, channel: str, cursor: Cursor, limit: int) -> tuple[list[str], Cursor | None]:
        """At most ``limit`` live members from ``cursor`` ((0, 0): the start), and the next cursor
        (None: that was the last page)."""
        ...

    async def channels(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        """Channels with live members anywhere, and how many: at most ``limit`` of them."""
        ...

    async def sweep(self) -> list[tuple[str, list[str], int]]:
        """Remove expired members: (channel, members removed, members left) per channel touched."""
        ...


def member_id(client: str, user: str, info: dict[str, Any] | None, name: str | None = None) -> str:
    """A presence member: who is there, as ``presence`` lists them, and the name its leave shows."""
    return orjson.dumps([client, user, info, name]).decode()


def parse_member(member: str | bytes) -> dict[str, Any]:
    """``{"client","user","info"}`` from a member string; members from older versions are bare ids."""
    try:
        client, user, info, *_ = orjson.loads(member)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        client = member.decode() if isinstance(member, bytes) else member
        user, info = "", None
    return {"client": client, "user": user, "info": info}


def member_name(member: str) -> str | None:
    """The name a member's join showed (tutorial chat and rooms), for the leave notice."""
    try:
        found = orjson.loads(member)
    except orjson.JSONDecodeError:
        return None
    name = found[3] if isinstance(found, list) and len(found) > 3 else None
    return name if isinstance(name, str) else None


def stats(members: list[str], anonymous: bool = False) -> dict[str, int]:
    """``clients`` and distinct signed-in ``users``; with ``anonymous``, the anonymous clients."""
    found = [m["user"] for m in map(parse_member, members)]
    users = {user for user in found if user}
    counts = {"clients": len(members), "users": len(users)}
    return {**counts, "anonymous": found.count("")} if anonymous else counts


CURSOR = re.compile(r"z([0-9]{1,20})(?:\.([0-9]{1,6}))?")
# Redis scan cursors are unsigned 64-bit: a larger one is refused there ("invalid cursor"), which
# must be the client's bad request here, not a broker failure.
SCAN_LIMIT = 2**64


def parse_cursor(cursor: object) -> Cursor:
    """A page cursor from a client (``z<scan>[.<skip>]``); raises ValueError if it is not one of ours."""
    if cursor is None:
        return 0, 0
    found = CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if found is None:
        raise ValueError("cursor is not one this server gave")
    scan = int(found.group(1))
    if scan >= SCAN_LIMIT:
        raise ValueError("cursor is not one this server gave")
    return scan, int(found.group(2) or 0)


def format_cursor(cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    scan, skip = cursor
    return f"z{scan}.{skip}" if skip else f"z{scan}"


def cut(batch: list[str], skip: int, limit: int, scan: int, following: int) -> tuple[list[str], Cursor | None]:
    """A page of a scan batch: sorted, so that its order holds however members' expiries move."""
    ordered = sorted(batch)
    page = ordered[skip : skip + limit]
    if skip + limit < len(ordered):
        return page, (scan, skip + limit)
    return page, (following, 0) if following else None


class MemoryPresence:
    def __init__(self) -> None:
        self._members: dict[str, set[str]] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._members.clear()

    async def join(self, channel: str, member: str) -> int:
        members = self._members.setdefault(channel, set())
        members.add(member)
        return len(members)

    async def count(self, channel: str) -> int:
        return len(self._members.get(channel, ()))

    async def stats(self, channel: str, anonymous: bool = False) -> dict[str, int]:
        return stats(list(self._members.get(channel, ())), anonymous)

    async def members(self, channel: str) -> list[str]:
        return list(self._members.get(channel, ()))

    async def page(self, channel: str, cursor: Cursor, limit: int) -> tuple[list[str], Cursor | None]:
        return cut(list(self._members.get(channel, ())), cursor[1], limit, 0, 0)

    async def channels(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        found = sorted((name, len(m)) for name, m in self._members.items() if name.startswith(prefix))
        return found[:limit]

    async def sweep(self) -> list[tuple[str, list[str], int]]:
        return []

    async def leave(self, channel: str, member: str) -> int:
        members = self._members.get(channel)
        if members is None:
            return 0
        members.discard(member)
        if not members:
            del self._members[channel]
        return len(members)
