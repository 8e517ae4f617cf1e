"""The README's settings and close-code tables stay in step with the code."""

from __future__ import annotations

import re

import pytest

from app.config import Settings
from app.errors import CLOSE_REASONS, CloseCode
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def table_row(first_cell: str) -> list[str]:
    match = re.search(rf"^\| `?{re.escape(first_cell)}`? \|(.*)$", README, re.MULTILINE)
    assert match, f"README has no table row for {first_cell}"
    return [cell.strip() for cell in match.group(1).split("|")]


def readme_default(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(field: str) -> None:
    default_cell = table_row(f"SWITCHBOARD_{field.upper()}")[0]
    info = Settings.model_fields[field]
    if info.default_factory is not None or info.default in (None, "", [], Settings.model_fields["jwt_secret"].default):
        assert default_cell.startswith(("*(", "`<")), default_cell
    else:
        assert default_cell == f"`{readme_default(info.default)}`"


@pytest.mark.parametrize("code", list(CloseCode))
def test_every_close_code_is_documented_with_its_reason(code: CloseCode) -> None:
    name, reason = table_row(str(int(code)))[:2]
    assert name == code.name
    assert reason.startswith(CLOSE_REASONS[code]) or code is CloseCode.POLICY_VIOLATION
