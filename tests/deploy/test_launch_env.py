"""Runs netns_launch.py inside a private mount+network namespace (see that module)."""

from __future__ import annotations

import shutil

import pytest

from tests.netns import passed, run_in_namespace
from tests.support import ROOT

INNER = ROOT / "tests" / "deploy" / "netns_launch.py"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_every_deployment_starts_the_image_with_its_own_environment() -> None:
    assert shutil.which("unshare"), "util-linux unshare is required"
    result = run_in_namespace(INNER, timeout=300)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert passed(result.stdout) == 5
