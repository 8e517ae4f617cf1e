"""What the SDK tests share: their namespaces and tokens."""

from __future__ import annotations

from app.auth import mint_token
from app.config import Settings
from tests.support import TEST_SECRET

# chat: open, with history, presence and join/leave; team: granted only (a subscription token).
NAMESPACES = """
[default]
subscribe = "public"
publish = "subscribers"

[namespaces.chat]
subscribe = "public"
publish = "subscribers"
history_size = 100
history_ttl = 3600
presence = true
join_leave = true

[namespaces.team]
subscribe = "granted"
publish = "granted"
presence = true
"""


def token(sub: str, ttl: float = 600, **claims: object) -> str:
    return mint_token(Settings(jwt_secret=TEST_SECRET), sub, None, ttl, **claims)
