"""Broker URLs: the forms accepted, and one readable reason for each that is not."""

from __future__ import annotations

import pytest

from app.broker.redis_target import RedisTarget, check_url, parse_cluster_url, parse_sentinel_url


def test_a_sentinel_url_names_its_hosts_master_db_and_credentials() -> None:
    found = parse_sentinel_url("redis+sentinel://user:p%40ss@10.0.0.1:26379,[::1]:26380/mymaster/3")
    assert found.hosts == [("10.0.0.1", 26379), ("::1", 26380)]
    assert (found.master, found.db, found.username, found.password) == ("mymaster", 3, "user", "p@ss")
    assert "p@ss" not in found.describe()
    assert parse_sentinel_url("redis+sentinel://h:1/m").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel:///mymaster/0", "at least one Sentinel"),
        ("redis+sentinel://h:26379", "the master's name"),
        ("redis+sentinel://h:26379/", "the master's name"),
        ("redis+sentinel://h/mymaster", "host:port"),
        ("redis+sentinel://h:26379/mymaster/zero", "not a number"),
        ("kafka://h:9092", "unsupported broker URL scheme 'kafka'"),
    ],
)
def test_a_bad_broker_url_is_refused_with_a_reason(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_url(url)


def test_a_password_never_reaches_the_description() -> None:
    assert RedisTarget("redis://:secret@h:6379/0").describe() == "h:6379/0"
    assert "secret" not in RedisTarget("redis+sentinel://:secret@h:1/m/0").describe()


def test_a_cluster_url_names_its_nodes_and_credentials() -> None:
    found = parse_cluster_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    assert found.hosts == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert (found.username, found.password) == (None, "pw")
    with pytest.raises(ValueError, match="at least one cluster node"):
        check_url("redis+cluster://")
