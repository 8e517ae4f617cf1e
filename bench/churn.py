"""Churn and reconnect storms at scale: the Locust scenarios against a local 3-instance cluster.

    make bench-delivery                                   # with the rest of the delivery bench
    .venv/bin/python -m bench.churn --users 3000 --storm-users 5000 --minutes 3

Each run starts its own cluster (scripts/cluster.py: redis-server, 3 gunicorn instances, nginx),
runs ``loadtest/churn.py`` or ``loadtest/storm.py`` under Locust (``--processes`` load processes)
and samples, every half second, each instance's open connections, deliveries and CPU, and Redis's
CPU. Runs: churn; storm with SIGKILL of the instance holding every user, with admission control
at its default, switched off (the "before" figure) and set low enough to engage; a rolling
SIGTERM drain of all three.
Results: docs/delivery.md (between the churn markers) and docs/delivery-churn.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

from bench.run import BIN, ROOT, cpu_seconds, free_port
from bench.sections import replace_section
from loadtest.stats import percentile

matplotlib.use("Agg")
import contextlib
import itertools

import matplotlib.pyplot as plt

START, END = "<!-- churn:start -->", "<!-- churn:end -->"
DOCS = ROOT / "docs"
CLUSTER = [str(BIN / "python"), str(ROOT / "scripts" / "cluster.py")]


def group_cpu(pid: int) -> float:
    """CPU seconds of a process group (a gunicorn master and its workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pid:
                    total += cpu_seconds([int(entry.name)])
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                continue
    return total


class Sampler(threading.Thread):
    """Every half second: connections and deliveries per instance, CPU per instance and Redis."""

    def __init__(self, where: Path) -> None:
        super().__init__(daemon=True)
        self.where, self.stop, self.wall_start = where, threading.Event(), time.time()
        self.rows: list[dict[str, Any]] = []

    def metrics(self, port: int) -> dict[str, float]:
        found = {"connections": 0.0, "delivered": 0.0, "slow": 0.0}
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
        except httpx.HTTPError:
            return {}
        for line in text.splitlines():
            if line.startswith("switchboard_connections{"):
                found["connections"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("switchboard_messages_delivered_total"):
                found["delivered"] = float(line.rsplit(" ", 1)[1])
            elif line.startswith("switchboard_slow_consumer_disconnects_total"):
                found["slow"] = float(line.rsplit(" ", 1)[1])
        return found

    def run(self) -> None:
        started = time.monotonic()
        self.wall_start = time.time()
        while not self.stop.wait(0.5):
            state = json.loads((self.where / "state.json").read_text())
            row: dict[str, Any] = {"t": time.monotonic() - started}
            for i, port in enumerate(state["backends"], start=1):
                row[f"app{i}"] = self.metrics(port)
                with contextlib.suppress(KeyError):
                    row[f"app{i}"]["cpu"] = group_cpu(state["pids"][f"app{i}"])
            row["redis_cpu"] = cpu_seconds([state["pids"]["redis"]])
            self.rows.append(row)


def completions(history: Path, name: str, wall_start: float) -> list[tuple[float, int]]:
    """(seconds since the sampler started, cumulative count) of one Locust request name."""
    if not history.exists():
        return []
    with history.open() as rows:
        return [
            (float(row["Timestamp"]) - wall_start, int(row["Total Request Count"]))
            for row in csv.DictReader(rows)
            if row["Name"] == name
        ]


def run(scenario: str, users: int, seconds: int, processes: int, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"sb-{scenario}-") as tmp:
        where, port = Path(tmp) / "cluster", free_port()
        subprocess.run(
            [*CLUSTER, "up", "--dir", str(where), "--port", str(port)], check=True, env={**os.environ, **env}
        )
        sampler = Sampler(where)
        sampler.start()
        try:
            summary = where / "summary"
            command = [str(BIN / "locust"), "-f", str(ROOT / "loadtest" / f"{scenario.split('-')[0]}.py")]
            rate = env.get("SPAWN_RATE", str(min(users, 1000)))
            command += ["--headless", "-u", str(users), "-r", rate, "-t", f"{seconds}s"]
            command += ["--host", f"http://127.0.0.1:{port}", "--only-summary", "--json-file", str(summary)]
            command += ["--csv", str(where / "locust"), "--csv-full-history"]
            command += ["--processes", str(processes)] if processes > 1 else []
            print(f"[{scenario}] {users} users for {seconds} s ...", flush=True)
            result = subprocess.run(
                command,
                cwd=where,
                env={**os.environ, "PYTHONPATH": str(ROOT), "CLUSTER_DIR": str(where), **env},
                capture_output=True,
                text=True,
                timeout=seconds + 300,
            )
            events = [line for line in result.stdout.splitlines() if line.startswith("[storm]")]
            stats = {row["name"]: row for row in json.loads(summary.with_suffix(".json").read_text())}
            if not stats:
                raise SystemExit(f"[{scenario}] Locust recorded nothing:\n{result.stderr[-3000:]}")
            history = where / "locust_stats_history.csv"
            done = completions(history, "catch-up" if scenario != "churn" else "replay", sampler.wall_start)
        finally:
            sampler.stop.set()
            sampler.join()
            subprocess.run([*CLUSTER, "down", "--dir", str(where)], check=False, capture_output=True)
    return {"stats": stats, "samples": sampler.rows, "events": events, "completions": done}


def figures(found: dict[str, Any]) -> dict[str, Any]:
    stats, samples = found["stats"], found["samples"]

    def count(name: str) -> int:
        return int(stats[name]["num_requests"]) if name in stats else 0

    lost = count("lost") + count("history lost")
    deliver = count("deliver")
    apps = [key for key in samples[-1] if key.startswith("app")] if samples else []
    first, last = samples[0], samples[-1]
    # Summed increments: a killed instance stops counting, a restarted one starts again from zero.
    cpu = {
        app: sum(max(0.0, b[app].get("cpu", 0.0) - a[app].get("cpu", 0.0)) for a, b in itertools.pairwise(samples))
        for app in apps
    }
    return {
        "deliver": deliver,
        "delivered_pct": 100.0 * deliver / max(1, deliver + lost),
        "lost": lost,
        "duplicates": count("duplicate"),
        "order": count("out of order"),
        "replays": count("replay"),
        "replay_p50": percentile(stats.get("replay"), 0.5),
        "replay_p99": percentile(stats.get("replay"), 0.99),
        "catch_ups": count("catch-up"),
        "catch_up_p50": percentile(stats.get("catch-up"), 0.5),
        "catch_up_p99": percentile(stats.get("catch-up"), 0.99),
        "catch_up_max": stats["catch-up"]["max_response_time"] if "catch-up" in stats else float("nan"),
        "never": count("never caught up"),
        "refused": count("refused"),
        "echo_p99": percentile(stats.get("echo"), 0.99),
        "echo_max": stats["echo"]["max_response_time"] if "echo" in stats else float("nan"),
        "slow": sum(last[app].get("slow", 0.0) for app in apps),
        "cpu": cpu,
        "redis_cpu": last["redis_cpu"] - first["redis_cpu"],
        "seconds": last["t"] - first["t"],
        "events": found["events"],
    }


def plot(runs: dict[str, dict[str, Any]], target: Path) -> None:
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 3.2 * len(runs)), squeeze=False)
    for ax, (name, found) in zip(axes[:, 0], runs.items(), strict=True):
        samples = found["samples"]
        t = [s["t"] for s in samples]
        apps = sorted(k for k in samples[0] if k.startswith("app"))
        for app in apps:
            ax.plot(t, [s[app].get("connections", float("nan")) for s in samples], label=f"{app} connections")
        ax.set_title(name)
        ax.set_xlabel("seconds")
        ax.set_ylabel("open connections")
        ax.legend(loc="upper left", fontsize=7)
        # Counters are flushed in batches: rates over 4 s windows.
        window = 8
        rate_t, rate = [], []
        for a, b in zip(samples, samples[window:], strict=False):
            delivered = sum(
                max(0.0, b[app].get("delivered", 0.0) - a[app].get("delivered", 0.0))
                for app in apps
                if "delivered" in a[app] and "delivered" in b[app]
            )
            rate_t.append(b["t"])
            rate.append(delivered / (b["t"] - a["t"]))
        twin = ax.twinx()
        twin.plot(rate_t, rate, color="grey", linewidth=0.8, label="deliveries/s")
        done = found["completions"]
        what = "replays/s" if name == "churn" else "catch-ups/s"
        twin.plot(
            [b[0] for b in done[1:]],
            [(b[1] - a[1]) / max(1e-3, b[0] - a[0]) for a, b in itertools.pairwise(done)],
            color="crimson",
            linewidth=0.9,
            label=what,
        )
        twin.set_ylabel("per second")
        twin.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


def write(results: dict[str, dict[str, Any]], args: argparse.Namespace, info: str) -> None:
    command = " ".join(["python -m bench.churn", *sys.argv[1:]])
    lines = [START, f"Produced by `{command}` on {info}.", ""]
    churn = results.get("churn")
    if churn:
        f = churn["figures"]
        lines += [
            f"#### Churn: {args.users} users, each dropping for 2 s every ~15 s, {args.minutes} min, "
            f"{args.rate:g} msg/s over {args.channels} channels, 3 instances behind nginx",
            "",
            "| | Switchboard (this run) | target |",
            "| --- | --- | --- |",
            f"| delivered | {f['delivered_pct']:.3f}% ({f['deliver']:,} messages, {f['lost']} lost) | 100% |",
            f"| duplicates / out of order | {f['duplicates']} / {f['order']} | 0 / 0 |",
            f"| replays (reconnect -> `recovered`) | {f['replays']:,}: p50 {f['replay_p50']:.0f} ms, "
            f"p99 {f['replay_p99']:.0f} ms | p99 <= 1 s |",
            f"| handshakes refused (503, retried) | {f['refused']} | |",
            "",
            "| setup | delivered | replay p99 |",
            "| --- | --- | --- |",
            "| default Socket.IO (public, 10k clients) | 84.55% | – |",
            "| Socket.IO with connection state recovery (public, 10k clients) | 100% | 4.58 s |",
            "| AnyCable (public, 10k clients) | 100% | 6.14 s |",
            f"| Switchboard ({args.users} clients, this 2-core machine) | {f['delivered_pct']:.3f}% | "
            f"{f['replay_p99'] / 1000:.2f} s |",
            "",
        ]
    storms = [(name, found) for name, found in results.items() if name.startswith("storm")]
    if storms:
        lines += [
            f"#### Storm: {args.storm_users} users on one of 3 instances, then...",
            "",
            "| run | caught up p50 / p99 / max | never | lost / dup | refused (503) | slow consumers | "
            "echo p99 / max on a survivor | instance CPU (s) | Redis CPU (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for _name, found in storms:
            f = found["figures"]
            cpu = ", ".join(f"{app} {value:.1f}" for app, value in sorted(f["cpu"].items()))
            lines.append(
                f"| {found['title']} | {f['catch_up_p50'] / 1000:.2f} / {f['catch_up_p99'] / 1000:.2f} / "
                f"{f['catch_up_max'] / 1000:.2f} s | {f['never']} | {f['lost']} / {f['duplicates']} | {f['refused']} | "
                f"{f['slow']:.0f} | {f['echo_p99']:.0f} / {f['echo_max']:.0f} ms | {cpu} | {f['redis_cpu']:.1f} |"
            )
        lines += ["", "Targets: every client caught up within 10 s, none refused for good, no slow-consumer cascade,"]
        lines += ["echo p99 on a survivor under 200 ms.", ""]
    lines += ["![Connections per instance and deliveries per second over time](delivery-churn.png)", END]
    replace_section(DOCS / "delivery.md", START, END, lines)


def main(args: argparse.Namespace) -> None:
    common = {"LOAD_RATE": str(args.rate), "LOAD_CHANNELS": str(args.channels), "WEB_CONCURRENCY": "1"}
    plan: list[tuple[str, str, int, int, dict[str, str]]] = []
    if not args.skip_churn:
        plan.append(("churn", "churn", args.users, args.minutes * 60, {}))
    storm = {"STORM_SETTLE": "15", **common}
    plan += [
        ("storm-kill", "SIGKILL", args.storm_users, 60, {"STORM_MODE": "kill"}),
        (
            "storm-kill-unlimited",
            "SIGKILL, admission control off",
            args.storm_users,
            60,
            {"STORM_MODE": "kill", "SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND": "1000000"},
        ),
        (
            # Spawned at 200/s and settled for 30 s: the limit applies to the first connections too.
            "storm-kill-250",
            "SIGKILL, admission 250/s per instance",
            args.storm_users,
            90,
            {
                "STORM_MODE": "kill",
                "SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND": "250",
                "SPAWN_RATE": "200",
                "STORM_SETTLE": "30",
            },
        ),
        ("storm-rolling", "rolling SIGTERM drain of all 3", args.storm_users, 90, {"STORM_MODE": "rolling"}),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, title, users, seconds, env in plan:
        found = run(name, users, seconds, args.processes, {**common, **(storm if name != "churn" else {}), **env})
        found["figures"], found["title"] = figures(found), title
        results[name] = found
        print(f"[{name}] {json.dumps({k: v for k, v in found['figures'].items() if k != 'events'}, default=str)}")
    plot({r["title"] if n != "churn" else "churn": r for n, r in results.items()}, DOCS / "delivery-churn.png")
    info = f"{time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, Python {platform.python_version()}"
    write(results, args, info)
    print("written: docs/delivery.md, docs/delivery-churn.png")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000, help="churn users")
    parser.add_argument("--storm-users", type=int, default=5000)
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20, help="publisher messages per second, all channels")
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="Locust load processes")
    parser.add_argument("--skip-churn", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
