"""Session: the one object per connection that every endpoint uses, ``/ws`` and the tutorial's.

A session owns who the client is, which channels it is in (the Hub's ``Subscription`` keeps each
one's position), its limits and its permission checks. Adapters turn frames into these calls
and the results back into frames: ``protocols/switchboard.py`` for the ``/ws`` protocol,
``routes/seed.py`` for the tutorial endpoints. Failures are ``ProtocolError`` (the
client is told a code and the socket stays open) or ``BrokerUnavailable`` (Redis is down).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from app import metrics
from app.auth import ANONYMOUS, Identity
from app.broker import BrokerUnavailable, Position
from app.budgets import JoinLeave
from app.channel_state import Joined, Subscription, Unsubscribed
from app.connection import Connection
from app.errors import (
    INVALID_RESUME,
    TOKEN_EXPIRED_REASON,
    TOO_DEEP,
    CloseCode,
    ErrorCode,
    ProtocolError,
    UnsubCode,
)
from app.grants import Grants, compile_grants
from app.hub import Announce, tutorial_announce
from app.namespaces import ChannelOptions
from app.presence import member_id
from app.protocol import QUIET, Wire
from app.protocols.centrifuge_formats import CENTRIFUGE_WIRES, format_for, send
from app.services import Services
from app.sub_expiry import SubscriptionExpiry
from app.tutorial import display_name, frame_for, is_tutorial, membership_notice

log = logging.getLogger("switchboard.session")

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
# Who published, as idempotency records name it: the server API, a signed-in user, or an anonymous
# connection. None contains a colon, so "<publisher>:<key>" is unambiguous.
SERVER_PUBLISHER = "s"


def publisher_of(identity: Identity, client: str) -> str:
    """A user's retries count as one publisher on any connection and instance; an anonymous
    client's only on its own connection (it has nothing else to be known by). A user id is hashed:
    any length and any characters, and the record's key stays short."""
    if identity.user_id:
        user = identity.user_id.encode("utf-8", "surrogatepass")
        return "u" + hashlib.blake2b(user, digest_size=12).hexdigest()
    return "c" + client


def idempotency_key_of(value: object, publisher: str) -> str | None:
    """A publish's optional idempotency key (1-128 printable ASCII characters), scoped to its
    publisher, so that nobody can take a key another publisher is going to use: a subscriber who
    publishes ``announcement-7`` first does not swallow the backend's ``announcement-7``.
    Raises ProtocolError."""
    if value is None:
        return None
    if not isinstance(value, str) or not IDEMPOTENCY_KEY.fullmatch(value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "idempotency_key must be 1-128 printable ASCII characters")
    return f"{publisher}:{value}"


def encode_publication(frame: dict[str, Any], limit: int) -> bytes:
    """Encode once for every subscriber; refuses what the encoder cannot write or what is too big."""
    try:
        encoded = orjson.dumps(frame)
    except orjson.JSONEncodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, TOO_DEEP) from None
    if len(encoded) > limit:
        raise ProtocolError(ErrorCode.LIMIT_EXCEEDED, f"publication over {limit} bytes")
    return encoded


# The endpoint of ``POST /command`` (app/streams/commands.py): a Session for one command, which
# holds no subscription of its own.
DETACHED = "command"


class Session:
    __slots__ = (
        "_expiry",
        "_grants",
        "_join_leave",
        "_member",
        "_publisher",
        "_renew",
        "_standing",
        "_sub_expiry",
        "conn",
        "display_name",
        "handshake",
        "identity",
        "permissions",
        "refreshable",
        "services",
        "wire",
        "ws",
    )

    def __init__(
        self,
        conn: Connection,
        services: Services,
        *,
        ws: bool = False,
        wire: Wire | None = None,
        refreshable: bool | None = None,
    ) -> None:
        self.conn = conn
        self.services = services
        self.permissions = services.permissions
        self.wire = wire if wire is not None else Wire.WS if ws else Wire.TUTORIAL
        # Gets pushes: speaks a command protocol (/ws, or Centrifugo's), or is a one-way stream of
        # /ws pushes (app/streams/).
        self.ws = self.wire is not Wire.TUTORIAL
        # Can take a fresh token (``refresh``), so gets the grace after ``exp``: the command
        # protocols can; the one-way streams speak /ws pushes but have no way to send one.
        self.refreshable = self.ws if refreshable is None else refreshable
        self.identity = ANONYMOUS
        self._grants: Grants | None = None
        self._member: str | None = None  # built on first use (idle memory per socket)
        self._publisher: str | None = None  # likewise
        self._join_leave: JoinLeave | None = None  # likewise: made on the first announcement
        self._expiry: asyncio.TimerHandle | None = None
        # Called at the expiry instead of closing: the refresh proxy (app/protocols/proxied.py).
        self._renew: Callable[[], None] | None = None
        # Channels that stand on something other than the connection token: a subscription token
        # or the server API. A refresh does not re-check them. Made on first need.
        self._standing: set[str] | None = None
        # The expiries of subscriptions on expiring subscription tokens (app/sub_expiry.py).
        self._sub_expiry: SubscriptionExpiry | None = None
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
    def publisher(self) -> str:
        """Whose idempotency keys this connection's publishes use (``publisher_of``)."""
        if self._publisher is None:
            self._publisher = publisher_of(self.identity, self.conn.id)
        return self._publisher

    @property
    def grants(self) -> Grants | None:
        """The identity's ``channels`` claim, compiled once per token."""
        return self._grants

    async def sign_in(self, identity: Identity) -> bool:
        """Take ``identity``; a signed-in user is reachable by the server API from now on.

        False if the user already holds ``SWITCHBOARD_USER_CONNECTION_LIMIT`` connections.
        """
        self.set_identity(identity)
        return not identity.user_id or await self.services.users.admit(self)

    def set_identity(self, identity: Identity) -> None:
        """Take ``identity``, and close the connection when its token expires."""
        self.identity = identity
        self._grants = compile_grants(identity.channels)
        self._publisher = None
        self._watch_expiry()

    def _watch_expiry(self) -> None:
        """One timer per connection, moved by each new identity, on every endpoint alike.

        ``/ws`` can ``refresh``, so it has ``SWITCHBOARD_REFRESH_GRACE`` after ``exp`` to do so,
        and is then closed 4002; the one-way streams cannot refresh, so they are closed 4002 at
        ``exp``; the tutorial endpoints cannot either, and are closed 1008 at ``exp``.
        """
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires, renew = self.identity.expires, self._renew
        if expires is not None:
            grace = self.services.settings.refresh_grace if self.refreshable and renew is None else 0.0
            delay = max(0.0, expires - time.time() + grace)
            self._expiry = asyncio.get_running_loop().call_later(delay, renew or self._expired)

    def renew_with(self, renew: Callable[[], None] | None) -> None:
        """At the next identity's expiry, call ``renew`` (the refresh proxy) rather than close."""
        self._renew = renew

    def _expired(self) -> None:
        metrics.AUTH_FAILURES.labels("expired").inc()
        if self.ws:
            self.conn.close(CloseCode.TOKEN_EXPIRED)
        else:
            self.conn.close(CloseCode.POLICY_VIOLATION, TOKEN_EXPIRED_REASON)

    async def refresh(self, identity: Identity) -> None:
        """A fresh token for the same user: a new expiry, and every subscription checked again.

        What the new token (or the hook, asked again) no longer allows is left, with an ``unsub``
        push (code 2001): a revoked grant must not keep delivering, nor answer history or presence.
        """
        self.set_identity(identity)
        for channel in tuple(self.subscriptions):
            if self._standing is not None and channel in self._standing:
                continue
            opts = self.services.hub.namespaces.for_channel(channel)
            try:
                await self.permissions.check_subscribe(self, channel, opts, None)
            except ProtocolError as exc:
                await self._end(channel, UnsubCode.REVOKED, exc.message)

    def _expiries(self) -> SubscriptionExpiry:
        if self._sub_expiry is None:
            grace = self.services.settings.refresh_grace
            self._sub_expiry = SubscriptionExpiry(grace, self._subscription_expired)
        return self._sub_expiry

    async def _subscription_expired(self, channel: str) -> None:
        metrics.AUTH_FAILURES.labels("subscription_expired").inc()
        await self._end(channel, UnsubCode.EXPIRED, "subscription expired")

    def subscription_expires(self, channel: str) -> int | None:
        """When the subscription token ``channel`` stands on expires (None: it does not)."""
        return None if self._sub_expiry is None else self._sub_expiry.expires(channel)

    async def sub_refresh(self, channel: str, token: object) -> int | None:
        """A new subscription token for a channel this connection is in: the same checks as at
        subscribe (user, channel, expiry), then its ``exp`` is the subscription's. Raises
        ProtocolError (110 for a channel it is not in)."""
        if channel not in self.subscriptions:
            raise ProtocolError(ErrorCode.NOT_SUBSCRIBED)
        expires = await self.permissions.check_subscription_token(token, self.identity.user_id, channel)
        self._stands(channel)
        self._expiries().watch(channel, expires)
        return expires

    def _stands(self, channel: str) -> None:
        if self._standing is None:
            self._standing = set()
        self._standing.add(channel)

    # -- channels ---------------------------------------------------------------------------------

    async def subscribe(
        self,
        channel: object,
        resume: Position | None = None,
        *,
        token: str | None = None,
        announce: Announce = tutorial_announce,
        registered: Callable[[], None] | None = None,
        delta: bool = False,
    ) -> ChannelOptions:
        """Check, then join (delivering what was missed since ``resume``). ``announce`` tells the
        client; ``registered`` is called once the client is in the channel, before a replay
        (``Hub.join``). An unsubscribe during the replay makes this 110."""
        opts = self.permissions.options(channel)
        assert isinstance(channel, str)
        if channel in self.subscriptions:
            raise ProtocolError(ErrorCode.ALREADY_SUBSCRIBED)
        settings = self.services.settings
        limit, who = settings.max_channels_per_connection, "connection"
        if not self.identity.user_id and settings.max_channels_anonymous < limit:
            # Each channel costs the cluster a presence refresh every TTL/3, for as long as it is
            # held: anyone may open an anonymous socket, so anonymous ones hold fewer.
            limit, who = settings.max_channels_anonymous, "anonymous connection"
        if len(self.subscriptions) >= limit:
            raise ProtocolError(ErrorCode.LIMIT_EXCEEDED, f"at most {limit} channels per {who}")
        expires = await self.permissions.check_subscribe(self, channel, opts, token)
        if token is not None:
            # Before the join: its replay lets the next commands run, a refresh among them.
            self._stands(channel)
            if self.wire is Wire.CENTRIFUGE:  # only its SDKs can sub_refresh
                self._expiries().watch(channel, expires)
        try:
            await self.services.hub.join(
                self.conn, channel, resume, wire=self.wire, announce=announce, registered=registered, delta=delta
            )
        except BaseException as exc:
            if self._standing is not None and channel not in self.subscriptions:
                self._standing.discard(channel)  # a failed join stands on nothing
                if self._sub_expiry is not None:
                    self._sub_expiry.forget(channel)
            if isinstance(exc, Unsubscribed):
                raise ProtocolError(ErrorCode.NOT_SUBSCRIBED, "unsubscribed before the replay finished") from None
            raise
        return opts

    async def enter_presence(self, channel: str) -> int:
        """Register in the channel's presence; the cluster-wide count. Raises BrokerUnavailable."""
        return await self.services.presence.join(channel, self.member)

    async def announce_join(self, channel: str, opts: ChannelOptions) -> None:
        """``/ws``: presence and the join announcement, best effort (the subscription stands).

        After a resume the next commands run as soon as the client is in the channel (``Hub.join``),
        so an ``unsubscribe`` may have run while presence was being joined: then presence is left
        again (whichever Redis ran first) and nothing is announced (its leave was not either).
        """
        try:
            present = opts.presence or is_tutorial(channel)
            count = await self.enter_presence(channel) if present else 0
            if channel not in self.subscriptions:
                if present:
                    await self.services.presence.leave(channel, self.member)
                return
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
        if self._standing is not None:
            self._standing.discard(channel)
        if self._sub_expiry is not None:
            self._sub_expiry.forget(channel)
        try:
            remaining = await self.services.presence.leave(channel, self.member)
            if self.ws:
                await self._announce(channel, opts, remaining, joined=False)
        except BrokerUnavailable:
            return None
        return remaining

    def _may_announce(self, channel: str, joined: bool) -> bool:
        """The join/leave budget (app/budgets.py): a subscribe/unsubscribe loop cannot make every
        watcher of the channel take a push (with this client's ``info``) per cycle. A leave is
        announced exactly when its join was."""
        budget = self._join_leave
        if budget is None:
            s = self.services.settings
            budget = self._join_leave = JoinLeave(
                s.join_leave_per_second, s.join_leave_burst, 2 * s.max_channels_per_connection
            )
        allowed = budget.join(channel, time.monotonic()) if joined else budget.leave(channel)
        if not allowed:
            metrics.JOIN_LEAVE_SKIPPED.inc()
        return allowed

    async def _announce(self, channel: str, opts: ChannelOptions, count: int, *, joined: bool) -> None:
        """A ``join``/``leave`` push where the namespace asks; a tutorial channel's own notice there."""
        if (is_tutorial(channel) or opts.join_leave) and not self._may_announce(channel, joined):
            return
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
            if self._expiry is not None:
                self._expiry.cancel()
            if self._sub_expiry is not None:
                self._sub_expiry.close()
            if self.identity.user_id:  # the user's slot must free, whatever happened above
                await self.services.users.remove(self)

    # -- server-side subscriptions (the server API, through app/users.py) ----------------------

    async def server_subscribe(
        self, channel: str, resume: Position | None = None, *, announce: Announce | None = None
    ) -> None:
        """Subscribe without the client asking or the permission checks; it is told with ``sub``
        (or by ``announce``: the connect reply's ``subs``, app/protocols/centrifuge_subs.py)."""
        if channel in self.subscriptions:
            return
        opts = self.services.hub.namespaces.for_channel(channel)

        def pushed(sub: Subscription, joined: Joined) -> None:
            p = joined.position
            if self.wire in CENTRIFUGE_WIRES:
                recoverable = opts.history.enabled and opts.force_recovery
                positioned = opts.history.enabled and (recoverable or opts.force_positioning)
                body = {"offset": p.offset, "epoch": p.epoch, "recoverable": recoverable, "positioned": positioned}
                send(self.conn, self.wire, format_for(self.wire).push(channel, "subscribe", body))
                if not opts.force_join_leave:  # nobody asked for them: only a forced namespace's
                    sub.encoding = QUIET.get(sub.encoding, sub.encoding)
                return
            push = {"op": "sub", "channel": channel, "offset": p.offset, "epoch": p.epoch}
            self.conn.send_text(orjson.dumps(push))

        self._stands(channel)  # before the join: a refresh during its replay must not re-check it
        try:
            await self.services.hub.join(self.conn, channel, resume, wire=self.wire, announce=announce or pushed)
        except BaseException:
            if self._standing is not None and channel not in self.subscriptions:
                self._standing.discard(channel)
            raise
        await self.announce_join(channel, opts)

    async def server_unsubscribe(self, channel: str) -> None:
        await self._end(channel, UnsubCode.SERVER, "unsubscribed by the server")

    async def _end(self, channel: str, code: UnsubCode, reason: str) -> None:
        """Unsubscribe the client without its asking, and tell it with an ``unsub`` push."""
        if channel in self.subscriptions:
            await self.unsubscribe(channel)
            if self.wire in CENTRIFUGE_WIRES:
                told = format_for(self.wire).push(channel, "unsubscribe", {"code": int(code), "reason": reason})
                send(self.conn, self.wire, told)
                return
            push = {"op": "unsub", "channel": channel, "code": int(code), "reason": reason}
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
        if check and not subscribed and opts.publish == "subscribers" and self.conn.endpoint == DETACHED:
            # POST /command holds no subscription: one who may subscribe counts as a subscriber,
            # as it could subscribe over /ws and then publish (it reads over /sse meanwhile).
            await self.permissions.check_subscribe(self, channel, opts, None)
            subscribed = True
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
