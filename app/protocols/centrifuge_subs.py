"""Server-side subscriptions at connect on ``/connection/websocket`` (Centrifugo's ``subs``).

A connection is subscribed, before its connect reply, to:

* its user's personal channel, ``<SWITCHBOARD_PERSONAL_CHANNEL_NAMESPACE>:#<user>`` (a user-limited
  channel, docs/protocol.md), when that setting names a namespace and the connection is signed in;
* every exact channel name (not a ``*`` pattern) of its identity's ``channels``: the token's claim,
  or what the connect proxy answered.

These are the server's subscriptions, not the client's: no permission check but the name's and the
namespace's existence, as for the server API's ``subscribe``. Each is an entry of the connect
reply's ``subs`` map, as a subscribe reply is. An SDK reconnecting sends its positions in connect's
``subs`` (``{channel: {recover, epoch, offset}}``): those are recovered, and the missed
publications are in the entry. A channel that cannot be joined now (the broker is down) is left
out, logged; the client reconnects as usual.

On ``/ws`` the ``channels`` claim keeps its meaning (grants only); the personal channel arrives
there as a ``sub`` push (``Session.server_subscribe``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from app.broker import BrokerUnavailable, Position
from app.channel_state import Joined, Subscription
from app.errors import ProtocolError
from app.permissions import personal_channel, valid_channel
from app.protocols.centrifuge_commands import (
    CommandError,
    position_of,
    quiet_unless,
    resume_position,
    stream_flags,
    stream_result,
)
from app.protocols.centrifuge_formats import format_for
from app.session import Session

log = logging.getLogger("switchboard.centrifuge")


def server_channels(session: Session) -> list[str]:
    """The channels this connection is subscribed to at connect, the personal one first."""
    identity, settings = session.identity, session.services.settings
    found = [personal_channel(settings.personal_channel_namespace, identity.user_id)]
    found += [name for name in identity.channels if "*" not in name and valid_channel(name)]
    unique = list(dict.fromkeys(name for name in found if name is not None))
    return unique[: settings.max_channels_per_connection]


async def connect_subs(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    """Join the server-side channels; the connect reply's ``subs`` (empty: none).

    The connection is held (``Connection.hold``) from the first join: their pushes queue behind
    the connect reply, which ``Connection.release`` writes first, so that none reaches the SDK
    before it knows the channel."""
    asked = params.get("subs")
    positions = asked if isinstance(asked, dict) else {}
    subs: dict[str, Any] = {}
    channels = server_channels(session)
    if channels:
        session.conn.hold()
    for channel in channels:
        entry = positions.get(channel)
        try:
            result = await _join(session, channel, entry if isinstance(entry, dict) else {})
        except (ProtocolError, CommandError, BrokerUnavailable) as exc:
            log.warning("server-side subscription at connect not made: %s", type(exc).__name__)
            continue
        if result is not None:
            subs[channel] = result
    return subs


async def _join(session: Session, channel: str, asked: dict[str, Any]) -> dict[str, Any] | None:
    opts = session.permissions.options(channel)
    if channel in session.subscriptions:
        return None
    recoverable, positioned = stream_flags(opts, {})
    resume: Position | None = None
    if asked.get("recover") is True and recoverable:
        resume = await resume_position(session, channel, opts, position_of(asked))
    result: dict[str, Any] = {}

    def announce(sub: Subscription, joined: Joined) -> None:
        result.update(stream_result(recoverable, positioned, joined.position))
        if resume is not None:
            result.update(was_recovering=True, recovered=joined.ok is True)
        if sub.collected:  # encoded once each when replayed, in the connection's encoding: kept as they are
            binary = format_for(session.wire).binary  # Protobuf: encoded Publications, merged in
            result["publications"] = sub.collected if binary else [orjson.Fragment(pub) for pub in sub.collected]
        quiet_unless(sub, opts, False)

    await session.server_subscribe(channel, resume, announce=announce)
    return result
