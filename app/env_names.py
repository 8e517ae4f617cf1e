"""Which ``SWITCHBOARD_*`` environment variables are settings, which are Kubernetes service links,
and which are mistakes.

A kubelet gives every pod Docker-link variables for each Service of its namespace (unless the pod
spec sets ``enableServiceLinks: false``): for a Service named ``switchboard`` that is
``SWITCHBOARD_SERVICE_HOST``, ``SWITCHBOARD_SERVICE_PORT[_<PORT NAME>]``, ``SWITCHBOARD_PORT`` and
``SWITCHBOARD_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]``; a Service ``switchboard-metrics`` would give
``SWITCHBOARD_METRICS_PORT=tcp://10.0.0.7:9000``, on top of a real setting. Each is recognised by
its name *and* the shape of its value (an IP address, a port number, ``tcp://ip:port``), so a
real ``SWITCHBOARD_PORT=8000`` stays a setting and a misspelt ``SWITCHBOARD_METRIC_PORT=9000`` is
refused like any other unknown name.

Known names come from the Settings model's fields; nothing here lists them.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import EnvSettingsSource


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_port(value: str) -> bool:
    return value.isdigit() and 0 < int(value) < 65536


def _is_proto(value: str) -> bool:
    return value in ("tcp", "udp", "sctp")


def _is_link_url(value: str) -> bool:
    found = re.fullmatch(r"(tcp|udp|sctp)://\[?([0-9A-Fa-f.:]+)\]?:(\d+)", value)
    return found is not None and _is_ip(found.group(2)) and _is_port(found.group(3))


_SERVICE = r"(?:_[A-Z0-9_]+?)?"
_PROTO = r"_PORT_\d+_(?:TCP|UDP|SCTP)"
# (name after the prefix, what the kubelet puts in it)
_LINKS: list[tuple[re.Pattern[str], Callable[[str], bool]]] = [
    (re.compile(_SERVICE + r"_SERVICE_HOST"), _is_ip),
    (re.compile(_SERVICE + r"_SERVICE_PORT(?:_[A-Z0-9_]+)?"), _is_port),
    (re.compile(_SERVICE + r"_PORT"), _is_link_url),
    (re.compile(_SERVICE + _PROTO), _is_link_url),
    (re.compile(_SERVICE + _PROTO + r"_PROTO"), _is_proto),
    (re.compile(_SERVICE + _PROTO + r"_PORT"), _is_port),
    (re.compile(_SERVICE + _PROTO + r"_ADDR"), _is_ip),
]


def is_service_link(name: str, value: str | None, prefix: str = "SWITCHBOARD") -> bool:
    """A variable a kubelet made for a Service whose name starts with ``prefix``."""
    name = name.upper()
    if value is None or not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    return any(pattern.fullmatch(rest) and shape(value) for pattern, shape in _LINKS)


# How alike an unknown name and a setting must be (difflib's ratio, on the part after the prefix)
# to suggest the setting: REDIS_URL -> BROKER_URL (0.63), API_KEY -> API_KEYS (0.93).
SUGGEST_CUTOFF = 0.55


@dataclass
class EnvReport:
    """What ``classify`` found among the prefixed names (upper-case, as a shell spells them)."""

    links: list[str] = field(default_factory=list)
    # (unknown name, the closest known name or None)
    unknown: list[tuple[str, str | None]] = field(default_factory=list)


def unknown_message(closest: str | None) -> str:
    return f"unknown setting; did you mean {closest}?" if closest else "unknown setting (the README lists them all)"


def classify(environ: Mapping[str, str | None], prefix: str, fields: Iterable[str]) -> EnvReport:
    """Sort the ``prefix``-named variables of ``environ`` into service links and unknown names.

    A known setting's name is a service link only when its value is a kubelet's ``tcp://ip:port``
    (``SWITCHBOARD_PORT`` for the Service ``switchboard``): no setting takes that form.
    """
    prefix = prefix.upper()
    names = sorted(name.upper() for name in fields)
    report = EnvReport()
    for raw, value in sorted(environ.items()):
        name = raw.upper()
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        link = is_service_link(name, value, prefix.rstrip("_"))
        if rest in names and not (link and value is not None and _is_link_url(value)):
            continue
        if link:
            report.links.append(name)
        else:
            closest = difflib.get_close_matches(rest, names, n=1, cutoff=SUGGEST_CUTOFF)
            report.unknown.append((name, prefix + closest[0] if closest else None))
    return report


class Environment(EnvSettingsSource):
    """The process environment, minus Kubernetes service links; an unknown ``SWITCHBOARD_*`` name
    is refused (a misspelt setting would otherwise leave its default in force, silently)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded = super()._load_env_vars()
        prefix = self.settings_cls.model_config.get("env_prefix", "")
        self.report: EnvReport = classify(loaded, prefix, self.settings_cls.model_fields)
        links = {name.lower() for name in self.report.links}
        return {name: value for name, value in loaded.items() if name.lower() not in links}

    def __call__(self) -> dict[str, Any]:
        if self.report.unknown:
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError("unknown_setting", "{detail}", {"detail": unknown_message(closest)}),
                    loc=(name,),
                    input="",  # never the value: it may be a secret
                )
                for name, closest in self.report.unknown
            ]
            raise ValidationError.from_exception_data(self.settings_cls.__name__, errors)
        return super().__call__()
