"""Admin sign-in for the web UI (``app/routes/admin.py``): sessions, CSRF tokens, failed sign-ins.

* A session is a cookie the server signed: ``<payload>.<mac>``, the payload base64url JSON of the
  admin's name, a random session id and an expiry; the mac HMAC-SHA256 under a key derived from
  SWITCHBOARD_ADMIN_PASSWORD. Any instance with the same password accepts it, nothing is stored,
  and changing the password ends every session.
* The CSRF token is an HMAC of the session id under the same key: per session, never in a cookie,
  so a page on another site can neither read it nor have the browser send it.
* Failed sign-ins are counted per client address in a bounded LRU: at most ``FAILURES`` within
  ``WINDOW`` seconds, then refused (even the right password) until the oldest failure ages out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import orjson

COOKIE = "sb_admin"
NAME = re.compile(r"[A-Za-z0-9_.@\-]{1,64}")
FAILURES = 5  # failed sign-ins per client address per WINDOW
WINDOW = 60.0
MAX_CLIENTS = 4096  # addresses remembered; the least recently failing are forgotten first


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class AdminSession:
    name: str
    sid: str
    expires: float


class AdminKeys:
    """Checks the password; signs and verifies session cookies and CSRF tokens."""

    def __init__(self, password: str, ttl: float) -> None:
        self._password = hashlib.sha256(password.encode()).digest()
        # Derived, not the password itself: a leaked mac says nothing about what to type.
        self._key = hmac.new(password.encode(), b"switchboard admin sessions v1", hashlib.sha256).digest()
        self.ttl = ttl

    def password_ok(self, given: str) -> bool:
        # Digests of equal length: the comparison's time says nothing about the password's length.
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._password)

    def _mac(self, purpose: bytes, text: str) -> str:
        return _b64(hmac.new(self._key, purpose + text.encode(), hashlib.sha256).digest())

    def issue(self, name: str, now: float | None = None) -> tuple[AdminSession, str]:
        expires = (time.time() if now is None else now) + self.ttl
        session = AdminSession(name, secrets.token_hex(8), expires)
        payload = _b64(orjson.dumps({"n": name, "s": session.sid, "e": expires}))
        return session, f"{payload}.{self._mac(b'session:', payload)}"

    def verify(self, cookie: str | None, now: float | None = None) -> AdminSession | None:
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(b"session:", payload).encode()):
            return None
        try:
            found = orjson.loads(_unb64(payload))
            session = AdminSession(str(found["n"]), str(found["s"]), float(found["e"]))
        except (ValueError, KeyError, TypeError):
            return None  # signed by us, so never in practice: a key from an older format
        return session if session.expires > (time.time() if now is None else now) else None

    def csrf(self, session: AdminSession) -> str:
        return self._mac(b"csrf:", session.sid)

    def csrf_ok(self, session: AdminSession, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf(session).encode())


class SignInLimiter:
    """At most ``failures`` failed sign-ins per address per ``window``, for ``max_clients`` addresses."""

    def __init__(self, failures: int = FAILURES, window: float = WINDOW, max_clients: int = MAX_CLIENTS) -> None:
        self.failures, self.window, self.max_clients = failures, window, max_clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._seen.get(address)
        while times and times[0] <= now - self.window:
            times.popleft()
        if times is not None and not times:
            del self._seen[address]
            return None
        return times

    def retry_after(self, address: str, now: float | None = None) -> float:
        """0 if ``address`` may try now; else the seconds until its oldest failure ages out."""
        now = time.monotonic() if now is None else now
        times = self._recent(address, now)
        if times is None or len(times) < self.failures:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._recent(address, now)
        if times is None:
            times = self._seen[address] = deque(maxlen=self.failures)
        times.append(now)
        self._seen.move_to_end(address)
        while len(self._seen) > self.max_clients:
            self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._seen.pop(address, None)
