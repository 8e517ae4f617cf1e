"""Server pings, shared by ``/ws`` (app/protocols/switchboard.py) and ``/connection/websocket``
(app/protocols/centrifuge.py): a ping every ``SWITCHBOARD_PING_INTERVAL``, then
``SWITCHBOARD_HEARTBEAT_TIMEOUT`` for any sign of the client, or the connection is closed.

One timer per connection at a time, on the process's timer heap (app/timers.py), never a task:
an idle socket holds no coroutine frame and no event-loop timer for its keepalive. The protocol
says what a ping is and how a missing pong closes.
"""

from __future__ import annotations

from app.config import Settings
from app.timers import Timer, timers


class Keepalive:
    """Mixed into a protocol's client; it sets ``_timer`` None and ``_awaiting_pong`` False."""

    __slots__ = ("_awaiting_pong", "_timer")

    settings: Settings
    _timer: Timer | None
    _awaiting_pong: bool

    def _send_ping(self) -> None:
        raise NotImplementedError

    def _no_pong(self) -> None:
        raise NotImplementedError

    def _schedule_ping(self) -> None:
        self._timer = timers().call_later(self.settings.ping_interval, self._ping)

    def _ping(self) -> None:
        self._awaiting_pong = True
        self._send_ping()
        self._timer = timers().call_later(self.settings.heartbeat_timeout, self._check_pong)

    def _check_pong(self) -> None:
        if self._awaiting_pong:
            self._no_pong()
        else:
            self._schedule_ping()

    def _stop_pings(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
