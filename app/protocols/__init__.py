"""The wire protocols, each a thin adapter over app/session.py that mounts its own route:
``switchboard`` (``/ws``, docs/protocol.md) and ``centrifuge`` (``/connection/websocket``)."""
