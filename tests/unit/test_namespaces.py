"""Namespaces from the TOML file: resolution, strictness, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.broker import HistoryOptions
from app.namespaces import ConfigError, Namespaces, load_namespaces
from tests.docs_examples import example

GLOBAL = HistoryOptions(size=1000, ttl=300, meta_ttl=86400)


def load(tmp_path: Path, text: str) -> Namespaces:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return load_namespaces(path, GLOBAL)


def test_without_a_file_every_namespace_is_open_with_the_global_history() -> None:
    namespaces = load_namespaces(None, GLOBAL)
    for channel in ("chat", "room:1", "global:x", "anything:else"):
        opts = namespaces.known(channel)
        assert opts is not None
        assert (opts.subscribe, opts.publish, opts.history) == ("public", "subscribers", GLOBAL)


def test_a_namespace_takes_its_own_history_and_modes(tmp_path: Path) -> None:
    namespaces = load(tmp_path, '[namespaces.news]\npublish = "server"\nhistory_size = 5\nhistory_ttl = 600\n')
    news = namespaces.for_channel("news:eu")
    assert (news.namespace, news.publish, news.subscribe) == ("news", "server", "public")
    assert (news.history.size, news.history.ttl) == (5, 600)
    assert news.history.meta_ttl >= news.history.ttl
    assert namespaces.for_channel("news") is namespaces.for_channel("chat")  # no colon: the default


def test_with_a_file_undeclared_namespaces_are_unknown_but_the_tutorials_follow_default(tmp_path: Path) -> None:
    namespaces = load(tmp_path, '[default]\npublish = "authenticated"\n[namespaces.news]\n')
    assert namespaces.known("other:x") is None
    room = namespaces.known("room:1")
    assert room is not None
    assert room.publish == "authenticated"
    assert namespaces.known("chat") is room


def test_the_refusal_names_the_namespace_and_the_file_but_not_its_directory(tmp_path: Path) -> None:
    namespaces = load(tmp_path, "[namespaces.news]\n")
    message = namespaces.unknown("orders:#42")
    assert "'orders'" in message
    assert "switchboard.toml" in message
    assert "SWITCHBOARD_CONFIG" in message
    assert str(tmp_path) not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[namespaces.news]\npublish = "everyone"\n', "namespaces.news.publish: Input should be"),
        ('[namespaces.news]\npublsh = "server"\n', "namespaces.news.publsh: unknown key"),
        ("[namespaces.news]\nhistory_size = -1\n", "namespaces.news.history_size:"),
        ("[namespaces.news\n", "not valid TOML"),
        ('[namespaces."a:b"]\n', "namespaces.a:b: a namespace name is"),
        ("[namespaces.room]\njoin_leave = true\n", "namespaces.room.join_leave: the room endpoints"),
        ("[namespaces.switchboard]\n", "namespaces.switchboard: reserved for Switchboard's own"),
        ("[namespaces.SB]\n", "namespaces.SB: reserved for Switchboard's own"),
        ("[defaults]\n", "defaults: unknown key"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_namespaces(tmp_path / "nope.toml", GLOBAL)


def test_the_shipped_example_loads() -> None:
    from tests.support import ROOT

    namespaces = load_namespaces(ROOT / "deploy" / "switchboard.toml", GLOBAL)
    assert namespaces.names() == ["chat", "dm", "metrics", "news", "orders", "team"]
    assert namespaces.for_channel("metrics:cpu").history.enabled is False


def test_the_namespaces_example_loads_as_its_comments_say(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text(example("docs/protocol.md", "namespaces-toml"))
    namespaces = load_namespaces(path, HistoryOptions())
    news = namespaces.for_channel("news:eu")
    assert (news.subscribe, news.publish, news.presence, news.join_leave) == ("public", "server", True, False)
    assert (news.history.size, news.history.ttl) == (100, 600)
    assert namespaces.for_channel("chat").publish == "subscribers"
