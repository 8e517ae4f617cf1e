"""Per-channel state for Fossil delta subscribers: one delta per message per process.

A channel has a ``DeltaStream`` only while it has members that negotiated delta
(``Hub.join``/``Hub.leave`` count them), so the state is bounded by those channels: the data of
the previous and the current publication, and the two frames built from them. Each member keeps
one number, ``Subscription.delta_seq``: the publication it was last sent. A member whose number
is the previous publication's holds the delta's base and gets the shared delta frame; any other
(it just joined, it was recovered or fed held-back messages one by one, or its own publish was
not echoed to it) gets the shared full frame, which is its new base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.protocol import Envelope, Outgoing
from app.protocols import centrifuge_delta as wire

if TYPE_CHECKING:
    from app.channel_state import Channel, Subscription

Mark = tuple[str, int, str] | None


class DeltaStream:
    __slots__ = ("_delta", "_full", "_rest", "base", "env", "last", "seq", "subscribers")

    def __init__(self) -> None:
        self.subscribers = 0
        self.env: Envelope | None = None  # the message being fanned out now
        self.seq = 0  # publications seen; the one being fanned out is number ``seq``
        self.last: bytes | None = None  # publication ``seq``'s data as JSON text
        self.base: bytes | None = None  # publication ``seq - 1``'s: what deltas apply to
        self._rest: dict[str, Any] | None = None  # None: the current message is no publication
        self._full: Outgoing | None = None
        self._delta: Outgoing | None = None

    def push(self, ch: Channel, env: Envelope, sub: Subscription, mark: Mark) -> Outgoing | None:
        """The frame for ``sub``, built once per message for all; None if ``env`` is not a
        publication (a join or leave: the plain push then)."""
        if env is not self.env:
            self._next(ch, env)
        if self._rest is None:
            return None
        assert self.last is not None
        if sub.delta_seq == self.seq - 1 and self.base is not None:
            if self._delta is None:
                pub = wire.delta(self.base, self.last, self._rest)
                self._delta = (
                    self._full_frame(ch, mark) if pub is None else Outgoing(wire.wrap(ch.name_json, pub), mark)
                )
            out = self._delta
        else:
            out = self._full_frame(ch, mark)
        sub.delta_seq = self.seq
        return out

    def _next(self, ch: Channel, env: Envelope) -> None:
        self.env = env
        found = wire.parts(env, ch.tutorial)
        if found is None:  # a join or leave moves nobody's base
            self._rest = None
            return
        self.base, self.last = self.last, found[0]
        self._rest = found[1]
        self.seq += 1
        self._full = self._delta = None

    def _full_frame(self, ch: Channel, mark: Mark) -> Outgoing:
        if self._full is None:
            assert self.last is not None
            assert self._rest is not None
            self._full = Outgoing(wire.wrap(ch.name_json, wire.full(self.last, self._rest)), mark)
        return self._full


def delta_joined(ch: Channel, sub: Subscription) -> None:
    """``sub`` is now a member of ``ch``: count it if it negotiated deltas."""
    if sub.delta:
        if ch.delta is None:
            ch.delta = DeltaStream()
        ch.delta.subscribers += 1


def delta_left(ch: Channel, sub: Subscription) -> None:
    """``sub`` left ``ch``: the last delta subscriber takes the channel's state with it."""
    if sub.delta and ch.delta is not None:
        ch.delta.subscribers -= 1
        if not ch.delta.subscribers:
            ch.delta = None
