"""Fan-out benchmark: Switchboard against the Python ceiling and the peers, in one run.

    make bench                                  # everything, about 10 minutes on 2 cores
    .venv/bin/python -m bench.run --servers switchboard,ceiling --scenarios fanout --reps 1

Scenarios (same client, same machine, each run ``--reps`` times):
  fanout   N subscribers (default 1000) on one channel, spread over the server's instances; a
           publisher sends M numbered ~100-byte messages as fast as it can, then more at a fixed rate
           (20,000 deliveries/s) for latency percentiles.
  rooms    100 channels of 10 subscribers; M messages round-robin over the channels.
  multiplex  Switchboard's /ws protocol: 1000 sockets, each subscribed to 10 of 100 channels (100
           subscribers per channel); M messages round-robin over the channels. Compared with
           Switchboard's own rooms figure from the same run: multiplexing must not cost throughput.
  idle     5000 idle sockets on one instance: resident memory per connection.
  scale    one instance, one channel: 1000 sockets, then 18,000 (the fd limit here is 20,000), the
           same number of deliveries each: deliveries per CPU-second and memory per socket.
Connect rate (handshakes/s) is measured while each fanout run connects its subscribers.

Server CPU is read from /proc for the server processes only; Redis and the load generator (its
own processes) are reported apart. Results: docs/benchmarks.md (between the result markers) and
docs/bench-*.png; raw numbers in bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench import report
from bench.wsclient import Client, connect, publisher_flavor

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PEERS = ROOT / "bench" / "peers"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
PAD = "x" * 60  # with seq and timestamp: about 100 bytes of content


@dataclass
class Server:
    name: str
    label: str
    flavor: str
    instances: int
    redis: bool

    workers: int = 0  # > 0: under gunicorn with WEB_CONCURRENCY=workers (one instance, its workers' CPU counted)
    idle_channels: int = 1  # channels each idle socket is subscribed to (the idle scenario)

    def command(self, port: int, redis_url: str) -> tuple[list[str], dict[str, str]]:
        if self.name.startswith(("switchboard", "gunicorn")):
            env = {
                "SWITCHBOARD_JWT_SECRET": SECRET,
                "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "1000000",
                "SWITCHBOARD_RATE_LIMIT_BURST": "1000000",
                # Admission control guards against reconnect storms; here handshakes are the load.
                "SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND": "1000000",
                "SWITCHBOARD_LOG_LEVEL": "warning",
                "SWITCHBOARD_INSTANCE_ID": f"bench-{port}",
            }
            if self.workers:
                env |= {
                    "SWITCHBOARD_HOST": "127.0.0.1",
                    "SWITCHBOARD_PORT": str(port),
                    "SWITCHBOARD_BROKER_URL": redis_url,
                    "WEB_CONCURRENCY": str(self.workers),
                    # gunicorn empties this directory at start: one of its own, not the shared default
                    "PROMETHEUS_MULTIPROC_DIR": str(ROOT / "bench" / "results" / f"metrics-{port}"),
                }
                return [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], env
            cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
            return [*cmd, "--broker-url", redis_url], env
        if self.name in ("ceiling", "picows"):
            module = {"ceiling": "bench.servers.ceiling", "picows": "bench.servers.picows_server"}[self.name]
            return [str(BIN / "python"), "-m", module, "--port", str(port)], {}
        if self.name.startswith("node-"):
            script = PEERS / {"node-ws": "ws_server.js", "node-socketio": "socketio_server.js"}[self.name]
            return ["node", str(script), "--port", str(port)], {"REDIS_URL": redis_url}
        module = {"tutorial": "bench.servers.tutorial:app", "socketio": "bench.servers.socketio_server:app"}[self.name]
        cmd = [str(BIN / "uvicorn"), module, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return cmd, {"REDIS_URL": redis_url}


SERVERS = {
    "switchboard": Server("switchboard", "Switchboard (2 instances + Redis)", "plain", 2, True),
    # The same two instances and publishers (/ws/global clients), other subscribers: Centrifugo's
    # JSON protocol, and SSE streams, each on the channel /ws/global/{name} publishes to.
    "switchboard-centrifuge": Server(
        "switchboard-centrifuge", "Switchboard, /connection/websocket (2 instances + Redis)", "centrifuge", 2, True
    ),
    "switchboard-sse": Server("switchboard-sse", "Switchboard, GET /sse (2 instances + Redis)", "sse", 2, True),
    # Switchboard's own multiplexed protocol, /ws, one channel per socket (publishers are /ws
    # clients too), and idle /ws sockets in 10 channels each: what the other transports and a
    # multiplexed socket are held to.
    "switchboard-ws": Server("switchboard-ws", "Switchboard, /ws (2 instances + Redis)", "ws", 2, True),
    "switchboard-ws10": Server(
        "switchboard-ws10", "Switchboard, /ws, 10 channels per socket (idle only)", "ws", 2, True, 0, 10
    ),
    # One instance under gunicorn, one worker or two: what WEB_CONCURRENCY buys on two cores.
    "gunicorn-1": Server(
        "gunicorn-1", "Switchboard under gunicorn, 1 worker (1 instance + Redis)", "plain", 1, True, 1
    ),
    "gunicorn-2": Server(
        "gunicorn-2", "Switchboard under gunicorn, 2 workers (1 instance + Redis)", "plain", 1, True, 2
    ),
    "ceiling": Server("ceiling", "websockets broadcast() (1 process, no Redis)", "plain", 1, False),
    "picows": Server("picows", "picows room server (1 process, no Redis)", "plain", 1, False),
    "tutorial": Server("tutorial", "tutorial pattern (2 instances + Redis)", "plain", 2, True),
    "socketio": Server("socketio", "python-socketio + AsyncRedisManager (2 instances)", "socketio", 2, True),
    "node-ws": Server("node-ws", "Node ws + Redis, one subscriber per process (2 instances)", "plain", 2, True),
    "node-socketio": Server(
        "node-socketio", "Node socket.io 4 + @socket.io/redis-adapter (2 instances)", "socketio", 2, True
    ),
}


# Servers measured in some scenarios only: the other transports and gunicorn's workers are
# compared with Switchboard's own figures, not with every peer's.
ONLY = {
    "switchboard-centrifuge": ("rooms", "idle"),
    "switchboard-sse": ("rooms", "idle"),
    "switchboard-ws": ("rooms", "idle"),
    "switchboard-ws10": ("idle",),
    "gunicorn-1": ("rooms",),
    "gunicorn-2": ("rooms",),
}


def node_missing() -> str | None:
    """Why the Node peers cannot run here, or None: they need ``node`` and ``npm ci`` in bench/peers."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PEERS / "node_modules").is_dir():
        return "bench/peers/node_modules is missing (make bench runs npm ci there)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of these processes (every thread; reaped children included)."""
    user = system = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        user += int(fields[11]) / CLK_TCK
        system += int(fields[12]) / CLK_TCK
    return user, system


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_split(pids))


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:  # it exited
        pass
    return found


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


async def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free port, keeping nothing on disk; returns it and its URL."""
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        ["redis-server", *args, "--dir", str(workdir), "--maxclients", "20000"], stdout=subprocess.DEVNULL
    )
    await wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


async def spawn_loaders(spec: dict[str, Any], processes: int) -> list[asyncio.subprocess.Process]:
    """Load-generator processes (bench/subscribers.py), the spec's sockets dealt out among them."""
    loaders = []
    for i in range(processes):
        part = {**spec, "channel_of": spec["channel_of"][i::processes], "target_of": spec["target_of"][i::processes]}
        loaders.append(
            await asyncio.create_subprocess_exec(
                str(BIN / "python"),
                "-m",
                "bench.subscribers",
                json.dumps(part),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=2**26,
            )
        )
    return loaders


@dataclass
class Stack:
    server: Server
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None
    clients: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def server_pids(self) -> list[int]:
        """The server processes and their children (gunicorn's workers), read anew each time."""
        pids = [p.pid for p in self.procs]
        for pid in pids:  # grows while it is walked: children's children too
            pids += children(pid)
        return pids

    async def start(self, instances: int, workdir: Path) -> None:
        redis_url = ""
        if self.server.redis:
            self.redis, redis_url = await start_redis(workdir)
        for _ in range(instances):
            port = free_port()
            cmd, env = self.server.command(port, redis_url)
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
            log = (workdir / f"{self.server.name}-{port}.log").open("wb")
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env={**clean, **env}, stdout=log, stderr=log))
            self.ports.append(port)
        for port in self.ports:
            await wait_port(port)

    async def start_clients(self, spec: dict[str, Any], processes: int) -> list[dict[str, Any]]:
        self.clients += await spawn_loaders(spec, processes)
        return [await self.read(c, timeout=180) for c in self.clients]

    async def read(self, client: asyncio.subprocess.Process, timeout: float = 60) -> dict[str, Any]:
        assert client.stdout is not None
        line = await asyncio.wait_for(client.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("a load-generator process died")
        message: dict[str, Any] = json.loads(line)
        return message

    async def ask(self, cmd: str) -> list[dict[str, Any]]:
        for client in self.clients:
            assert client.stdin is not None
            client.stdin.write(json.dumps({"cmd": cmd}).encode() + b"\n")
            await client.stdin.drain()
        return [await self.read(c) for c in self.clients]

    @property
    def client_pids(self) -> list[int]:
        return [c.pid for c in self.clients]

    async def stop(self) -> None:
        for client in self.clients:
            if client.returncode is None:
                client.kill()
                await client.wait()
        for proc in [*self.procs, self.redis]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def warm_up(stack: Stack, publishers: dict[str, Client], channels: list[str], total: int) -> None:
    """Probe every channel until every socket has heard one: all subscriptions are live."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for channel in channels:
            publishers[channel].publish(channel, {"s": -1, "t": time.time(), "p": ""})
        await asyncio.sleep(0.2)
        if sum(s["warm"] for s in await stack.ask("status")) >= total:
            return
    raise RuntimeError("subscribers never all received a warm-up probe")


async def wait_phase(stack: Stack, phase: int, expected: int, stall: float = 5.0) -> None:
    """Until every expected delivery arrived, or nothing new arrived for ``stall`` seconds."""
    last, last_change = -1, time.monotonic()
    while True:
        unique = sum(s["unique"][phase] for s in await stack.ask("status"))
        if unique >= expected:
            return
        if unique != last:
            last, last_change = unique, time.monotonic()
        elif time.monotonic() - last_change > stall:
            return
        await asyncio.sleep(0.02)


async def start_profilers(
    pids: list[int], scenario: str, server: str, outdir: Path
) -> list[asyncio.subprocess.Process]:
    """py-spy on every server process for the burst alone (``--profile DIR``); see bench/profile.py.

    ``--nonblocking``: py-spy reads the stacks without stopping the process. Stopped for each
    sample (its default), a process is caught at a system call's exit far more often than its share
    of the time: the rooms profile gave the send calls 56 % of the samples that way, 49 % without
    stopping, against 43 % of the CPU that /proc counts as system time in the same scenario."""
    outdir.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in pids:
        out = outdir / f"{scenario}-{server}-{pid}.txt"
        spies.append(
            await asyncio.create_subprocess_exec(
                str(BIN / "py-spy"),
                *("record", "--nonblocking", "--pid", str(pid), "--rate", "400", "--format", "raw"),
                *("--output", str(out)),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    await asyncio.sleep(1)  # attached before the first message
    return spies


async def stop_profilers(spies: list[asyncio.subprocess.Process]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
    for spy in spies:
        await asyncio.wait_for(spy.wait(), 30)


async def burst_phase(
    stack: Stack,
    publishers: dict[str, Any],
    channels: list[str],
    first: int,
    count: int,
    per_channel: int,
    phase: int = 0,
) -> None:
    """Publish ``count`` numbered messages round-robin over the channels as fast as the loop allows."""
    for seq in range(first, first + count):
        channel = channels[seq % len(channels)]
        publishers[channel].publish(channel, {"s": seq, "t": time.time(), "p": PAD})
        if seq % 50 == 49:
            await asyncio.sleep(0)  # let the publisher's transport flush
    await wait_phase(stack, phase, count * per_channel)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def layout(scenario: str, args: argparse.Namespace, instances: int) -> tuple[list[str], int, int, list[Any], list[int]]:
    """Channels, subscribers per channel, burst messages, each socket's channel(s) and instance.

    Every channel's members alternate between instances, so all traffic crosses Redis.
    """
    if scenario == "multiplex":  # /ws: 1000 sockets, each in 10 of 100 channels (100 per channel)
        channels = [f"mux-{i}" for i in range(100)]
        sockets = 1000
        channel_of: list[Any] = [[(n * 10 + k) % 100 for k in range(10)] for n in range(sockets)]
        return channels, 100, args.mux_messages, channel_of, [(n // 10) % instances for n in range(sockets)]
    if scenario == "fanout":
        channels, per_channel, burst = ["bench"], args.subscribers, args.messages
    else:
        channels, per_channel, burst = [f"room-{i}" for i in range(100)], 10, args.room_messages
    n_sockets = per_channel * len(channels)
    channel_of = [n % len(channels) for n in range(n_sockets)]
    return channels, per_channel, burst, channel_of, [(n // len(channels)) % instances for n in range(n_sockets)]


async def run_fanout(server: Server, scenario: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    channels, per_channel, burst, channel_of, target_of = layout(scenario, args, server.instances)
    flavor = "ws" if scenario == "multiplex" else server.flavor
    by = publisher_flavor(flavor)
    rate_messages = int(args.rate / (per_channel * len(channels)) * args.rate_seconds) if scenario == "fanout" else 0
    # Phase 0 primes the server with a burst like the measured one (phase 1), unmeasured: a JIT
    # (Node's V8) compiles its hot paths and every process's buffers and caches reach their steady
    # size before the CPU counters are read, whatever the server.
    prime = burst if args.prime else 0
    phases = [{"start": 0, "end": prime}, {"start": prime, "end": prime + burst}]
    if rate_messages:
        phases.append({"start": prime + burst, "end": prime + burst + rate_messages, "latency": True})
    stack = Stack(server)
    try:
        await stack.start(server.instances, workdir)
        targets: list[tuple[str, int]] = [("127.0.0.1", p) for p in stack.ports]
        spec = {
            "targets": targets,
            "channels": channels,
            "flavor": flavor,
            "phases": phases,
            "channel_of": channel_of,
            "target_of": target_of,
        }
        cpu0 = cpu_seconds(stack.server_pids)
        ready = await stack.start_clients(spec, args.client_processes)
        connect_seconds = max(r["connect_seconds"] for r in ready)
        connect_cpu = cpu_seconds(stack.server_pids) - cpu0
        sockets = sum(r["connected"] for r in ready)
        publishers = {}
        for i, channel in enumerate(channels):
            host, port = targets[i % len(targets)]
            publishers[channel] = await connect(host, port, channel, by, lambda s, t: None)
        await warm_up(stack, publishers, channels, sockets)
        if prime:
            await burst_phase(stack, publishers, channels, 0, prime, per_channel)

        pids = stack.server_pids
        redis_pids = [stack.redis.pid] if stack.redis else []
        split_start, redis_start, client_start = (
            cpu_split(pids),
            cpu_seconds(redis_pids),
            cpu_seconds(stack.client_pids),
        )
        profiled = args.profile and not server.name.startswith("node-")  # py-spy samples Python only
        spies = await start_profilers(pids, scenario, server.name, args.profile) if profiled else []
        wall_start = time.perf_counter()
        await burst_phase(stack, publishers, channels, prime, burst, per_channel, phase=1)
        wall = time.perf_counter() - wall_start
        await stop_profilers(spies)
        split_end = cpu_split(pids)
        # Where the server's CPU went: its own code (user) or the kernel's (system: mostly the
        # send system call, one per delivery, for every server here).
        server_user, server_system = (end - start for end, start in zip(split_end, split_start, strict=True))
        server_cpu = server_user + server_system
        redis_cpu = cpu_seconds(redis_pids) - redis_start
        client_cpu = cpu_seconds(stack.client_pids) - client_start

        if rate_messages:
            interval = 1 / (args.rate / (per_channel * len(channels)))
            start = time.perf_counter()
            for i in range(rate_messages):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                seq = prime + burst + i
                publishers[channels[0]].publish(channels[0], {"s": seq, "t": time.time(), "p": PAD})
            await wait_phase(stack, 2, rate_messages * per_channel)
        final = await stack.ask("report")
        latencies = sorted(x for r in final for x in r["latencies"])
        burst_stats = [r["phases"][1] for r in final]
        delivered = sum(p["unique"] for p in burst_stats)
        result = {
            "server": server.name,
            "scenario": scenario,
            "sockets": sockets,
            "deliveries": delivered,
            "expected": sum(p["expected"] for p in burst_stats),
            "server_cpu": server_cpu,
            "server_user_cpu": server_user,
            "server_system_cpu": server_system,
            "redis_cpu": redis_cpu,
            "client_cpu": client_cpu,
            "wall": wall,
            "per_cpu_second": delivered / server_cpu if server_cpu else float("nan"),
            "per_wall_second": delivered / wall,
            "lost": sum(p["lost"] for r in final for p in r["phases"]),
            "duplicates": sum(p["duplicates"] for r in final for p in r["phases"]),
            "closed_by_server": sum(r["closed"] for r in final),
            "connect_rate": sockets / connect_seconds,
            "connect_cpu_ms": 1000 * connect_cpu / sockets,
        }
        if latencies:
            result.update({f"p{q}": percentile(latencies, q / 100) * 1000 for q in (50, 95, 99)})
        for client in publishers.values():
            client.close()
        return result
    finally:
        await stack.stop()


async def run_idle(server: Server, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stack = Stack(server)
    try:
        await stack.start(1, workdir)
        await asyncio.sleep(1)  # let imports and start-up allocations settle
        before = rss_bytes(stack.procs[0].pid)
        many = server.idle_channels > 1
        channels = [f"idle-{k}" for k in range(server.idle_channels)] if many else ["idle"]
        spec = {
            "targets": [["127.0.0.1", stack.ports[0]]],
            "channels": channels,
            "flavor": server.flavor,
            "phases": [],
            "channel_of": [list(range(len(channels)))] * args.idle if many else [0] * args.idle,
            "target_of": [0] * args.idle,
        }
        ready = await stack.start_clients(spec, args.client_processes)
        sockets = sum(r["connected"] for r in ready)
        by = publisher_flavor(server.flavor)
        publishers = {ch: await connect("127.0.0.1", stack.ports[0], ch, by, lambda s, t: None) for ch in channels}
        await warm_up(stack, publishers, channels, sockets)
        after = rss_bytes(stack.procs[0].pid)
        for publisher in publishers.values():
            publisher.close()
        return {
            "server": server.name,
            "scenario": "idle",
            "channels_per_socket": len(channels),
            "sockets": sockets,
            "rss_before": before,
            "rss_after": after,
            "bytes_per_connection": (after - before) / sockets,
        }
    finally:
        await stack.stop()


async def run_scale(server: Server, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One instance, one channel, one publisher: 1000 sockets, then ``--scale`` sockets.

    Each size gets the same number of deliveries (``--scale-deliveries``), so the two
    deliveries-per-CPU-second figures and the two memory-per-socket figures compare like for like.
    """
    result: dict[str, Any] = {"server": server.name, "scenario": "scale"}
    for size in (1000, args.scale):
        burst = max(1, round(args.scale_deliveries / size))
        stack = Stack(server)
        try:
            await stack.start(1, workdir)
            await asyncio.sleep(1)  # let imports and start-up allocations settle
            pid = stack.procs[0].pid
            before = rss_bytes(pid)
            spec = {
                "targets": [["127.0.0.1", stack.ports[0]]],
                "channels": ["scale"],
                "flavor": server.flavor,
                "phases": [{"start": 0, "end": burst}],
                "channel_of": [0] * size,
                "target_of": [0] * size,
            }
            ready = await stack.start_clients(spec, args.client_processes)
            sockets = sum(r["connected"] for r in ready)
            publisher = await connect("127.0.0.1", stack.ports[0], "scale", server.flavor, lambda s, t: None)
            await warm_up(stack, {"scale": publisher}, ["scale"], sockets)
            rss = rss_bytes(pid)
            spies = await start_profilers([pid], f"scale{size}", server.name, args.profile) if args.profile else []
            cpu_start = cpu_seconds([pid])
            for seq in range(burst):
                publisher.publish("scale", {"s": seq, "t": time.time(), "p": PAD})
                await asyncio.sleep(0)
            await wait_phase(stack, 0, burst * sockets, stall=10)
            cpu = cpu_seconds([pid]) - cpu_start
            await stop_profilers(spies)
            final = await stack.ask("report")
            delivered = sum(r["phases"][0]["unique"] for r in final)
            result[f"sockets_{size}"] = sockets
            result[f"per_cpu_second_{size}"] = delivered / cpu if cpu else float("nan")
            result[f"bytes_per_socket_{size}"] = (rss - before) / sockets
            result[f"lost_{size}"] = sum(r["phases"][0]["lost"] for r in final)
            publisher.close()
        finally:
            await stack.stop()
    result["large"] = args.scale
    return result


async def main(args: argparse.Namespace) -> None:
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    servers = [SERVERS[name] for name in args.servers.split(",")]
    if (why := node_missing()) and any(s.name.startswith("node-") for s in servers):
        print(f"note: skipping the Node peers: {why}", flush=True)
        servers = [s for s in servers if not s.name.startswith("node-")]
    plan = [
        (s, sc, rep)
        for sc in args.scenarios.split(",")
        for rep in range(args.reps)
        for s in servers
        # only Switchboard speaks /ws; the scale scenario runs Switchboard and, to tell the machine's
        # share from ours, the ceiling
        if (sc != "multiplex" or s.name == "switchboard")
        and (sc != "scale" or s.name in ("switchboard", "ceiling", "picows"))
        and sc in ONLY.get(s.name, (sc,))
    ]
    started = time.monotonic()
    for i, (server, scenario, rep) in enumerate(plan, start=1):
        print(f"[{i}/{len(plan)}] {scenario:9} {server.name:11} run {rep + 1} ...", end=" ", flush=True)
        t0 = time.monotonic()
        if scenario == "idle":
            result = await run_idle(server, args, workdir)
            summary = f"{result['bytes_per_connection'] / 1024:.1f} KB/conn"
        elif scenario == "scale":
            result = await run_scale(server, args, workdir)
            big = args.scale
            summary = (
                f"{result['per_cpu_second_1000']:,.0f} -> {result[f'per_cpu_second_{big}']:,.0f} deliveries/CPU-s, "
                f"{result['bytes_per_socket_1000'] / 1024:.1f} -> "
                f"{result[f'bytes_per_socket_{big}'] / 1024:.1f} KB/socket"
            )
        else:
            result = await run_fanout(server, scenario, args, workdir)
            summary = (
                f"{result['per_cpu_second']:,.0f} deliveries/CPU-s, lost {result['lost']}, dup {result['duplicates']}"
            )
        result["rep"] = rep
        results.append(result)
        print(f"{summary} ({time.monotonic() - t0:.0f}s)", flush=True)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu_model": next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": round(time.monotonic() - started),
    }
    command = "make bench" if args.default_run else "python -m bench.run " + " ".join(sys.argv[1:])
    (workdir / "latest.json").write_text(
        json.dumps({"machine": machine, "results": results, "args": vars(args)}, indent=2, default=str)
    )
    if args.profile:  # sampling slows the servers: these results are not for the docs
        print(f"done in {machine['seconds']}s: profiles in {args.profile}; summarise with python -m bench.profile")
        return
    if args.no_docs:
        print(f"done in {machine['seconds']}s: bench/results/latest.json (docs untouched)")
        return
    report.write(results, machine, command, ROOT / "docs")
    print(f"done in {machine['seconds']}s: docs/benchmarks.md, docs/bench-*.png")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default="fanout,rooms,multiplex,idle,scale")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200, help="burst messages in the fanout scenario")
    parser.add_argument("--room-messages", type=int, default=20000, help="burst messages in the rooms scenario")
    parser.add_argument("--mux-messages", type=int, default=6000, help="burst messages in the multiplex scenario")
    parser.add_argument("--rate", type=float, default=20000, help="deliveries/s in the latency phase")
    parser.add_argument("--rate-seconds", type=float, default=5)
    parser.add_argument("--idle", type=int, default=5000, help="idle connections for the memory scenario")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--profile", type=Path, help="py-spy each server process during each burst into this folder (docs untouched)"
    )
    parser.add_argument(
        "--prime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="an unmeasured burst before each measured one",
    )
    parser.add_argument("--no-docs", action="store_true", help="leave docs/ alone (results in latest.json only)")
    parser.add_argument("--scale", type=int, default=18000, help="sockets on one instance in the scale scenario")
    parser.add_argument("--scale-deliveries", type=int, default=900_000, help="deliveries per size in it")
    args = parser.parse_args()
    args.default_run = len(sys.argv) == 1
    return args


if __name__ == "__main__":
    uvloop.run(main(parse()))
