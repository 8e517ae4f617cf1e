"""@switchboard/client (clients/js) built from the committed lockfile, tested under Node against a
real server, packed, and installed as a user installs it.

* ``npm ci`` installs the development tools (TypeScript) from ``package-lock.json``.
* ``node build.mjs --check`` builds dist/ and fails if the committed browser file
  (app/static/switchboard.js, what ``/static/switchboard.js`` serves) is not that build.
* ``node --test`` runs clients/js/test/ against ``python -m app`` (started and stopped by PID there).
* ``npm pack``, then a fresh Node project installs the tarball: an ES module import, a CommonJS
  require, and ``tsc --noEmit --strict`` of a user file against the shipped declarations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_examples import example
from tests.support import ROOT

JS = ROOT / "clients" / "js"
NPM = ["npm", "--no-audit", "--no-fund", "--loglevel=error"]


def run(cmd: list[str], cwd: Path, timeout: float = 180) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def node_flags() -> list[str]:
    """Node 22+ has a global WebSocket; Node 20 needs the flag."""
    has = run(["node", "-e", "process.stdout.write(typeof WebSocket)"], ROOT)
    return [] if has == "function" else ["--experimental-websocket"]


@pytest.fixture(scope="module")
def built() -> Path:
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is needed (make deps installs it)"
    run([*NPM, "ci", "--prefer-offline"], JS)
    run(["node", "build.mjs", "--check"], JS)
    return JS / "dist"


def test_the_served_browser_file_is_the_build_and_the_source(built: Path) -> None:
    served = (ROOT / "app" / "static" / "switchboard.js").read_bytes()
    assert served == (built / "switchboard.js").read_bytes() == (JS / "src" / "switchboard.js").read_bytes()


def test_the_package_passes_its_node_tests_against_a_real_server(built: Path) -> None:
    cmd = ["node", *node_flags(), "--test", "test/"]
    done = subprocess.run(
        cmd,
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TEST_PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
    assert "# pass 0" not in done.stdout


USER_TS = """import { Switchboard, SwitchboardClient, isTerminal, type Publication } from "@switchboard/client";

const sb = new Switchboard({ url: "ws://127.0.0.1:8000/ws", getToken: async () => "token" });
const room = sb.subscribe("chat:lobby", { publication: (pub: Publication) => console.log(pub.channel, pub.data) });
const offset: Promise<number> = sb.publish("chat:lobby", { text: "hi" });
const stats: Promise<Record<string, unknown>> = sb.presenceStats("chat:lobby");
const tutorial = new SwitchboardClient({ url: () => "ws://127.0.0.1:8000/ws/room/lobby", queueLimit: 10 });
tutorial.send({ content: "hello" });
const stops: boolean = isTerminal(4003);
export { offset, room, stats, stops };
"""

WRONG_TS = """import { Switchboard } from "@switchboard/client";

export const wrong = new Switchboard().publish(42, "a channel is a string");
"""

USER_MJS = """import { Switchboard, isTerminal, TERMINAL_CODES } from "@switchboard/client";
import { createRequire } from "node:module";

const cjs = createRequire(import.meta.url)("@switchboard/client");
console.log(typeof Switchboard, isTerminal(4003), TERMINAL_CODES.join(","), cjs.Switchboard === undefined);
"""

TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "module": "nodenext",
        "moduleResolution": "nodenext",
        "target": "es2022",
        "lib": ["es2022", "dom"],
        "types": [],
    },
    "files": ["user.ts", "wrong.ts"],
}


def test_npm_pack_installs_into_a_project_with_types(built: Path, tmp_path: Path) -> None:
    (packed,) = json.loads(run([*NPM, "pack", "--ignore-scripts", "--json", "--pack-destination", str(tmp_path)], JS))
    assert sorted(entry["path"] for entry in packed["files"]) == sorted(example("docs/client.md", "js-package").split())
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text('{"name": "shop", "private": true, "type": "module"}\n')
    run([*NPM, "install", "--prefer-offline", str(tmp_path / packed["filename"])], project)
    (project / "user.mjs").write_text(USER_MJS)
    assert run(["node", "user.mjs"], project).split() == ["function", "true", "1003,1008,4003,4004", "false"]
    (project / "user.ts").write_text(USER_TS)
    (project / "wrong.ts").write_text(WRONG_TS)
    (project / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    done = subprocess.run(
        [str(JS / "node_modules" / ".bin" / "tsc"), "-p", "."], cwd=project, capture_output=True, text=True, timeout=120
    )
    errors = [line for line in done.stdout.splitlines() if ": error TS" in line]
    # The user's file checks; the wrong call is caught, so the declarations were read, not `any`.
    assert len(errors) == 1, done.stdout
    assert errors[0].startswith("wrong.ts(3,"), done.stdout
    assert "TS2345" in errors[0], done.stdout
