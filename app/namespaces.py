"""Namespaces: per-channel-family options, loaded from the TOML file ``SWITCHBOARD_CONFIG`` names.

A channel's namespace is the part before its first ``:`` (``news:eu`` is in ``news``); a name
without a colon (``chat``, the tutorial's chat channel, among them) is in the default namespace,
set by the file's ``[default]`` table. The file is data, not code paths: it is read once at
start-up into typed ``ChannelOptions``, and a channel's options are looked up when it is joined or
published to, never per delivered message::

    [default]                   # channels without a namespace
    publish = "subscribers"

    [namespaces.news]
    subscribe = "public"        # public | authenticated | granted
    publish = "server"          # server | subscribers | authenticated | granted
    history_size = 100          # 0 = no history, no offsets
    history_ttl = 600
    presence = true             # presence and presence_stats allowed to subscribers
    join_leave = false          # join/leave pushes (not in the tutorial's room and global)
    force_push_join_leave = false  # ... to Centrifugo SDK subscribers that did not ask too
    force_recovery = true       # Centrifugo SDK subscriptions recoverable without asking
    force_positioning = true    # ... and positioned
    allow_history_for_subscriber = true   # history for subscribers only (unset: who may subscribe)
    allow_presence_for_subscriber = true  # false: presence kept, read by the server API only
    subscribe_proxy = "http://backend:9000/switchboard/subscribe"  # the backend decides (docs/proxies.md)
    publish_proxy = "http://backend:9000/switchboard/publish"      # ... and may rewrite the data
    allowed_delta_types = ["fossil"]  # Centrifugo subscribers may negotiate Fossil deltas (docs/sdks.md)

    [rpc.proxies]               # rpc methods by prefix; the longest matching prefix wins
    "billing." = "http://billing:9000/switchboard/rpc"

Without a file every namespace is ``public``/``subscribers`` with the global history settings,
which is the tutorial endpoints' open behaviour. With a file, a channel in a namespace the file
does not declare is refused (error 102), except the tutorial's ``room`` and ``global``, which
follow ``[default]`` unless the file gives them tables of their own.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.auth_config import AuthSection
from app.broker.base import HistoryOptions
from app.reserved import reserved

SubscribeMode = Literal["public", "authenticated", "granted"]
PublishMode = Literal["server", "subscribers", "authenticated", "granted"]
# Who may read a channel's history or presence through a client command: whoever may subscribe to
# it now (subscribers included), its subscribers only, or no client (the server API still reads).
ReadMode = Literal["subscribable", "subscribers", "nobody"]
# The tutorial endpoints' namespaces: their frames are the tutorial's, and their endpoints announce
# joins and leaves in their own frame shapes, so they never carry join/leave pushes.
TUTORIAL_NAMESPACES = ("room", "global")
# A namespace is the part of a channel name before its first colon, so it has none itself.
NAMESPACE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_proxy_url(url: str) -> str:
    """A backend URL from configuration: absolute http(s), with a host. Raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    return url


class ConfigError(ValueError):
    """A bad namespaces file; the message is one line naming the key and the problem."""


class Namespace(BaseModel):
    """One ``[namespaces.X]`` table (or ``[default]``). Unset history values take the global ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscribe: SubscribeMode = "public"
    publish: PublishMode = "subscribers"
    history_size: int | None = Field(default=None, ge=0, le=1_000_000)
    history_ttl: float | None = Field(default=None, ge=1, le=30 * 86400)
    presence: bool = True
    join_leave: bool = False
    subscribe_proxy: str | None = None
    publish_proxy: str | None = None
    allowed_delta_types: tuple[Literal["fossil"], ...] = ()
    # Centrifugo's names (docs/sdks.md#moving-from-centrifugo), mapped onto the options above.
    # Recovery and positioning are forced by default: every Centrifugo SDK subscription in a
    # namespace with history is recoverable and positioned, as Switchboard always made them.
    force_recovery: bool = True
    force_positioning: bool = True
    force_push_join_leave: bool = False
    allow_publish_for_subscriber: bool | None = None  # true: publish = "subscribers"; false: "server"
    allow_history_for_subscriber: bool | None = None  # unset: "subscribable"; true "subscribers"; false "nobody"
    allow_presence_for_subscriber: bool | None = None  # unset or true: subscribers; false: nobody

    def publish_mode(self) -> PublishMode:
        if self.allow_publish_for_subscriber is None:
            return self.publish
        return "subscribers" if self.allow_publish_for_subscriber else "server"

    def conflict(self) -> str | None:
        """Why ``allow_publish_for_subscriber`` contradicts ``publish``, if it does (both given)."""
        if self.allow_publish_for_subscriber is None or "publish" not in self.model_fields_set:
            return None
        if self.publish_mode() != self.publish:
            return f'contradicts publish = {self.publish!r} (true means "subscribers", false "server")'
        return None


def read_mode(allowed: bool | None, unset: ReadMode) -> ReadMode:
    if allowed is None:
        return unset
    return "subscribers" if allowed else "nobody"


class Rpc(BaseModel):
    """``[rpc]``: where ``rpc`` methods go, by method prefix (beside SWITCHBOARD_RPC_PROXY_URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proxies: dict[str, str] = {}


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Namespace = Namespace()
    namespaces: dict[str, Namespace] = {}
    rpc: Rpc = Rpc()
    # Token providers (docs/auth.md): the same file, read once, so one file says who may do what.
    auth: AuthSection = AuthSection()


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """Everything the server needs to know about a channel, resolved from its namespace."""

    namespace: str  # "" for the default namespace
    subscribe: SubscribeMode
    publish: PublishMode
    history: HistoryOptions
    presence: bool
    join_leave: bool  # join/leave announced (``join_leave`` or ``force_push_join_leave``)
    # Backend URLs that decide subscribe and publish here (app/proxy_calls.py), or None.
    subscribe_proxy: str | None = None
    publish_proxy: str | None = None
    delta: bool = False  # Fossil deltas may be negotiated (``allowed_delta_types``)
    # Centrifugo's SDK options (app/protocols/centrifuge_commands.py): join/leave pushes to every
    # subscriber (not only those whose subscribe asked), recovery and positioning without asking.
    force_join_leave: bool = False
    force_recovery: bool = True
    force_positioning: bool = True
    history_read: ReadMode = "subscribable"
    presence_read: ReadMode = "subscribers"


class Namespaces:
    """The options of every namespace; ``for_channel`` is a string split and a dict lookup."""

    def __init__(
        self, config: ConfigFile | None = None, history: HistoryOptions | None = None, source: str = ""
    ) -> None:
        # With a file, only the namespaces it declares exist (plus the tutorial's and the default).
        self.strict = config is not None
        self.source = source  # the file's name, for refusals that say where to declare a namespace
        config = config or ConfigFile()
        self.history = history or HistoryOptions()
        self._default = self._resolve("", config.default)
        self._by_name = {name: self._resolve(name, ns) for name, ns in config.namespaces.items()}
        # Longest prefix first, so that the first match is the most specific.
        self.rpc_proxies = sorted(config.rpc.proxies.items(), key=lambda item: -len(item[0]))

    def _resolve(self, name: str, ns: Namespace) -> ChannelOptions:
        size = self.history.size if ns.history_size is None else ns.history_size
        ttl = self.history.ttl if ns.history_ttl is None else ns.history_ttl
        # The epoch must outlive the messages, or a channel could pass a gap off as "nothing missed".
        history = replace(self.history, size=size, ttl=ttl, meta_ttl=max(self.history.meta_ttl, ttl))
        return ChannelOptions(
            name,
            ns.subscribe,
            ns.publish_mode(),
            history,
            ns.presence,
            ns.join_leave or ns.force_push_join_leave,
            ns.subscribe_proxy,
            ns.publish_proxy,
            delta="fossil" in ns.allowed_delta_types,
            force_join_leave=ns.force_push_join_leave,
            force_recovery=ns.force_recovery,
            force_positioning=ns.force_positioning,
            history_read=read_mode(ns.allow_history_for_subscriber, "subscribable"),
            presence_read=read_mode(ns.allow_presence_for_subscriber, "subscribers"),
        )

    def for_channel(self, channel: str) -> ChannelOptions:
        name, colon, _ = channel.partition(":")
        if not colon:
            return self._default
        return self._by_name.get(name) or self._default

    def known(self, channel: str) -> ChannelOptions | None:
        """Like ``for_channel``, but None for a namespace that a loaded file does not declare."""
        name, colon, _ = channel.partition(":")
        if not colon:
            return self._default
        found = self._by_name.get(name)
        if found is None and (not self.strict or name in TUTORIAL_NAMESPACES):
            return self._default
        return found

    def unknown(self, channel: str) -> str:
        """The refusal of a channel whose namespace ``known`` did not find: what to declare, where.

        Only the file's name, not its directory: clients read this, and the layout of the server's
        disk is none of their business."""
        name = channel.partition(":")[0]
        source = self.source or "the namespaces file"
        return f"unknown namespace {name!r}: {source} (SWITCHBOARD_CONFIG) does not declare it"

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def rpc_proxy(self, method: str) -> str | None:
        """The URL of the longest ``[rpc.proxies]`` prefix that ``method`` starts with, or None."""
        return next((url for prefix, url in self.rpc_proxies if method.startswith(prefix)), None)


def load_namespaces(path: Path | None, history: HistoryOptions) -> Namespaces:
    """Read and check the file; raises ConfigError with one line that names the key and the problem."""
    return Namespaces(read_config(path), history, path.name if path else "")


def read_config(path: Path | None) -> ConfigFile | None:
    """The whole file, checked (None without one); raises ConfigError with one line."""
    if path is None:
        return None
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {problem}") from None
    for where, url in _proxy_urls(config):
        try:
            check_proxy_url(url)
        except ValueError as exc:
            raise ConfigError(f"{path}: {where}: {exc}") from None
    tables = [("default", config.default), *((f"namespaces.{n}", ns) for n, ns in config.namespaces.items())]
    for where, ns in tables:
        if (why := ns.conflict()) is not None:
            raise ConfigError(f"{path}: {where}.allow_publish_for_subscriber: {why}")
    for name, ns in config.namespaces.items():
        if not NAMESPACE_NAME.fullmatch(name):
            raise ConfigError(f"{path}: namespaces.{name}: a namespace name is 1-64 letters, digits, '_', '.' or '-'")
        if reserved(f"{name}:"):
            raise ConfigError(f"{path}: namespaces.{name}: reserved for Switchboard's own channels and keys")
        if name in TUTORIAL_NAMESPACES and (ns.join_leave or ns.force_push_join_leave):
            raise ConfigError(
                f"{path}: namespaces.{name}.join_leave: the {name} endpoints announce joins in their own frames"
            )
    return config


def _proxy_urls(config: ConfigFile) -> list[tuple[str, str]]:
    """Every backend URL in the file, with the key it is under."""
    tables = [("default", config.default), *((f"namespaces.{n}", ns) for n, ns in config.namespaces.items())]
    found = [
        (f"{where}.{key}", url)
        for where, ns in tables
        for key in ("subscribe_proxy", "publish_proxy")
        if (url := getattr(ns, key)) is not None
    ]
    found += [(f"rpc.proxies.{prefix}", url) for prefix, url in config.rpc.proxies.items()]
    return found
