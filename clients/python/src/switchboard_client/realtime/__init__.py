"""Reconnecting Switchboard clients for Python services, tests and scripts.

* ``Client`` speaks the ``/ws`` protocol: many channels on one socket, each resumed from its own
  offset after a reconnect (``switchboard_client/realtime/protocol.py``).
* ``SwitchboardClient`` follows one tutorial channel endpoint (``switchboard_client/realtime/channel.py``).
"""

from switchboard_client.realtime.channel import (
    TERMINAL_CODES,
    SwitchboardClient,
    backoff_delay,
    is_terminal,
    with_position,
)
from switchboard_client.realtime.protocol import Client
from switchboard_client.realtime.subscription import CommandError, Publication, Subscription

__all__ = [
    "TERMINAL_CODES",
    "Client",
    "CommandError",
    "Publication",
    "Subscription",
    "SwitchboardClient",
    "backoff_delay",
    "is_terminal",
    "with_position",
]
