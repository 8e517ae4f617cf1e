"""The permission hook: ``SWITCHBOARD_HOOKS=package.module:object``, your code in the decision.

The object may define any of three async methods; each returns a verdict::

    class Hooks:
        async def on_connect(self, client: ClientInfo) -> Verdict: ...
        async def on_subscribe(self, client: ClientInfo, channel: str) -> Verdict: ...
        async def on_publish(self, client: ClientInfo, channel: str, data: Any) -> Verdict: ...
        async def on_rpc(self, client: ClientInfo, method: str, data: Any) -> Any: ...

* ``None``: no opinion; the namespace's rules decide.
* ``True`` or ``Allow()``: allowed. In a ``granted`` namespace this grants the channel.
* ``False`` or ``Deny("why")``: refused with error 103 and that message.
* ``Allow(data=...)`` from ``on_publish``: allowed, and subscribers get this data instead.

``on_rpc`` answers an ``rpc`` command that no proxy takes (app/rpc.py): what it returns is the
reply's ``data``, and ``Deny("why")`` refuses with 103.

A hook that raises, or takes longer than ``SWITCHBOARD_HOOK_TIMEOUT``, refuses with error 100; it is
logged and counted (``switchboard_hook_failures_total{hook}``), and the socket stays open. The answer
comes at the deadline whatever the hook does: one that swallows its cancellation is still refused,
its late verdict ignored, and logged by name and counted (``switchboard_hook_overruns_total{hook}``).
Never block in a hook: it runs on the instance's event loop, so a synchronous call stalls every
socket of the instance, and no deadline can interrupt it (use async clients, or ``asyncio.to_thread``).
A hook never overrides a user-limited channel (``dm:#alice,bob``) or a ``server`` namespace.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Not app.metrics: config imports this module, and gunicorn's master must not touch metrics.

HOOK_NAMES = ("on_connect", "on_subscribe", "on_publish", "on_rpc")
UNCHANGED: Any = object()


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a hook is told about a connection. ``user`` is empty for an anonymous client."""

    client: str
    user: str
    name: str
    info: dict[str, Any] | None
    channels: tuple[str, ...]
    # Every claim of the connection's token, as verified (docs/auth.md); empty when anonymous.
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Allow:
    data: Any = field(default=UNCHANGED)


@dataclass(frozen=True, slots=True)
class Deny:
    message: str = "permission denied"


Verdict = Allow | Deny | bool | None


def load_hooks(spec: str) -> object:
    """Import ``package.module:object``; raises ValueError with one line on any failure."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(f"SWITCHBOARD_HOOKS={spec!r}: expected 'package.module:object'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken hook module must stop start-up, whatever it raised
        raise ValueError(f"SWITCHBOARD_HOOKS: cannot import {module_name!r}: {exc}") from None
    try:
        target: object = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"SWITCHBOARD_HOOKS: {module_name!r} has no {attr!r}") from None
    if not any(callable(getattr(target, name, None)) for name in HOOK_NAMES):
        raise ValueError(f"SWITCHBOARD_HOOKS: {spec!r} defines none of {', '.join(HOOK_NAMES)}")
    return target
