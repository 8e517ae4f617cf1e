"""Run a page's ```console transcript as written, and compare what it printed with the page.

A transcript is what a terminal shows: ``$ command`` lines (``\\`` continues one), each followed by
the output the page promises. Three kinds of command:

- ``[VAR=value ...] make run`` starts the server the way ``make run`` does (dev mode, in-memory
  broker) with the page's variables, on a free port: the page states its own configuration.
- ``wscat -c URL`` is a WebSocket session in wscat's notation: ``Connected (press CTRL+C to
  quit)``, then ``> frame`` for what the user types and ``< frame`` for what arrives, in that order;
  ``Disconnected (code: N, reason: "...")`` for the server's close.
- anything else runs in bash; variables persist from one command to the next, as in a terminal.

``localhost:8000`` and ``127.0.0.1:8000`` are rewritten to the test server's address. Outputs are
compared line by line; a line that is (or ends in) JSON is compared as JSON, where the values of
``VOLATILE`` fields (ids, epochs, clocks; an ``id`` when it is a string) the page shows stand for
whatever the server sent, consistently: the same value on the page must be the same value on the
wire, and ``""`` means ``""``. A Server-Sent Events ``id:`` line (a stream's cursor) binds its
epochs the same way, and a ``retry:`` line (jittered) matches any number.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support import ROOT, AppProcess

VOLATILE = frozenset({"client", "epoch", "expires", "timestamp", "server_time", "token", "uptime", "cursor"})
BANNER = "Connected (press CTRL+C to quit)"
_CLOSED = re.compile(r'^Disconnected \(code: (\d+), reason: "(.*)"\)$')
_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):8000\b")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass
class Step:
    command: str
    output: list[str] = field(default_factory=list)


def parse(transcript: str) -> list[Step]:
    steps: list[Step] = []
    lines = transcript.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i < len(lines):
                command = command + "\n" + lines[i]
                i += 1
            steps.append(Step(command))
        elif line.strip():
            assert steps, f"output before any command: {line!r}"
            steps[-1].output.append(line)
    return steps


def _matches(page: Any, seen: Any, bound: dict[str, Any], where: str, problems: list[str]) -> None:
    if isinstance(page, dict) and isinstance(seen, dict):
        if page.keys() != seen.keys():
            problems.append(f"{where}: keys {sorted(page)} on the page, {sorted(seen)} seen")
            return
        for key in page:
            volatile = key in VOLATILE or (key == "id" and isinstance(page[key], str))  # an instance id
            if volatile and page[key] not in ("", None) and seen[key] not in ("", None):
                # A placeholder: the page's value stands for the server's, the same one each time.
                token = json.dumps(page[key])
                if type(page[key]) is not type(seen[key]) and not {type(page[key]), type(seen[key])} <= {int, float}:
                    problems.append(f"{where}.{key}: {page[key]!r} on the page, {seen[key]!r} seen")
                elif bound.setdefault(token, seen[key]) != seen[key]:
                    problems.append(f"{where}.{key}: {page[key]!r} stood for {bound[token]!r}, now {seen[key]!r}")
            else:
                _matches(page[key], seen[key], bound, f"{where}.{key}", problems)
    elif isinstance(page, list) and isinstance(seen, list) and len(page) == len(seen):
        for n, (a, b) in enumerate(zip(page, seen, strict=True)):
            _matches(a, b, bound, f"{where}[{n}]", problems)
    elif page != seen or type(page) is not type(seen):
        problems.append(f"{where}: {page!r} on the page, {seen!r} seen")


def _split_json(line: str) -> tuple[str, str | None]:
    """``got {"a":1}`` is the text ``got `` and the JSON ``{"a":1}``; a line without JSON is all text."""
    for start, char in enumerate(line):
        if char in "{[":
            try:
                json.loads(line[start:])
            except ValueError:
                return line, None
            return line[:start], line[start:]
    return line, None


def _same_sse(page_line: str, seen_line: str, bound: dict[str, Any]) -> list[str] | None:
    """SSE lines that are not JSON: an ``id:`` (a stream's cursor, ``offset.epoch,...``) whose
    epochs are placeholders like JSON ones; a ``retry:``, jittered, is any number. None: neither."""
    if page_line.startswith("retry: ") and seen_line.startswith("retry: "):
        return [] if seen_line[7:].isdigit() else [f"{seen_line!r} is not a retry in ms"]
    if not (page_line.startswith("id: ") and seen_line.startswith("id: ")):
        return None
    page, seen = page_line[4:].split(","), seen_line[4:].split(",")
    problems = [] if len(page) == len(seen) else [f"{page_line!r} on the page, {seen_line!r} seen"]
    for page_part, seen_part in zip(page, seen, strict=False):
        (page_offset, _, page_epoch), (seen_offset, _, seen_epoch) = page_part.partition("."), seen_part.partition(".")
        if page_offset != seen_offset or (page_epoch == "") != (seen_epoch == ""):
            problems.append(f"{page_part!r} on the page, {seen_part!r} seen")
        elif page_epoch and bound.setdefault(json.dumps(page_epoch), seen_epoch) != seen_epoch:
            problems.append(f"epoch {page_epoch!r} stood for {bound[json.dumps(page_epoch)]!r}, now {seen_epoch!r}")
    return problems


def same(page_line: str, seen_line: str, bound: dict[str, Any]) -> list[str]:
    """Why ``seen_line`` is not what ``page_line`` shows (empty: it is)."""
    sse = _same_sse(page_line, seen_line, bound)
    if sse is not None:
        return sse
    page_text, page_json = _split_json(page_line)
    seen_text, seen_json = _split_json(seen_line)
    if page_json is None or seen_json is None or page_text != seen_text:
        return [] if page_line == seen_line else [f"{page_line!r} on the page, {seen_line!r} seen"]
    page, seen = json.loads(page_json), json.loads(seen_json)
    problems: list[str] = []
    _matches(page, seen, bound, "$", problems)
    return problems


class Console:
    """One terminal: a server (once a step starts one), shell variables, and placeholder bindings."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.state = workdir / "shell-state"
        self.app: AppProcess | None = None
        self.bound: dict[str, Any] = {}
        self.seen: list[str] = []  # everything the commands printed, for the failure message

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.app is not None:
            self.app.stop()

    @property
    def port(self) -> int:
        assert self.app is not None, "the transcript talks to a server before any `make run`"
        return self.app.port

    def run(self, transcript: str) -> None:
        for step in parse(transcript):
            words = step.command.split()
            if words[-2:] == ["make", "run"] or words[-3:] == ["make", "run", "&"]:
                self.start([w for w in words if _ASSIGNMENT.match(w)])
            elif words[0] == "wscat":
                self.session(step)
            else:
                self.shell(step)

    def _bash(self, script: str) -> subprocess.CompletedProcess[str]:
        state = self.state
        wrapped = (
            f"set -a -o pipefail\n[ -f {state} ] && . {state}\n{script}\nstatus=$?\nexport -p > {state}\nexit $status\n"
        )
        return subprocess.run(["bash", "-c", wrapped], cwd=ROOT, capture_output=True, text=True, timeout=30)

    def expand(self, words: str) -> list[str]:
        """Shell words after the terminal's expansion (``$TOKEN``, quotes)."""
        done = self._bash(f"printf '%s\\0' {words}")
        assert done.returncode == 0, done.stderr
        return done.stdout.split("\0")[:-1]

    def start(self, assignments: list[str]) -> None:
        assert self.app is None, "the transcript starts a second server"
        env = {"SWITCHBOARD_DEV_MODE": "true"}
        for word in self.expand(" ".join(assignments)):
            name, _, value = word.partition("=")
            env[name] = str(ROOT / value) if name == "SWITCHBOARD_CONFIG" else value
        self.app = AppProcess("docs", self.workdir, env)
        # As `make run` starts it: dev mode makes up what the page does not set.
        for name in ("SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_API_KEYS", "SWITCHBOARD_INSTANCE_ID"):
            if name not in env:
                self.app.env.pop(name, None)
        self.app.start()

    def shell(self, step: Step) -> None:
        command = _ADDRESS.sub(f"127.0.0.1:{self.port}", step.command) if self.app else step.command
        done = self._bash(command)
        assert done.returncode == 0, f"$ {step.command}\nexit {done.returncode}: {done.stderr[-2000:]}"
        printed = [line for line in done.stdout.splitlines() if line.strip()]
        self.seen += printed
        self.compare(step, step.output, printed)

    def compare(self, step: Step, page: list[str], printed: list[str]) -> None:
        assert len(page) == len(printed), (
            f"$ {step.command}\nthe page shows:\n" + "\n".join(page) + ("\nit printed:\n" + "\n".join(printed))
        )
        for page_line, seen_line in zip(page, printed, strict=True):
            problems = same(page_line, seen_line, self.bound)
            assert not problems, f"$ {step.command}\npage: {page_line}\nseen: {seen_line}\n" + "\n".join(problems)

    def check_python(self, code: str, output: str) -> None:
        """Run a page's Python script and compare what it printed with the page's output block."""
        self.compare(Step("python example.py"), output.splitlines(), run_python(self, code))

    def session(self, step: Step) -> None:
        args = self.expand(_ADDRESS.sub(f"127.0.0.1:{self.port}", step.command))
        assert args[:2] == ["wscat", "-c"], f"only `wscat -c URL` is understood: {step.command}"
        assert len(args) == 3, f"only `wscat -c URL` is understood: {step.command}"
        assert step.output[:1] == [BANNER], f"wscat prints {BANNER!r} first: {step.command}"
        with connect(args[2], open_timeout=5, close_timeout=2) as ws:
            for line in step.output[1:]:
                if line.startswith("> "):
                    ws.send(line[2:])
                elif line.startswith("< "):
                    try:
                        got = ws.recv(timeout=5)
                    except ConnectionClosed as closed:
                        got = f"(closed {closed.rcvd.code if closed.rcvd else None})"
                    except TimeoutError:
                        got = "(nothing within 5 s)"
                    self.seen.append(f"< {got!s}")
                    problems = same(line[2:], str(got), self.bound)
                    assert not problems, f"{step.command}\npage: {line}\nseen: < {got!s}\n" + "\n".join(problems)
                elif _CLOSED.match(line):
                    seen = close_of(ws)
                    self.seen.append(seen)
                    assert seen == line, f"{step.command}\npage: {line}\nseen: {seen}"
                    return
                else:
                    raise AssertionError(f"{step.command}: a line that is neither '> ' nor '< ': {line!r}")
            # Nothing the page does not show: a short grace for a frame still on its way.
            try:
                extra = ws.recv(timeout=0.3)
            except TimeoutError:
                return
            raise AssertionError(f"{step.command}: the page shows no more frames, but {extra!r} arrived")


def close_of(ws: ClientConnection) -> str:
    """What wscat prints when the server closes: ``Disconnected (code: N, reason: "R")``."""
    try:
        extra = ws.recv(timeout=5)
    except ConnectionClosed as closed:
        if closed.rcvd is None:
            return "(closed without a close frame)"
        return f'Disconnected (code: {closed.rcvd.code}, reason: "{closed.rcvd.reason}")'
    except TimeoutError:
        return "(still open after 5 s)"
    return f"< {extra!s}"


def localize(text: str, port: int) -> str:
    """The page's ``127.0.0.1:8000`` (or ``localhost:8000``) is the test server's address."""
    return _ADDRESS.sub(f"127.0.0.1:{port}", text)


def python_env(console: Console) -> dict[str, str]:
    """The environment a page's Python runs in: the terminal's variables, the repository importable."""
    done = console._bash("env -0")
    env = dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    paths = [str(ROOT), str(ROOT / "clients" / "python" / "src")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env["PYTHONPATH"]] if env.get("PYTHONPATH") else paths)
    return env


def run_python(console: Console, code: str, timeout: float = 30) -> list[str]:
    """Run a page's Python as a script against the console's server; returns its printed lines."""
    script = console.workdir / "example.py"
    script.write_text(localize(code, console.port))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=console.workdir,
        env=python_env(console),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{code}\nexit {done.returncode}:\n{done.stderr[-3000:]}"
    return [line for line in done.stdout.splitlines() if line.strip()]
