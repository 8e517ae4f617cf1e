"""Session: the one object per connection that every endpoint uses, ``/ws`` and the tutorial's.

A session owns who the client is, which channels it is in (the Hub's ``Subscription`` keeps each
one's position), its limits and its permission checks. ``routes/`` hold only adapters that turn
frames into these calls and the results back into frames: ``routes/ws.py`` for the ``/ws``
protocol, ``routes/seed.py`` for the tutorial endpoints. Failures are ``ProtocolError`` (the
client is told a code and the socket stays open) or ``BrokerUnavailable`` (Redis is down).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import orjson

from app import metrics
from app.auth import ANONYMOUS, Identity
from app.broker import BrokerUnavailable, Position
from app.connection import Connection
from app.errors import INVALID_RESUME, TOO_DEEP, ErrorCode, ProtocolError
from app.hub import Announce, tutorial_announce
from app.namespaces import ChannelOptions
from app.permissions import compile_grants
from app.presence import member_id
from app.recovery import Joined, Subscription
from app.services import Services
from app.tutorial import display_name, frame_for, is_tutorial, membership_notice

log = logging.getLogger("switchboard.session")

# The `code` of an `unsub` push when the server API unsubscribed the connection.
UNSUBSCRIBED = 2000

EPOCH = re.compile(r"[0-9a-f]{0,32}")
OFFSET = re.compile(r"[0-9]{1,18}")
Build = Callable[[Any], dict[str, Any]]


def resume_from(since: object, epoch: object) -> Position | None:
    """A resuming client's position: query strings, or JSON values. Raises ValueError."""
    if since is None and epoch is None:
        return None
    if isinstance(since, int) and not isinstance(since, bool) and since >= 0:
        since = str(since)
    if not isinstance(since, str) or not isinstance(epoch, str) or not OFFSET.fullmatch(since):
        raise ValueError(INVALID_RESUME)
    if not valid_position(int(since), epoch):
        raise ValueError(INVALID_RESUME)
    return Position(int(since), epoch)


def valid_position(since: int, epoch: str) -> bool:
    """An epoch is hex; empty only at the very start (a channel with no epoch yet is at (0, ""))."""
    return EPOCH.fullmatch(epoch) is not None and (bool(epoch) or since == 0)


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")


def idempotency_key_of(value: object) -> str | None:
    """A publish's optional idempotency key: 1-128 printable ASCII characters. Raises ProtocolError."""
    if value is None:
        return None
    if not isinstance(value, str) or not IDEMPOTENCY_KEY.fullmatch(value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "idempotency_key must be 1-128 printable ASCII characters")
    return value


def encode_publication(frame: dict[str, Any], limit: int) -> bytes:
    """Encode once for every subscriber; refuses what the encoder cannot write or what is too big."""
    try:
        encoded = orjson.dumps(frame)
    except orjson.JSONEncodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, TOO_DEEP) from None
    if len(encoded) > limit:
        raise ProtocolError(ErrorCode.LIMIT_EXCEEDED, f"publication over {limit} bytes")
    return encoded


class Session:
    __slots__ = ("_grants", "_member", "conn", "display_name", "handshake", "identity", "permissions", "services", "ws")

    def __init__(self, conn: Connection, services: Services, *, ws: bool = False) -> None:
        self.conn = conn
        self.services = services
        self.permissions = services.permissions
        self.ws = ws  # speaks the /ws protocol: gets pub pushes and /ws recovered notices
        self.identity = ANONYMOUS
        self._grants: re.Pattern[str] | None = None
        self._member: str | None = None  # built on first use (idle memory per socket)
        # The name the tutorial's chat and rooms show for this connection (its leave notice too).
        self.display_name: str | None = None
        # The handshake headers the connect proxy is sent (its allowlist), until connect is done.
        self.handshake: dict[str, str] | None = None

    @property
    def client(self) -> str:
        return self.conn.id

    @property
    def subscriptions(self) -> set[str]:
        """The channels this connection is in: the Hub keeps the set, on the connection."""
        return self.conn.channels

    @property
    def member(self) -> str:
        """This connection in presence: fixed once made, so a refresh cannot orphan an entry."""
        if self._member is None:
            name = self.display_name or (self.identity.name if self.identity.user_id else None)
            self._member = member_id(self.conn.id, self.identity.user_id, self.identity.info, name)
        return self._member

    @property
    def grants(self) -> re.Pattern[str] | None:
        """The identity's ``channels`` claim, compiled once per token."""
        return self._grants

    async def sign_in(self, identity: Identity) -> bool:
        """Take ``identity``; a signed-in user is reachable by the server API from now on.

        False if the user already holds ``SWITCHBOARD_USER_CONNECTION_LIMIT`` connections.
        """
        self.set_identity(identity)
        return not identity.user_id or await self.services.users.admit(self)

    def set_identity(self, identity: Identity) -> None:
        self.identity = identity
        self._grants = compile_grants(identity.channels)

    # -- channels ---------------------------------------------------------------------------------

    async def subscribe(
        self,
        channel: object,
        resume: Position | None = None,
        *,
        token: str | None = None,
        announce: Announce = tutorial_announce,
    ) -> ChannelOptions:
        """Check, then join (delivering what was missed since ``resume``). ``announce`` tells the client."""
        opts = self.permissions.options(channel)
        assert isinstance(channel, str)
        if channel in self.subscriptions:
            raise ProtocolError(ErrorCode.ALREADY_SUBSCRIBED)
        limit = self.services.settings.max_channels_per_connection
        if len(self.subscriptions) >= limit:
            raise ProtocolError(ErrorCode.LIMIT_EXCEEDED, f"at most {limit} channels per connection")
        await self.permissions.check_subscribe(self, channel, opts, token)
        await self.services.hub.join(self.conn, channel, resume, ws=self.ws, announce=announce)
        return opts

    async def enter_presence(self, channel: str) -> int:
        """Register in the channel's presence; the cluster-wide count. Raises BrokerUnavailable."""
        return await self.services.presence.join(channel, self.member)

    async def announce_join(self, channel: str, opts: ChannelOptions) -> None:
        """``/ws``: presence and the join announcement, best effort (the subscription stands)."""
        try:
            count = await self.enter_presence(channel) if opts.presence or is_tutorial(channel) else 0
            await self._announce(channel, opts, count, joined=True)
        except BrokerUnavailable as exc:
            metrics.LISTENER_ERRORS.inc()
            log.warning("presence or join announcement failed after a subscribe: %s", exc)

    async def unsubscribe(self, channel: str) -> int | None:
        """Leave; returns the remaining cluster-wide count, or None if presence is unreachable.

        A ``/ws`` session announces it; the tutorial endpoints announce in their own words.
        """
        if channel not in self.subscriptions:
            raise ProtocolError(ErrorCode.NOT_SUBSCRIBED)
        opts = self.services.hub.namespaces.for_channel(channel)
        await self.services.hub.leave(self.conn, channel)
        try:
            remaining = await self.services.presence.leave(channel, self.member)
            if self.ws:
                await self._announce(channel, opts, remaining, joined=False)
        except BrokerUnavailable:
            return None
        return remaining

    async def _announce(self, channel: str, opts: ChannelOptions, count: int, *, joined: bool) -> None:
        """A ``join``/``leave`` push where the namespace asks; a tutorial channel's own notice there."""
        if is_tutorial(channel):
            # So that a team can move clients from /ws/room/42 to /ws one at a time: each side
            # sees the other come and go, in the frames it already knows.
            await self.notice(channel, display_name(channel, self.identity), count, joined=joined)
        elif opts.join_leave:
            info = {"client": self.client, "user": self.identity.user_id, "info": self.identity.info}
            push = orjson.dumps({"op": "join" if joined else "leave", "channel": channel, "info": info})
            await self.services.hub.publish(channel, push, ephemeral=True)

    async def close(self) -> None:
        """Leave every channel and the user index: called once when the connection ends."""
        try:
            for channel in tuple(self.subscriptions):
                await self.unsubscribe(channel)
        finally:
            if self.identity.user_id:  # the user's slot must free, whatever happened above
                await self.services.users.remove(self)

    # -- server-side subscriptions (the server API, through app/users.py) ----------------------

    async def server_subscribe(self, channel: str) -> None:
        """Subscribe without the client asking or the permission checks; it is told with ``sub``."""
        if channel in self.subscriptions:
            return
        opts = self.services.hub.namespaces.for_channel(channel)

        def announce(sub: Subscription, joined: Joined) -> None:
            p = joined.position
            push = {"op": "sub", "channel": channel, "offset": p.offset, "epoch": p.epoch}
            self.conn.send_text(orjson.dumps(push))

        await self.services.hub.join(self.conn, channel, ws=self.ws, announce=announce)
        await self.announce_join(channel, opts)

    async def server_unsubscribe(self, channel: str) -> None:
        if channel in self.subscriptions:
            await self.unsubscribe(channel)
            push = {"op": "unsub", "channel": channel, "code": UNSUBSCRIBED, "reason": "unsubscribed by the server"}
            self.conn.send_text(orjson.dumps(push))

    # -- publishing -------------------------------------------------------------------------------

    async def notice(self, channel: str, name: str | None, count: int, *, joined: bool) -> None:
        """A tutorial channel's own join or leave notice: a server notice, so no permission check."""
        notice = membership_notice(channel, name, count, joined)
        if notice is not None:
            frame, exclude_self = notice
            await self.publish(channel, None, build=lambda _: frame, exclude_self=exclude_self, check=False)

    async def publish(
        self,
        channel: object,
        data: Any,
        *,
        build: Build | None = None,
        exclude_self: bool = False,
        check: bool = True,
        idempotency_key: str | None = None,
    ) -> Position | None:
        """Publish ``data`` on ``channel`` after the permission checks (``check=False``: a server notice).

        ``build`` makes the frame (a tutorial endpoint's own shape); by default a tutorial channel
        gets its endpoint's frame and any other channel a ``pub`` push. The frame is encoded once
        here, for every subscriber on every instance.
        """
        # A channel this connection is in was checked, and its options looked up, when it was
        # joined: they are on the Hub's channel. Any other is checked now.
        subscribed = isinstance(channel, str) and channel in self.subscriptions
        joined = self.services.hub.channel(channel) if isinstance(channel, str) and subscribed else None
        opts = joined.options if joined is not None else self.permissions.options(channel)
        assert isinstance(channel, str)
        if check:
            data = await self.permissions.check_publish(self, channel, opts, data, subscribed)
        frame = build(data) if build is not None else self._frame(channel, data)
        encoded = encode_publication(frame, self.services.settings.max_message_bytes)
        exclude = self.conn if exclude_self else None
        return await self.services.hub.publish(
            channel, encoded, exclude, history=opts.history, idempotency_key=idempotency_key
        )

    def _frame(self, channel: str, data: Any) -> dict[str, Any]:
        tutorial = frame_for(channel, data, self.identity)
        if tutorial is not None:
            return tutorial
        return {
            "op": "pub",
            "channel": channel,
            "data": data,
            "info": {"user": self.identity.user_id, "client": self.client},
        }
