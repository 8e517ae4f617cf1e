"""Python clients for Switchboard: the server API (``switchboard_client.api``) for backends, and the
realtime ``/ws`` clients (``switchboard_client.realtime``) for services, tests and scripts.

The version below is the one place it is written: the build reads it from here.
"""

__version__ = "0.1.0"
