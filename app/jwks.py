"""An identity provider's signing keys, fetched from its JWKS (or found by OIDC discovery) and cached.

What holds under attack and outage:

* Only the configured URL is fetched (or, with discovery, the ``jwks_uri`` that the configured
  issuer's own discovery document names). A token's ``jku``/``x5u``/``jwk`` headers are refused
  before anything here runs, never followed.
* One fetch at a time, and none sooner than ``min_refresh`` after the last attempt, whatever
  asked for it: a flood of tokens with random ``kid``s costs the provider at most one request per
  ``min_refresh``. The background loop refreshes before the keys expire (``Cache-Control:
  max-age``, clamped to ``[min_refresh, max_ttl]``).
* A response is read to at most ``MAX_BYTES``, within ``timeout`` in all (a slow drip is cut).
* While the provider is down the keys already held keep working, until ``max_stale`` past their
  expiry; then tokens are refused with ``no_keys`` until a fetch succeeds. So an instance that
  starts with the provider down starts anyway, and refuses tokens with that reason.
* An entry with private key material, or a symmetric (``oct``) one, is refused and logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import httpx
import jwt
import orjson

from app import metrics, tracing
from app.auth_config import DISCOVERY_PATH, JwksOptions, check_url, key_fits

log = logging.getLogger("switchboard.auth")

MAX_BYTES = 1 << 20
# Members that only a private (or symmetric) JWK has: RFC 7518 6.2.2, 6.3.2, 6.4.1 and RFC 8037.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.I)
# Refresh this far into a key set's lifetime, so that tokens never wait on an expired cache.
REFRESH_AT = 0.8


class FetchFailed(Exception):
    """``result`` is the fetch metric's label: status, too_large, timeout, invalid, error."""

    def __init__(self, result: str) -> None:
        super().__init__(result)
        self.result = result


class NoKey(Exception):
    """``reason``: no_keys (none held yet, or too stale), unknown_key, bad_algorithm."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def max_age(header: str | None, options: JwksOptions) -> float:
    found = _MAX_AGE.search(header or "")
    ttl = float(found.group(1)) if found else options.cache_ttl
    return min(max(ttl, options.min_refresh), options.max_ttl)


def usable_entries(document: object, source: str) -> dict[str | None, dict[str, Any]]:
    """The set's public signing keys by ``kid``; raises FetchFailed("invalid") for a non-set."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise FetchFailed("invalid")
    found: dict[str | None, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if PRIVATE_MEMBERS & entry.keys():
            metrics.JWKS_KEYS_REFUSED.labels("private").inc()
            log.error("JWKS %s: refused key %r: it holds private key material (rotate that key now)", source, kid)
            continue
        if entry.get("kty") not in KEY_TYPES or entry.get("use", "sig") != "sig" or not isinstance(kid, str | None):
            metrics.JWKS_KEYS_REFUSED.labels("unsupported").inc()
            log.warning("JWKS %s: skipped key %r: not a public signing key of type RSA, EC or OKP", source, kid)
            continue
        found[kid] = entry
    return found


def _find(entries: dict[str | None, dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
    """The entry for ``kid``; a token without one may use a set of exactly one key."""
    if kid is None and len(entries) == 1:
        return next(iter(entries.values()))
    return entries.get(kid)


class RemoteKeys:
    """The keys of one provider's JWKS; ``key(kid, alg)`` is what a verification asks for."""

    def __init__(self, label: str, options: JwksOptions, *, jwks_url: str | None, issuer: str | None) -> None:
        self.label = label
        self.options = options
        self._issuer = issuer  # set: discovery finds the JWKS URL
        self._jwks_url = jwks_url
        self._entries: dict[str | None, dict[str, Any]] | None = None
        self._keys: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._ttl = options.cache_ttl
        self._last_attempt: float | None = None
        self._last_ok = False
        self._inflight: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    # -- verification side ------------------------------------------------------------------------

    async def key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        entries = self._current()
        entry = _find(entries, kid) if entries is not None else None
        if entry is None:  # not held (yet): fetch, unless one was tried within min_refresh
            await self.refresh(on_demand=True)
            entries = self._current()
            if entries is None:
                raise NoKey("no_keys")
            entry = _find(entries, kid)
            if entry is None:
                raise NoKey("unknown_key")
        return self._key(kid, entry, alg)

    def _key(self, kid: str | None, entry: dict[str, Any], alg: str) -> jwt.PyJWK:
        cached = self._keys.get((kid, alg))
        if cached is not None:
            return cached
        if entry.get("alg", alg) != alg:
            raise NoKey("bad_algorithm")  # the set binds this key to another algorithm
        try:
            built = jwt.PyJWK(entry, algorithm=alg)
        except jwt.PyJWTError:  # the key type does not fit the algorithm (its message holds the key)
            raise NoKey("bad_algorithm") from None
        if not key_fits(built.key, alg):
            raise NoKey("bad_algorithm")
        self._keys[(kid, alg)] = built
        return built

    def _current(self) -> dict[str | None, dict[str, Any]] | None:
        if self._entries is not None and time.monotonic() > self._fetched_at + self._ttl + self.options.max_stale:
            log.error("JWKS %s: keys are past SWITCHBOARD_JWKS_MAX_STALE and dropped; refusing tokens", self.label)
            self._entries, self._keys = None, {}
            metrics.JWKS_KEYS.labels(self.label).set(0)
        return self._entries

    # -- fetching ---------------------------------------------------------------------------------

    def _due(self) -> float:
        """When the next background fetch is due (monotonic)."""
        if self._last_attempt is None:
            return 0.0
        retry = self._last_attempt + self.options.min_refresh
        return max(retry, self._fetched_at + self._ttl * REFRESH_AT) if self._last_ok else retry

    async def refresh(self, *, on_demand: bool = False) -> None:
        """One fetch at a time; an on-demand one only ``min_refresh`` after the last attempt."""
        if self._inflight is None:
            recent = self._last_attempt is not None and time.monotonic() - self._last_attempt < self.options.min_refresh
            if on_demand and recent:
                return
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(lambda _: setattr(self, "_inflight", None))
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        # A root span of its own (or the verifying handshake's child, for an on-demand fetch).
        with tracing.span("jwks fetch", "client", {"switchboard.provider": self.label}) as span:
            await self._fetch_keys()
            if span is not None:
                span.set_attribute("switchboard.fetched", self._last_ok)

    async def _fetch_keys(self) -> None:
        self._last_attempt = time.monotonic()
        try:
            async with asyncio.timeout(self.options.timeout):
                url = self._jwks_url or await self._discover()
                document, cache_control = await self._get(url)
            entries = usable_entries(document, self.label)
        except FetchFailed as exc:
            self._failed(exc.result)
            return
        except TimeoutError:
            self._failed("timeout")
            return
        except (httpx.HTTPError, OSError):
            self._failed("error")
            return
        except Exception as exc:  # whatever else a hostile or broken provider causes
            self._failed("error", type(exc).__name__)
            return
        self._entries, self._keys, self._last_ok = entries, {}, True
        self._fetched_at, self._ttl = time.monotonic(), max_age(cache_control, self.options)
        metrics.JWKS_FETCHES.labels("ok").inc()
        metrics.JWKS_KEYS.labels(self.label).set(len(entries))
        metrics.JWKS_KEYS_EXPIRY.labels(self.label).set(time.time() + self._ttl)

    def _failed(self, result: str, detail: str = "") -> None:
        self._last_ok = False
        if self._issuer is not None:
            self._jwks_url = None  # discover again next time: the provider may have moved its keys
        metrics.JWKS_FETCHES.labels(result).inc()
        held = "keeping the keys held" if self._entries is not None else "refusing its tokens until it answers"
        log.warning("JWKS %s: fetch failed (%s%s); %s", self.label, result, f": {detail}" if detail else "", held)

    async def _discover(self) -> str:
        assert self._issuer is not None
        document, _ = await self._get(self._issuer.rstrip("/") + DISCOVERY_PATH)
        if not isinstance(document, dict) or document.get("issuer") != self._issuer:
            raise FetchFailed("invalid")  # the issuer's document must name that issuer (OIDC Discovery 4.3)
        uri = document.get("jwks_uri")
        # Held to the rule for configured URLs: https, or http to a loopback address.
        try:
            self._jwks_url = check_url(uri) if isinstance(uri, str) else None
        except ValueError:
            self._jwks_url = None
        if self._jwks_url is None:
            raise FetchFailed("invalid")
        return self._jwks_url

    async def _get(self, url: str) -> tuple[object, str | None]:
        if self._client is None:
            # Redirects are not followed: only the configured URL (or the discovered one) is fetched.
            self._client = httpx.AsyncClient(timeout=self.options.timeout, follow_redirects=False)
        async with self._client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise FetchFailed("status")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise FetchFailed("too_large")
            cache_control = response.headers.get("cache-control")
        try:
            return orjson.loads(body), cache_control
        except orjson.JSONDecodeError:
            raise FetchFailed("invalid") from None

    async def run(self) -> None:
        """Fetch at start, then refresh before expiry (or retry every ``min_refresh``); for ever."""
        while True:
            delay = self._due() - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.LISTENER_ERRORS.inc()
                log.exception("JWKS %s: refresh failed", self.label)
                await asyncio.sleep(self.options.min_refresh)

    async def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self._client is not None:
            await self._client.aclose()
