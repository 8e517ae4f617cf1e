"""Presence members, stats and page cursors."""

from __future__ import annotations

import pytest

from app.presence import MemoryPresence, cut, format_cursor, member_id, member_name, parse_cursor, parse_member, stats


def test_members_carry_who_is_there_and_the_name_to_say_goodbye_with() -> None:
    member = member_id("c1", "ann", {"color": "red"}, "Ann")
    assert parse_member(member) == {"client": "c1", "user": "ann", "info": {"color": "red"}}
    assert member_name(member) == "Ann"
    assert parse_member("bare-id") == {"client": "bare-id", "user": "", "info": None}  # older entries


def test_stats_count_distinct_signed_in_users() -> None:
    members = [member_id("c1", "ann", None), member_id("c2", "ann", None), member_id("c3", "", None)]
    assert stats(members) == {"clients": 3, "users": 1}


@pytest.mark.parametrize("cursor", [None, "z0", "z17", "z17.4"])
def test_cursors_round_trip(cursor: str | None) -> None:
    parsed = parse_cursor(cursor)
    assert format_cursor(parsed if parsed != (0, 0) else None) == (None if cursor in (None, "z0") else cursor)


@pytest.mark.parametrize("cursor", ["", "0", "z", "zx", "z1.", "z1.x", "z" + "9" * 21, 5, ["z1"]])
def test_foreign_cursors_are_refused(cursor: object) -> None:
    with pytest.raises(ValueError, match="not one this server gave"):
        parse_cursor(cursor)


def test_a_batch_is_cut_into_pages_in_a_stable_order() -> None:
    batch = ["d", "a", "c", "b", "e"]
    assert cut(batch, 0, 2, 7, 9) == (["a", "b"], (7, 2))
    assert cut(list(reversed(batch)), 2, 2, 7, 9) == (["c", "d"], (7, 4))  # same page whatever the order
    assert cut(batch, 4, 2, 7, 9) == (["e"], (9, 0))
    assert cut(batch, 4, 2, 7, 0) == (["e"], None)


async def test_memory_presence_pages_cover_every_member_once() -> None:
    presence = MemoryPresence()
    for n in range(7):
        await presence.join("x", member_id(f"c{n}", "", None))
    seen, cursor = [], (0, 0)
    while True:
        page, following = await presence.page("x", cursor, 3)
        assert len(page) <= 3
        seen += page
        if following is None:
            break
        cursor = following
    assert sorted(seen) == sorted(await presence.members("x"))
