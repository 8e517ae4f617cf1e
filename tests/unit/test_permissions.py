"""Channel-name rule, claim globs and user-limited channels."""

from __future__ import annotations

import pytest

from app.grants import compile_grants
from app.permissions import allowed_users, valid_channel


@pytest.mark.parametrize(
    "name", ["chat", "room:42", "dm:#alice,bob", "a.b@c~d-e_f", "x:" + "a" * 128, "room:" + "r" * 128, "ns:ünï"]
)
def test_valid_channel_names(name: str) -> None:
    assert valid_channel(name)


@pytest.mark.parametrize(
    "name", ["", "x:" + "a" * 129, "a" * 129, "a b", "a\nb", "ab\n", "a\x00b", "a/b", "\u00f1s:x", ":x", 5, None]
)
def test_invalid_channel_names(name: object) -> None:
    assert not valid_channel(name)


def test_claim_globs_match_whole_names_and_escape_everything_but_star() -> None:
    grants = compile_grants(("team:*", "news:eu", "a.b:*x"))
    assert grants is not None
    for channel in ("team:1", "team:", "news:eu", "a.b:yx"):
        assert grants.matches(channel), channel
    for channel in ("teams:1", "news:eu2", "xnews:eu", "aXb:x"):
        assert not grants.matches(channel), channel
    assert compile_grants(()) is None


def test_user_limited_channels_name_their_users() -> None:
    assert allowed_users("dm:#alice,bob") == ["alice", "bob"]
    assert allowed_users("#alice") == ["alice"]
    assert allowed_users("dm:alice") is None
