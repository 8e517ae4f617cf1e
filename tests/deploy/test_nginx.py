"""Runs netns_nginx.py inside a private mount+network namespace (see that module)."""

from __future__ import annotations

import os
import shutil

from tests.netns import passed, run_in_namespace
from tests.support import ROOT

INNER = ROOT / "tests" / "deploy" / "netns_nginx.py"


def test_nginx_conf_in_a_private_network_namespace() -> None:
    assert shutil.which("unshare"), "util-linux unshare is required"
    assert shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"), "nginx is required (make deps)"
    result = run_in_namespace(INNER, timeout=300)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert passed(result.stdout) == 5
