"""Runs netns_nginx.py inside a private mount+network namespace (see that module)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.support import ROOT

INNER = ROOT / "tests" / "deploy" / "netns_nginx.py"


def test_nginx_conf_in_a_private_network_namespace() -> None:
    assert shutil.which("unshare"), "util-linux unshare is required"
    assert shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"), "nginx is required (make deps)"
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "-n",
            "--",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rA",
            str(INNER),
        ],
        cwd=ROOT,
        env={**os.environ, "SWITCHBOARD_NETNS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None
    assert int(passed.group(1)) == 5
