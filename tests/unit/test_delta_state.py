"""The Hub's per-channel delta state (app/delta.py): one frame per message for every delta
subscriber, bounded to channels that have delta subscribers, full whenever a subscriber lacks the
base, and full when a delta would not be smaller."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from app.broker import HistoryOptions
from app.connection import Connection
from app.hub import Hub
from app.namespaces import ConfigError, load_namespaces
from app.protocol import Wire
from tests.fossil_spec import apply
from tests.unit.test_hub import Member, RecordingBroker, started_hub


def pub(data: Any) -> bytes:
    return orjson.dumps({"op": "pub", "channel": "d", "data": data})


def state(step: int) -> dict[str, Any]:
    return {"rows": [f"row {i} of a dashboard that mostly stays the same" for i in range(40)], "step": step}


def pushed(member: Member) -> list[dict[str, Any]]:
    return [orjson.loads(out.payload)["push"]["pub"] for out in member.offered]


async def joined(hub: Hub, ident: str, delta: bool) -> Member:
    member = Member(ident)
    await hub.join(cast(Connection, member), "d", wire=Wire.CENTRIFUGE, delta=delta)
    return member


async def test_one_frame_per_message_for_every_delta_subscriber() -> None:
    hub = await started_hub(RecordingBroker())
    a, b = await joined(hub, "a", True), await joined(hub, "b", True)
    for step in range(3):
        await hub.publish("d", pub(state(step)))
    assert [x is y for x, y in zip(a.offered, b.offered, strict=True)] == [True, True, True]
    kinds = [p.get("delta", False) for p in pushed(a)]
    assert kinds == [False, True, True]
    base = b""
    for p in pushed(a):
        base = apply(base, p["data"].encode()) if p.get("delta") else p["data"].encode()
    assert orjson.loads(base) == state(2)


async def test_state_lives_only_while_the_channel_has_delta_subscribers() -> None:
    hub = await started_hub(RecordingBroker())
    plain = await joined(hub, "p", False)
    channel = hub.channel("d")
    assert channel is not None
    assert channel.delta is None  # no delta subscriber: nothing kept, nothing computed
    await hub.publish("d", pub(state(0)))
    assert pushed(plain)[0]["data"] == state(0)  # data as usual for the others
    a, b = await joined(hub, "a", True), await joined(hub, "b", True)
    assert channel.delta is not None
    assert channel.delta.subscribers == 2
    await hub.leave(cast(Connection, a), "d")
    assert channel.delta.subscribers == 1
    await hub.leave(cast(Connection, b), "d")
    assert channel.delta is None
    assert b.channels == set()


async def test_a_subscriber_without_the_base_gets_the_full_publication() -> None:
    hub = await started_hub(RecordingBroker())
    a = await joined(hub, "a", True)
    await hub.publish("d", pub(state(0)))
    late = await joined(hub, "late", True)
    await hub.publish("d", pub(state(1)))  # a has the base; late does not
    await hub.publish("d", pub(state(2)), exclude=cast(Connection, late))  # late misses this one
    await hub.publish("d", pub(state(3)))
    assert [p.get("delta", False) for p in pushed(a)] == [False, True, True, True]
    assert [p.get("delta", False) for p in pushed(late)] == [False, False]
    assert orjson.loads(pushed(late)[1]["data"]) == state(3)


async def test_full_when_the_delta_would_not_be_smaller() -> None:
    hub = await started_hub(RecordingBroker())
    a = await joined(hub, "a", True)
    await hub.publish("d", pub(1))
    await hub.publish("d", pub(2))
    assert pushed(a) == [{"data": "1", "offset": 1}, {"data": "2", "offset": 2}]


async def test_joins_and_leaves_do_not_break_the_chain() -> None:
    hub = await started_hub(RecordingBroker())
    a = await joined(hub, "a", True)
    await hub.publish("d", pub(state(0)))
    await hub.publish(
        "d", orjson.dumps({"op": "join", "channel": "d", "info": {"user": "u", "client": "c"}}), ephemeral=True
    )
    await hub.publish("d", pub(state(1)))
    frames = [orjson.loads(out.payload)["push"] for out in a.offered]
    assert "join" in frames[1]
    assert frames[2]["pub"]["delta"] is True


def test_the_namespace_option_allows_fossil_only(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text('[namespaces.dash]\nallowed_delta_types = ["fossil"]\n[namespaces.other]\n')
    found = load_namespaces(path, HistoryOptions())
    assert found.for_channel("dash:x").delta is True
    assert found.for_channel("other:x").delta is False  # off unless a namespace allows it
    path.write_text('[namespaces.dash]\nallowed_delta_types = ["xdelta"]\n')
    with pytest.raises(ConfigError, match=r"namespaces\.dash\.allowed_delta_types\.0: Input should be 'fossil'"):
        load_namespaces(path, HistoryOptions())
