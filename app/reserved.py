"""The names Switchboard keeps for itself: no client, API call or tutorial path may use one.

A client's channel name is used verbatim as a Redis pub/sub channel (in Redis Cluster, a sharded
one), and inside Redis keys only between hash-tag braces, which a channel name cannot contain.
Switchboard's own channels and keys all begin with one of two prefixes:

* ``switchboard:``: the user control channel ``switchboard:users`` (app/users.py), the listener's
  liveness probe ``switchboard:control`` (app/broker/redis.py), Redis Cluster's per-shard probes
  ``switchboard:probe:N`` (app/broker/cluster.py), each process's emulation relay
  ``switchboard:emulation:<node>`` (app/protocols/emulation.py); the keys ``switchboard:user:*``,
  ``switchboard:user-slots-epoch`` (app/user_slots.py), ``switchboard:presence:*``,
  ``switchboard:presence-users:*``, ``switchboard:presence-expiries`` (app/presence_scripts.py),
  ``switchboard:presence-sweeper`` and ``switchboard:instances``;
* ``sb:``: a channel's history, epoch and idempotency keys, ``sb:{channel}:...``
  (app/broker/scripts.py).

So the namespaces ``switchboard`` and ``sb`` are reserved. A client that subscribed to
``switchboard:users`` would read every user command and, by unsubscribing, make its instance
deaf to them; one that cycled ``switchboard:control`` would make the listener miss its probe and
reconnect. ``reserved`` compares the namespace after Unicode compatibility normalisation and case
folding, so ``SwitchBoard:users`` and full-width ``sb:x`` are refused as well: they are different Redis
names, but a refusal that depends on the exact spelling is one a later change could undo.
``internal`` is the exact-bytes check that the Hub applies itself, on every join, as a second wall.
"""

from __future__ import annotations

import unicodedata

RESERVED_NAMESPACES = frozenset({"switchboard", "sb"})
# The exact prefixes of the names Redis sees (Redis compares bytes): the Hub's own check.
INTERNAL_PREFIXES = tuple(f"{namespace}:" for namespace in sorted(RESERVED_NAMESPACES))


def fold(text: str) -> str:
    """Unicode's NFKC_Casefold, near enough: compatibility forms and case both folded away."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def reserved(name: str) -> bool:
    """True if ``name`` (a channel, or a tutorial path's room or channel part) is in a reserved
    namespace, in any case or compatibility spelling (``SB:x``, full-width letters, the long s...)."""
    namespace, colon, _ = fold(name).partition(":")
    return bool(colon) and namespace in RESERVED_NAMESPACES


def internal(channel: str) -> bool:
    """True if ``channel`` is spelled like one of Switchboard's own Redis names."""
    return channel.startswith(INTERNAL_PREFIXES)
