"""Runs netns_chaos.py (instance crash, rolling deploy) inside a private mount+network namespace."""

from __future__ import annotations

import shutil

import pytest

from tests.netns import passed, run_in_namespace
from tests.support import ROOT

INNER = ROOT / "tests" / "chaos" / "netns_chaos.py"


@pytest.mark.timeout(400)
def test_crash_and_rolling_deploy_behind_nginx() -> None:
    assert shutil.which("unshare"), "util-linux unshare is required"
    result = run_in_namespace(INNER, timeout=380)
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith("[chaos]")))
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert passed(result.stdout) == 2
