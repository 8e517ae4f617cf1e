"""Who may subscribe to and publish on what: namespace rules, JWT claims, subscription tokens, hook.

Every endpoint asks here, the tutorial ones included, so one rule holds however a client came in.
The order of the checks, each of which refuses with a protocol error:

1. the channel name is valid, not reserved (app/reserved.py), and its namespace exists;
2. a user-limited channel (``dm:#alice,bob``) admits only the users it names;
3. a subscription token, when given, must be valid, unexpired, for this user and this channel;
4. the hook may refuse, allow (a grant), or replace published data;
   then a namespace's ``subscribe_proxy``/``publish_proxy`` asks the backend (docs/proxies.md),
   which refuses or allows (a grant) the same way, after the ``authenticated``/``subscribers``
   rules, so that a call is never spent on what those refuse;
5. the namespace's mode: ``public``/``authenticated``/``granted`` to subscribe, and
   ``server``/``subscribers``/``authenticated``/``granted`` to publish. ``server`` is never
   overridden: only the server API publishes there.

Reading a channel (history, presence) follows its namespace's ``ReadMode`` (``check_read``):
``subscribable`` (whoever passes the subscribe checks now, subscribers included), ``subscribers``
(only a connection in the channel), or ``nobody`` (only the server API).
"""

from __future__ import annotations

import asyncio
import logging
import re
from functools import partial
from typing import Any, Protocol

from app import metrics, tracing
from app.auth import Authenticator, AuthError, Identity
from app.config import Settings
from app.errors import RESERVED_CHANNEL, ErrorCode, ProtocolError
from app.grants import Grants
from app.hooks import HOOK_NAMES, UNCHANGED, Allow, ClientInfo, Deny
from app.namespaces import ChannelOptions, ReadMode
from app.proxy_calls import Proxies
from app.reserved import reserved

log = logging.getLogger("switchboard.hooks")

# Today's tutorial rule (letters, digits and ``_.:@~-``, 1-128 of them), plus ``#`` and ``,`` for
# user-limited channels; the 128 count after the namespace, so ``room:{id}`` takes any tutorial id.
# The namespace, the part before the first colon, is ASCII like every declarable one
# (app/namespaces.py), so no look-alike of a namespace can pass for another or for a reserved one.
# fullmatch: ``$`` alone would let a trailing newline through.
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}:[\w.:@~#,-]{1,128}|[\w.@~#,-]{1,128}")
TUTORIAL_CHANNEL_PART = re.compile(r"[\w.:@~-]{1,128}")


def valid_channel(name: object) -> bool:
    return isinstance(name, str) and name.isprintable() and CHANNEL_NAME.fullmatch(name) is not None


def check_channel(name: object) -> str:
    """The name, if a client or the server API may use it as a channel: every entry point asks here.

    Raises ProtocolError: 102 for a reserved name in any spelling (app/reserved.py), 107 for one
    that breaks the name rule."""
    if isinstance(name, str) and reserved(name):
        raise ProtocolError(ErrorCode.UNKNOWN_CHANNEL, RESERVED_CHANNEL)
    if not valid_channel(name):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "invalid channel name")
    assert isinstance(name, str)
    return name


def allowed_users(channel: str) -> list[str] | None:
    """The users a user-limited channel admits (``ns:#alice,bob``), or None if it is not one."""
    _, hash_sign, users = channel.partition("#")
    return users.split(",") if hash_sign else None


def personal_channel(namespace: str, user: str) -> str | None:
    """The user's personal channel, or None if it has none (anonymous, no namespace set, or a
    user id that cannot be part of a channel name: too long, or with a ``,`` or a space)."""
    if not namespace or not user or "," in user:
        return None
    channel = f"{namespace}:#{user}"
    return channel if valid_channel(channel) else None


class Hooks:
    """Calls the hook object's methods with a deadline and turns what they return into a verdict."""

    def __init__(self, target: object | None, timeout: float) -> None:
        self._target = target
        self._timeout = timeout
        # Calls still running after their deadline: referenced until they end, or the event loop
        # would collect them mid-run (their verdicts are refused already).
        self._overrunning: set[asyncio.Future[Any]] = set()
        for name in HOOK_NAMES:
            metrics.HOOK_FAILURES.labels(name)  # exported from start-up, so dashboards show zeros
            metrics.HOOK_OVERRUNS.labels(name)

    def has(self, name: str) -> bool:
        return self._target is not None and callable(getattr(self._target, name, None))

    async def invoke(self, name: str, *args: Any) -> Any:
        """What the hook method returns, by its deadline; one that raises or overruns refuses with 100."""
        try:
            with tracing.span(f"hook {name}"):  # name is one of HOOK_NAMES
                return await self._call(name, *args)
        except (asyncio.CancelledError, ProtocolError):
            raise
        except Exception:
            metrics.HOOK_FAILURES.labels(name).inc()
            log.exception("hook %s raised: refused", name)
            raise ProtocolError(ErrorCode.INTERNAL, f"{name} hook failed") from None

    async def ask(self, name: str, *args: Any) -> Allow | None:
        """``Allow`` (maybe with new data), or None for no opinion. Raises ProtocolError to refuse."""
        if not self.has(name):
            return None
        verdict = await self.invoke(name, *args)
        if verdict is None:
            return None
        if verdict is True:
            return Allow()
        if isinstance(verdict, Allow):
            return verdict
        if verdict is False:
            raise ProtocolError(ErrorCode.PERMISSION_DENIED)
        if isinstance(verdict, Deny):
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, verdict.message)
        metrics.HOOK_FAILURES.labels(name).inc()
        log.error("hook %s returned %r; expected None, True, False, Allow or Deny: refused", name, type(verdict))
        raise ProtocolError(ErrorCode.INTERNAL, f"{name} hook failed")

    async def _call(self, name: str, *args: Any) -> Any:
        """The hook's return value, or ProtocolError(100) at the deadline, whatever the hook does.

        The hook runs as a task and we wait on the task, not in it: ``asyncio.timeout`` around
        the call would wait for the hook to accept its cancellation, and one that catches it
        answered late (after 6 s with a 2 s deadline). A hook that blocks the event loop (a
        synchronous call) stalls every socket of the instance and no deadline can interrupt it.
        """
        task = asyncio.ensure_future(getattr(self._target, name)(*args))
        try:
            done, _ = await asyncio.wait((task,), timeout=self._timeout)
        except asyncio.CancelledError:
            task.cancel()  # the socket went away: nobody waits for this verdict
            raise
        if done:
            return task.result()
        task.cancel()  # asks; a hook that swallows it keeps running, and its verdict is ignored
        self._overrunning.add(task)
        task.add_done_callback(partial(self._ended, name))
        metrics.HOOK_FAILURES.labels(name).inc()
        metrics.HOOK_OVERRUNS.labels(name).inc()
        log.warning("hook %s still running after its %.1fs deadline: refused", name, self._timeout)
        raise ProtocolError(ErrorCode.INTERNAL, f"{name} hook failed")

    def _ended(self, name: str, task: asyncio.Future[Any]) -> None:
        self._overrunning.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("hook %s raised %s after its deadline", name, type(exc).__name__)


class Caller(Protocol):
    """Who asks: a Session, as the checks see it."""

    @property
    def client(self) -> str: ...

    @property
    def identity(self) -> Identity: ...

    @property
    def grants(self) -> Grants | None:
        """The identity's ``channels`` claim, compiled."""
        ...

    @property
    def subscriptions(self) -> set[str]: ...


class Permissions:
    def __init__(
        self, settings: Settings, hooks: Hooks, auth: Authenticator | None = None, proxies: Proxies | None = None
    ) -> None:
        self._settings = settings
        self.auth = auth or Authenticator.from_settings(settings)
        self.namespaces = settings.namespaces
        self.hooks = hooks
        self.proxies = proxies  # the namespaces' subscribe_proxy and publish_proxy go through it

    def options(self, channel: object) -> ChannelOptions:
        """The channel's options; refuses an invalid name (107), a reserved or unknown namespace (102)."""
        channel = check_channel(channel)
        found = self.namespaces.known(channel)
        if found is None:
            raise ProtocolError(ErrorCode.UNKNOWN_CHANNEL, self.namespaces.unknown(channel))
        return found

    async def check_subscribe(
        self, caller: Caller, channel: str, opts: ChannelOptions, token: str | None
    ) -> int | None:
        """Refuses with ProtocolError; returns the subscription token's ``exp`` (None: no token, or
        one without ``exp``)."""
        user = caller.identity.user_id
        self._check_user_limited(user, channel)
        granted, expires = False, None
        if token is not None:
            expires = await self.check_subscription_token(token, user, channel)
            granted = True
        allowed = await self._ask("on_subscribe", caller, channel)
        granted = granted or allowed is not None or _matches(caller.grants, channel)
        mode = opts.subscribe
        if mode == "authenticated" and not user:
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, "sign in to subscribe here")
        # The backend decides, as Centrifugo's does, unless a subscription token already has.
        if opts.subscribe_proxy and token is None and self.proxies is not None:
            await self.proxies.subscribe(opts.subscribe_proxy, caller.client, caller.identity, channel)
            granted = True
        if mode == "granted" and not granted:
            raise ProtocolError(ErrorCode.PERMISSION_DENIED)
        return expires

    async def check_publish(
        self, caller: Caller, channel: str, opts: ChannelOptions, data: Any, subscribed: bool
    ) -> Any:
        """Returns the data to publish: the client's, or the hook's replacement."""
        mode, user = opts.publish, caller.identity.user_id
        if mode == "server":
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, "only the server publishes here")
        self._check_user_limited(user, channel)
        allowed = await self._ask("on_publish", caller, channel, data)
        if mode == "subscribers" and not subscribed:
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, "subscribe before publishing here")
        if mode == "authenticated" and not user:
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, "sign in to publish here")
        if allowed is not None and allowed.data is not UNCHANGED:
            data = allowed.data
        if opts.publish_proxy and self.proxies is not None:
            # The backend sees what would be published (the hook's rewrite), and may rewrite it.
            replaced = await self.proxies.publish(opts.publish_proxy, caller.client, caller.identity, channel, data)
            return data if replaced is UNCHANGED else replaced
        if mode == "granted" and allowed is None and not _matches(caller.grants, channel):
            raise ProtocolError(ErrorCode.PERMISSION_DENIED)
        return data

    async def check_read(self, caller: Caller, channel: str, opts: ChannelOptions, mode: ReadMode, what: str) -> None:
        """May ``caller`` read ``what`` (history, presence) of ``channel``? Raises ProtocolError:
        110 (not subscribed) where only subscribers may, 103 where no client may."""
        if mode == "nobody":
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, f"{what} is for the server API only here")
        if channel in caller.subscriptions:
            return
        if mode == "subscribers":
            raise ProtocolError(ErrorCode.NOT_SUBSCRIBED, f"{what} is for subscribers")
        await self.check_subscribe(caller, channel, opts, None)

    async def check_connect(self, caller: Caller) -> None:
        await self._ask("on_connect", caller)

    async def _ask(self, name: str, caller: Caller, *args: Any) -> Allow | None:
        """The hook's verdict; what it is told about the caller is built only if it is called."""
        if not self.hooks.has(name):
            return None
        return await self.hooks.ask(name, client_info(caller.client, caller.identity), *args)

    @staticmethod
    def _check_user_limited(user: str, channel: str) -> None:
        users = allowed_users(channel)
        if users is not None and (not user or user not in users):
            raise ProtocolError(ErrorCode.PERMISSION_DENIED, "this channel is limited to the users it names")

    async def check_subscription_token(self, token: object, user: str, channel: str) -> int | None:
        """The token's ``exp``, if it grants ``channel`` to ``user``; raises ProtocolError."""
        if not isinstance(token, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "token must be a string")
        try:
            return await self.auth.verify_subscription(token, user, channel)
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(f"subscription_{exc.reason}").inc()
            if exc.reason == "expired":
                raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "subscription token expired") from None
            if exc.reason in ("wrong_user", "wrong_channel"):
                raise ProtocolError(ErrorCode.PERMISSION_DENIED, f"subscription token: {exc.reason}") from None
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"subscription token: {exc.detail}") from None


def client_info(client: str, identity: Identity) -> ClientInfo:
    return ClientInfo(client, identity.user_id, identity.name, identity.info, identity.channels, identity.claims)


def _matches(grants: Grants | None, channel: str) -> bool:
    return grants is not None and grants.matches(channel)
