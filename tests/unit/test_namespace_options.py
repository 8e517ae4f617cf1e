"""Centrifugo's namespace options in the namespaces file: what each resolves to, the defaults that
keep ``/ws`` as it was, refused contradictions, and the personal channel's setting and names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.broker import HistoryOptions
from app.config import Settings
from app.namespaces import ConfigError, Namespaces, load_namespaces
from app.permissions import personal_channel
from tests.docs_examples import example
from tests.support import TEST_SECRET

GLOBAL = HistoryOptions(size=1000, ttl=300, meta_ttl=86400)


def load(tmp_path: Path, text: str) -> Namespaces:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return load_namespaces(path, GLOBAL)


def test_the_defaults_are_what_switchboard_did_before_the_options(tmp_path: Path) -> None:
    opts = load(tmp_path, "[namespaces.plain]\n").for_channel("plain:x")
    assert (opts.force_recovery, opts.force_positioning, opts.force_join_leave) == (True, True, False)
    assert (opts.history_read, opts.presence_read, opts.publish) == ("subscribable", "subscribers", "subscribers")


def test_each_option_resolves_to_the_channel_options(tmp_path: Path) -> None:
    text = """
[namespaces.a]
force_recovery = false
force_positioning = false
force_push_join_leave = true
allow_history_for_subscriber = true
allow_presence_for_subscriber = false
allow_publish_for_subscriber = false

[namespaces.b]
allow_history_for_subscriber = false
allow_publish_for_subscriber = true
publish = "subscribers"
"""
    namespaces = load(tmp_path, text)
    a, b = namespaces.for_channel("a:x"), namespaces.for_channel("b:x")
    assert (a.force_recovery, a.force_positioning) == (False, False)
    assert (a.force_join_leave, a.join_leave) == (True, True)  # forced pushes are announced
    assert (a.history_read, a.presence_read, a.publish) == ("subscribers", "nobody", "server")
    assert (b.history_read, b.publish) == ("nobody", "subscribers")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[namespaces.n]\nallow_publish_for_subscriber = true\npublish = "server"\n',
            "namespaces.n.allow_publish_for_subscriber: contradicts publish = 'server'",
        ),
        (
            '[default]\nallow_publish_for_subscriber = false\npublish = "subscribers"\n',
            "default.allow_publish_for_subscriber: contradicts publish = 'subscribers'",
        ),
        ("[namespaces.room]\nforce_push_join_leave = true\n", "namespaces.room.join_leave"),
        ('[namespaces.n]\nforce_recovery = "sometimes"\n', "namespaces.n.force_recovery"),
    ],
)
def test_contradictions_and_bad_values_stop_start_up(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert expected in str(info.value)


def test_the_personal_channel_namespace_must_be_declared(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text("[namespaces.personal]\n")
    settings = Settings(config=config, jwt_secret=TEST_SECRET, personal_channel_namespace="personal")
    assert settings.personal_channel_namespace == "personal"
    for bad in ("other", "bad name", "switchboard"):
        with pytest.raises(ValidationError) as info:
            Settings(config=config, jwt_secret=TEST_SECRET, personal_channel_namespace=bad)
        assert "personal_channel_namespace" in str(info.value)


def test_personal_channel_names() -> None:
    assert personal_channel("personal", "alice") == "personal:#alice"
    assert personal_channel("", "alice") is None  # the setting is off
    assert personal_channel("personal", "") is None  # anonymous
    assert personal_channel("personal", "a,b") is None  # would admit two users
    assert personal_channel("personal", "a b") is None  # not a channel name
    assert personal_channel("personal", "x" * 200) is None  # too long


def test_the_docs_example_feed_namespace_resolves_as_its_comments_say(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text(example("docs/protocol.md", "namespaces-toml"))
    feed = load_namespaces(path, GLOBAL).for_channel("feed:x")
    assert (feed.force_recovery, feed.force_positioning, feed.force_join_leave) == (True, True, False)
    assert (feed.history_read, feed.presence_read, feed.publish) == ("subscribers", "subscribers", "server")
    assert feed.history.size == 50
