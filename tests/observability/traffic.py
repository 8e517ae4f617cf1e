"""/ws protocol traffic for tests/observability/test_prometheus_e2e.py, meant to make the newer
metrics move: tokens from a real identity provider (JWKS fetches, a refused private entry),
subscribes, publishes, presence and history, hook failures and an overrun, command errors, a
user over the connection limit, an rpc proxy call that fails, and server API calls.

Some traffic leaves no trace in the counters in some setups (a refusal the instance never sees):
``DRIVEN`` names the series it must move, and the test checks that each did.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from app.auth import mint_token
from app.config import Settings
from tests.idp import IdentityProvider, SigningKey
from tests.integration.wsproto import Proto, connected
from tests.support import API_HEADERS, TEST_SECRET, expect_close, free_port, ws_connect

REALM = "/obs"
PROVIDER = "idp"
HOOK_TIMEOUT = "0.5"
# The series the traffic must have moved (name, a label=value it carries or "").
DRIVEN = [
    ("switchboard_jwks_fetches_total", 'result="ok"'),
    ("switchboard_jwks_keys", f'provider="{PROVIDER}"'),
    ("switchboard_jwks_keys_expiry_timestamp_seconds", f'provider="{PROVIDER}"'),
    ("switchboard_jwks_keys_refused_total", 'reason="private"'),
    ("switchboard_hook_failures_total", 'hook="on_subscribe"'),
    ("switchboard_hook_overruns_total", 'hook="on_subscribe"'),
    ("switchboard_command_errors_total", 'code="100"'),
    ("switchboard_command_errors_total", 'code="107"'),
    ("switchboard_connects_total", 'result="refused_user_limit"'),
    ("switchboard_presence_sweeps_total", 'result="ok"'),
    ("switchboard_proxy_calls_total", 'kind="rpc",result="unreachable"'),
    ("switchboard_command_errors_total", 'code="113"'),
]


def not_moved(metrics_text: str) -> list[str]:
    """The ``DRIVEN`` series that are missing or zero in ``metrics_text`` (/metrics of any instances)."""
    missing = []
    for name, label in DRIVEN:
        values = re.findall(rf"^{name}{{[^}}]*{re.escape(label)}[^}}]*}} (\S+)$", metrics_text, re.MULTILINE)
        if not any(float(v) > 0 for v in values):
            missing.append(f"{name}{{{label}}}: {values}")
    return missing


def config(issuer: str, backend: str) -> str:
    """The instances' SWITCHBOARD_CONFIG: a hooked namespace, an rpc proxy to a backend that is
    not there, and the identity provider."""
    return f"""
[default]
[namespaces.hooked]
subscribe = "granted"

[rpc.proxies]
"obs." = "{backend}/rpc"

[[auth.providers]]
name = "{PROVIDER}"
issuer = "{issuer}"
jwks_url = "{issuer}/jwks.json"
algorithms = ["RS256"]
"""


def traffic_env(workdir: Path, idp: IdentityProvider, key: SigningKey) -> dict[str, str]:
    """Settings for every instance; the provider serves one good key and one private entry."""
    private = SigningKey("RS256", "leaked").private_jwk()
    idp.realm(REALM, [key.jwk(), private])
    path = workdir / "switchboard.toml"
    path.write_text(config(idp.issuer(REALM), f"http://127.0.0.1:{free_port()}"))  # nothing listens
    return {
        "SWITCHBOARD_CONFIG": str(path),
        "SWITCHBOARD_HOOKS": "tests.integration.ws_hooks:hooks",
        "SWITCHBOARD_HOOK_TIMEOUT": HOOK_TIMEOUT,
        "SWITCHBOARD_USER_CONNECTION_LIMIT": "1",
    }


def idp_token(idp: IdentityProvider, key: SigningKey, sub: str) -> str:
    now = int(time.time())
    return key.sign({"iss": idp.issuer(REALM), "sub": sub, "iat": now, "exp": now + 300})


async def protocol_traffic(ws_a: str, ws_b: str, http_b: str, idp: IdentityProvider, key: SigningKey) -> None:
    """``ws_a``/``ws_b``: the two instances' ``ws://host:port``; ``http_b``: the second one's API.

    Each client sends at most five frames (the stack's rate-limit burst)."""
    secret_token = mint_token(Settings(jwt_secret=TEST_SECRET), "ann", "Ann", 600)
    async with connected(f"{ws_b}/ws", mint_token(Settings(jwt_secret=TEST_SECRET), "rita", "Rita", 600)) as rita:
        assert await rita.error("rpc", method="obs.ping", data={}) == 113  # the backend is unreachable
    async with (
        connected(f"{ws_a}/ws", idp_token(idp, key, "olga")) as olga,
        connected(f"{ws_b}/ws", secret_token) as ann,
    ):
        await olga.ok("subscribe", channel="feed")
        await ann.ok("subscribe", channel="feed")
        await ann.ok("publish", channel="feed", data={"n": 1})
        assert (await olga.pubs("feed", 1))[0]["data"] == {"n": 1}
        assert (await olga.ok("presence", channel="feed"))["ok"] is True
        assert (await ann.ok("history", channel="feed"))["ok"] is True
        # Refusals: a hook that raises, one that overruns its deadline, and a malformed command;
        # shared out so that neither client passes the stack's rate-limit burst of five frames.
        assert await olga.error("subscribe", channel="hooked:raise") == 100
        assert await ann.error("subscribe", channel="hooked:hang") == 100
        assert await olga.error("subscribe") == 107
        # Ann again, on the other instance: over her limit of one connection.
        async with ws_connect(f"{ws_a}/ws") as second:
            await Proto(second).send({"id": 1, "op": "connect", "token": secret_token})
            assert (await expect_close(second))[0] == 4004
        async with httpx.AsyncClient(base_url=http_b, headers=API_HEADERS, timeout=5) as api:
            (await api.post("/api/v1/publish", json={"channel": "feed", "data": {"n": 2}})).raise_for_status()
            clients = (await api.post("/api/v1/presence", json={"channel": "feed"})).json()["clients"]
            assert sorted(c["user"] for c in clients) == ["ann", "olga"]
        assert (await olga.pubs("feed", 1))[0]["data"] == {"n": 2}
