"""Centrifugo's client protocol, JSON: the commands a client sends and the errors it is answered.

A command is one JSON object a line, ``{"id":N,"<method>":{...params}}``; an error reply is
``{"id":N,"error":{"code":C,"message":M}}`` with Centrifugo's codes (app/errors.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from app import metrics
from app.errors import CENTRIFUGE_ERRORS, CENTRIFUGE_TEMPORARY, CentrifugeError, ProtocolError
from app.protocols.centrifuge_commands import COMMANDS
from app.protocols.centrifuge_formats import JSON, Format


def error_reply(cmd_id: int | None, code: int, message: str, fmt: Format = JSON) -> bytes:
    metrics.COMMAND_ERRORS.labels(str(int(code))).inc()
    error: dict[str, Any] = {"code": int(code), "message": message}
    if code in CENTRIFUGE_TEMPORARY:
        error["temporary"] = True
    return fmt.error(cmd_id, error)


def as_centrifuge(exc: ProtocolError) -> tuple[int, str]:
    """A Switchboard error as Centrifugo's code; a backend's own code (a proxy's refusal, 400-1999)
    goes through as it is, as Centrifugo's proxies' do."""
    if exc.wire_code != int(exc.code):
        return exc.wire_code, exc.message
    return CENTRIFUGE_ERRORS.get(exc.code, CentrifugeError.INTERNAL), exc.message


def emulated_headers(value: object, allowed: frozenset[bytes]) -> dict[str, str]:
    """connect's ``headers`` (Centrifugo's emulation, for clients that cannot set real ones), kept
    to the proxy's allowlist: a client names no header the operator did not."""
    if not isinstance(value, dict):
        return {}
    return {
        name.lower(): text
        for name, text in value.items()
        if isinstance(name, str)
        and isinstance(text, str)
        and text.isprintable()  # no CR/LF: a header value cannot smuggle another header
        and name.lower().encode("latin-1", "replace") in allowed
    }


def parse_command(line: str) -> tuple[int, str, dict[str, Any]] | None:
    """``(id, method, params)``; None for a line that is not a command (the client is then closed
    3501: Centrifugo's SDKs never send one). ``id`` 0 means none (``send``). An empty object is a
    pong; its method is ``""``."""
    try:
        command = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(command, dict):
        return None
    cmd_id = command.get("id", 0)
    if not isinstance(cmd_id, int) or isinstance(cmd_id, bool) or not 0 <= cmd_id < 2**32:
        return None
    # The method is the one field besides "id"; unknown fields are ignored (a newer SDK's).
    methods = [name for name in command if name != "id"]
    known = [name for name in methods if name in COMMANDS or name == "connect"]
    method = known[0] if known else (methods[0] if methods else "")
    params = command.get(method, {}) if method else {}
    return cmd_id, method, params if isinstance(params, dict) else {}
