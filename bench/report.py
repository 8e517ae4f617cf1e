"""Turns bench/run.py results into tables and charts inside docs/benchmarks.md.

Only the part between the result markers is rewritten, so the hand-written analysis around it
survives a new run.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.sections import replace_section

START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = [
    "switchboard",
    "switchboard-centrifuge",
    "switchboard-sse",
    "switchboard-ws",
    "switchboard-ws10",
    "gunicorn-1",
    "gunicorn-2",
    "ceiling",
    "picows",
    "node-ws",
    "node-socketio",
    "tutorial",
    "socketio",
]
LABELS = {
    "switchboard": "Switchboard",
    "switchboard-centrifuge": "Switchboard, /connection/websocket",
    "switchboard-sse": "Switchboard, SSE",
    "switchboard-ws": "Switchboard, /ws",
    "switchboard-ws10": "Switchboard, /ws, 10 channels per socket",
    "gunicorn-1": "Switchboard, gunicorn, 1 worker",
    "gunicorn-2": "Switchboard, gunicorn, 2 workers",
    "ceiling": "websockets broadcast()",
    "picows": "picows",
    "node-ws": "Node ws + Redis",
    "node-socketio": "Node socket.io + redis-adapter",
    "tutorial": "tutorial pattern",
    "socketio": "python-socketio",
}

COLORS = {
    "switchboard": "#2563eb",
    "switchboard-centrifuge": "#3b82f6",
    "switchboard-sse": "#60a5fa",
    "switchboard-ws": "#1d4ed8",
    "switchboard-ws10": "#1e40af",
    "gunicorn-1": "#93c5fd",
    "gunicorn-2": "#bfdbfe",
    "ceiling": "#64748b",
    "picows": "#475569",
    "node-ws": "#16a34a",
    "node-socketio": "#86efac",
    "tutorial": "#94a3b8",
    "socketio": "#cbd5e1",
}


def group(results: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        grouped[r["scenario"]][r["server"]].append(r)
    return grouped


def mean(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if key in r]
    return statistics.fmean(values) if values else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and b == b and a == a else "n/a"


def throughput_table(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| server | deliveries per server CPU-s (each run) | mean | vs ceiling | vs picows | deliveries/s (wall) | "
        "server CPU us per delivery: user + system | Redis CPU-s | load-generator CPU-s | lost | duplicated |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ceiling = mean(runs.get("ceiling", []), "per_cpu_second")
    picows = mean(runs.get("picows", []), "per_cpu_second")
    for server in [s for s in ORDER if s in runs]:
        rs = runs[server]
        each = ", ".join(f"{r['per_cpu_second']:,.0f}" for r in rs)
        lines.append(
            f"| {LABELS[server]} | {each} | **{mean(rs, 'per_cpu_second'):,.0f}** | "
            f"{ratio(mean(rs, 'per_cpu_second'), ceiling)} | {ratio(mean(rs, 'per_cpu_second'), picows)} | "
            f"{mean(rs, 'per_wall_second'):,.0f} | {cpu_per_delivery(rs)} | "
            f"{mean(rs, 'redis_cpu'):.2f} | {mean(rs, 'client_cpu'):.2f} | "
            f"{sum(r['lost'] for r in rs)} | {sum(r['duplicates'] for r in rs)} |"
        )
    return lines


def cpu_per_delivery(runs: list[dict[str, Any]]) -> str:
    """The server's CPU per delivery, split into its own code's (user) and the kernel's (system)."""
    delivered = mean(runs, "deliveries")
    user, system = mean(runs, "server_user_cpu"), mean(runs, "server_system_cpu")
    if not delivered or user != user or system != system:  # results from before the split: NaN
        return "n/a"
    return f"{user / delivered * 1e6:.1f} + {system / delivered * 1e6:.1f}"


def multiplex_note(grouped: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    mux = mean(grouped["multiplex"].get("switchboard", []), "per_cpu_second")
    rooms = mean(grouped["rooms"].get("switchboard", []), "per_cpu_second")
    return (
        f"Multiplexed `/ws` vs one channel per socket (Switchboard's rooms figure, same run): "
        f"**{ratio(mux, rooms)}**. Each of its messages reaches 100 subscribers rather than 10, so the "
        "fixed cost per message (publish, pub/sub parse) is spread over more deliveries."
    )


def latency_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| server | p50 ms | p95 ms | p99 ms | p99 vs ceiling | p99 vs picows |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ceiling = mean(runs.get("ceiling", []), "p99")
    picows = mean(runs.get("picows", []), "p99")
    for server in [s for s in ORDER if s in runs]:
        rs = runs[server]
        lines.append(
            f"| {LABELS[server]} | {mean(rs, 'p50'):.2f} | {mean(rs, 'p95'):.2f} | {mean(rs, 'p99'):.2f} | "
            f"{ratio(mean(rs, 'p99'), ceiling)} | {ratio(mean(rs, 'p99'), picows)} |"
        )
    return lines


def connect_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| server | handshakes/s (wall) | server CPU ms per handshake | vs ceiling | vs picows |",
        "| --- | --- | --- | --- | --- |",
    ]
    ceiling, picows = (mean(runs.get(s, []), "connect_cpu_ms") for s in ("ceiling", "picows"))
    for server in [s for s in ORDER if s in runs]:
        rs = runs[server]
        cpu = mean(rs, "connect_cpu_ms")
        lines.append(
            f"| {LABELS[server]} | {mean(rs, 'connect_rate'):,.0f} | {cpu:.2f} | {ratio(cpu, ceiling)} | "
            f"{ratio(cpu, picows)} |"
        )
    return lines


def memory_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| server | KB per idle connection (each run) | mean | vs ceiling | vs picows |",
        "| --- | --- | --- | --- | --- |",
    ]
    ceiling, picows = (mean(runs.get(s, []), "bytes_per_connection") for s in ("ceiling", "picows"))
    for server in [s for s in ORDER if s in runs]:
        rs = runs[server]
        each = ", ".join(f"{r['bytes_per_connection'] / 1024:.1f}" for r in rs)
        kb = mean(rs, "bytes_per_connection")
        lines.append(
            f"| {LABELS[server]} | {each} | **{kb / 1024:.1f}** | {ratio(kb, ceiling)} | {ratio(kb, picows)} |"
        )
    return lines


def targets(grouped: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = ["| target | measured | met |", "| --- | --- | --- |"]

    def row(name: str, value: float, goal: float, higher: bool, fmt: str = "{:.2f}x") -> None:
        ok = value >= goal if higher else value <= goal
        lines.append(f"| {name} | {fmt.format(value) if value == value else 'n/a'} | {'yes' if ok else '**no**'} |")

    def per_cpu(scenario: str, server: str) -> float:
        return mean(grouped.get(scenario, {}).get(server, []), "per_cpu_second")

    fan = grouped.get("fanout", {})
    sb = per_cpu("fanout", "switchboard")
    row("one channel: >= 1.1x the ceiling", sb / per_cpu("fanout", "ceiling"), 1.1, True)
    row("one channel: >= 4x python-socketio", sb / per_cpu("fanout", "socketio"), 4.0, True)
    row("one channel: >= 2x the tutorial pattern", sb / per_cpu("fanout", "tutorial"), 2.0, True)
    rooms = per_cpu("rooms", "switchboard")
    row("100 x 10 rooms: >= 0.85x the ceiling", rooms / per_cpu("rooms", "ceiling"), 0.85, True)
    row("100 x 10 rooms: ahead of Node ws + Redis", rooms / per_cpu("rooms", "node-ws"), 1.0, True)
    row(
        "100 x 10 rooms on /connection/websocket: >= 0.9x Switchboard's rooms figure",
        per_cpu("rooms", "switchboard-centrifuge") / rooms,
        0.9,
        True,
    )
    row(
        "100 x 10 rooms on /connection/websocket: >= 0.9x /ws's (whose publishers are /ws clients)",
        per_cpu("rooms", "switchboard-centrifuge") / per_cpu("rooms", "switchboard-ws"),
        0.9,
        True,
    )
    row(
        "100 x 10 rooms on SSE: >= 0.8x Switchboard's WebSocket figure",
        per_cpu("rooms", "switchboard-sse") / rooms,
        0.8,
        True,
    )
    row(
        "p99 at 20,000 deliveries/s: <= 1.0x the ceiling's",
        mean(fan.get("switchboard", []), "p99") / mean(fan.get("ceiling", []), "p99"),
        1.0,
        False,
    )
    row(
        "/ws multiplexed (10 of 100 channels per socket): >= 0.9x Switchboard's rooms figure",
        per_cpu("multiplex", "switchboard") / rooms,
        0.9,
        True,
    )
    idle = grouped.get("idle", {})
    row(
        "idle memory: <= 15 KB per connection",
        mean(idle.get("switchboard", []), "bytes_per_connection") / 1024,
        15.0,
        False,
        "{:.1f} KB",
    )
    row(
        "idle memory on /connection/websocket: no more than on /ws (ratio; both in one channel)",
        mean(idle.get("switchboard-centrifuge", []), "bytes_per_connection")
        / mean(idle.get("switchboard-ws", []), "bytes_per_connection"),
        1.0,
        False,
    )
    row(
        "idle memory on /ws in 10 channels: <= 20 KB per connection",
        mean(idle.get("switchboard-ws10", []), "bytes_per_connection") / 1024,
        20.0,
        False,
        "{:.1f} KB",
    )
    row(
        "handshake: <= 0.20 ms of server CPU (HS256)",
        mean(fan.get("switchboard", []), "connect_cpu_ms"),
        0.20,
        False,
        "{:.2f} ms",
    )
    scale = grouped.get("scale", {}).get("switchboard", [])
    if scale:
        big = scale[0]["large"]
        row(
            f"{big:,} sockets: deliveries per CPU-second >= 0.9x the 1,000-socket figure",
            mean(scale, f"per_cpu_second_{big}") / mean(scale, "per_cpu_second_1000"),
            0.9,
            True,
        )
        row(
            f"{big:,} sockets: memory per socket no higher than with 1,000",
            mean(scale, f"bytes_per_socket_{big}") / mean(scale, "bytes_per_socket_1000"),
            1.0,
            False,
        )
    lost = sum(
        r.get("lost", 0) + r.get("duplicates", 0)
        for sc in ("fanout", "rooms", "multiplex")
        for server, rs in grouped.get(sc, {}).items()
        if server.startswith(("switchboard", "gunicorn"))
        for r in rs
    )
    lost += sum(int(v) for r in scale for k, v in r.items() if k.startswith("lost_"))
    row("zero lost and zero duplicated (Switchboard, all runs)", lost, 0, False, "{:.0f}")
    return lines


def workers_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Rooms on one instance under gunicorn: what a second worker buys in wall-clock throughput."""
    lines = [
        "| workers | deliveries/s (wall, each run) | mean | vs 1 worker | deliveries per server CPU-s | lost |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    one = mean(runs.get("gunicorn-1", []), "per_wall_second")
    for server in ("gunicorn-1", "gunicorn-2"):
        rs = runs.get(server, [])
        if rs:
            each = ", ".join(f"{r['per_wall_second']:,.0f}" for r in rs)
            wall = mean(rs, "per_wall_second")
            lines.append(
                f"| {server[-1]} | {each} | **{wall:,.0f}** | {ratio(wall, one)} | "
                f"{mean(rs, 'per_cpu_second'):,.0f} | {sum(r['lost'] + r['duplicates'] for r in rs)} |"
            )
    return lines


def scale_table(by_server: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| server | sockets on one process | deliveries per CPU-s (each run) | mean | vs 1,000 | "
        "KB per socket (each run) | mean | lost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for server in [s for s in ORDER if s in by_server]:
        runs = by_server[server]
        big = runs[0]["large"]
        for size in (1000, big):
            each = ", ".join(f"{r[f'per_cpu_second_{size}']:,.0f}" for r in runs)
            kb = ", ".join(f"{r[f'bytes_per_socket_{size}'] / 1024:.1f}" for r in runs)
            rate = mean(runs, f"per_cpu_second_{size}")
            lines.append(
                f"| {LABELS[server]} | {size:,} | {each} | **{rate:,.0f}** | "
                f"{ratio(rate, mean(runs, 'per_cpu_second_1000'))} | {kb} | "
                f"**{mean(runs, f'bytes_per_socket_{size}') / 1024:.1f}** | {sum(r[f'lost_{size}'] for r in runs)} |"
            )
    return lines


def target_chart(values: dict[str, float], fmt: str, target: float, xlabel: str, path: Path) -> str:
    """Horizontal bars, one per server, with the target as a dashed line; returns the image link."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.barh([LABELS[s] for s in values], list(values.values()), color=[COLORS[s] for s in values])
    ax.bar_label(bars, labels=[fmt.format(v) for v in values.values()], fontsize=8)
    unit = fmt.rsplit(" ", 1)[-1]
    ax.axvline(target, color="#dc2626", linestyle="--", linewidth=1, label=f"target: {target:g} {unit}")
    ax.set_xlabel(xlabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"![{xlabel.split(',')[0]}]({path.name})"


def charts(grouped: dict[str, dict[str, list[dict[str, Any]]]], docs: Path) -> list[str]:
    made = []
    scenarios = [s for s in ("fanout", "rooms") if s in grouped]
    if scenarios:
        fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4.5), squeeze=False)
        for ax, scenario in zip(axes[0], scenarios, strict=True):
            servers = [s for s in ORDER if s in grouped[scenario] and not s.startswith("gunicorn")]
            values = [mean(grouped[scenario][s], "per_cpu_second") for s in servers]
            bars = ax.bar([LABELS[s] for s in servers], values, color=[COLORS[s] for s in servers])
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
            ax.set_title({"fanout": "1 channel x 1000 subscribers", "rooms": "100 rooms x 10 subscribers"}[scenario])
            ax.set_ylabel("deliveries per server CPU-second")
            ax.tick_params(axis="x", labelsize=8)
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
        fig.tight_layout()
        fig.savefig(docs / "bench-throughput.png", dpi=110)
        plt.close(fig)
        made.append("![deliveries per server CPU-second](bench-throughput.png)")
    fan = grouped.get("fanout", {})
    if fan and any("p99" in r for rs in fan.values() for r in rs):
        servers = [s for s in ORDER if s in fan]
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.25
        for i, q in enumerate(("p50", "p95", "p99")):
            xs = [j + (i - 1) * width for j in range(len(servers))]
            ax.bar(xs, [mean(fan[s], q) for s in servers], width, label=q)
        ax.set_xticks(range(len(servers)), [LABELS[s] for s in servers], rotation=15, fontsize=8)
        ax.set_ylabel("publish-to-delivery latency, ms")
        ax.set_title("Latency at a steady 20,000 deliveries/s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(docs / "bench-latency.png", dpi=110)
        plt.close(fig)
        made.append("![latency percentiles](bench-latency.png)")
    idle = grouped.get("idle", {})
    if idle:
        memory = {s: mean(idle[s], "bytes_per_connection") / 1024 for s in ORDER if s in idle}
        made.append(
            target_chart(memory, "{:.1f} KB", 15, "resident memory per idle connection, KB", docs / "bench-memory.png")
        )
    if fan and any("connect_cpu_ms" in r for rs in fan.values() for r in rs):
        handshake = {s: mean(fan[s], "connect_cpu_ms") for s in ORDER if s in fan}
        made.append(
            target_chart(
                handshake, "{:.2f} ms", 0.20, "server CPU per WebSocket handshake, ms", docs / "bench-handshake.png"
            )
        )
    return made


def write(results: list[dict[str, Any]], machine: dict[str, Any], command: str, docs: Path) -> None:
    grouped = group(results)
    reps = max((r["rep"] for r in results), default=0) + 1
    out = [
        START,
        f"Produced by `{command}` on {machine['date']}: {machine['cpus']} cores ({machine['cpu_model']}), "
        f"Python {machine['python']}, Linux {machine['kernel']}; {reps} runs per scenario, "
        f"{machine['seconds']} s in all. Ratios are between results of this one run.",
        "",
        "### Targets",
        "",
        *targets(grouped),
        "",
    ]
    names = {
        "fanout": "One channel, 1000 subscribers",
        "rooms": "100 rooms x 10 subscribers",
        "multiplex": "/ws multiplexed: 1000 sockets, each in 10 of 100 channels",
    }
    for scenario in ("fanout", "rooms", "multiplex"):
        if scenario in grouped:
            runs = {k: v for k, v in grouped[scenario].items() if not k.startswith("gunicorn")}
            out += [f"### {names[scenario]}", "", *throughput_table(scenario, runs), ""]
    if "multiplex" in grouped and "rooms" in grouped:
        out += [multiplex_note(grouped), ""]
    if any(k.startswith("gunicorn") for k in grouped.get("rooms", {})):
        out += [
            "### Two workers on two cores (100 rooms x 10 on one instance under gunicorn)",
            "",
            *workers_table(grouped["rooms"]),
            "",
        ]
    if "fanout" in grouped:
        out += ["### Latency at a steady 20,000 deliveries/s (one channel)", "", *latency_table(grouped["fanout"]), ""]
        out += [
            "### Connect rate (1000 handshakes, 2 load processes x 50 concurrent)",
            "",
            *connect_table(grouped["fanout"]),
            "",
        ]
    if "idle" in grouped:
        out += ["### Idle memory (5000 connections on one instance)", "", *memory_table(grouped["idle"]), ""]
    if "scale" in grouped:
        big = next(iter(grouped["scale"].values()))[0]["large"]
        out += [
            f"### Scale: 1,000 and {big:,} sockets on one process, one channel, the same deliveries",
            "",
            *scale_table(grouped["scale"]),
            "",
        ]
    out += [*charts(grouped, docs), END]
    replace_section(docs / "benchmarks.md", START, END, out, heading="Results")
