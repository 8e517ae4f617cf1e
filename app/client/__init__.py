"""Reconnecting Switchboard clients for Python services, tests and scripts.

* ``Client`` speaks the ``/ws`` protocol: many channels on one socket, each resumed from its own
  offset after a reconnect (``app/client/protocol.py``).
* ``SwitchboardClient`` follows one tutorial channel endpoint (``app/client/channel.py``).
"""

from app.client.channel import SwitchboardClient, backoff_delay, with_position
from app.client.protocol import Client
from app.client.subscription import CommandError, Publication, Subscription

__all__ = [
    "Client",
    "CommandError",
    "Publication",
    "Subscription",
    "SwitchboardClient",
    "backoff_delay",
    "with_position",
]
