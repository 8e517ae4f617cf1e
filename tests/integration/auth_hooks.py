"""A hook that decides on a claim Switchboard does not map (test_auth_providers.py loads it)."""

from __future__ import annotations

from app.hooks import ClientInfo, Deny, Verdict


class Hooks:
    async def on_connect(self, client: ClientInfo) -> Verdict:
        # Keycloak puts realm roles in a nested claim: every claim reaches the hook.
        roles = client.claims.get("realm_access", {}).get("roles", [])
        if client.user.startswith("kc-") and "chat" not in roles:
            return Deny("needs the chat role")
        return None


hooks = Hooks()
