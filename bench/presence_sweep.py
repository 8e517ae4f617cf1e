"""What presence costs per channel: a sweeper pass and a refresh round against channel count.

    .venv/bin/python -m bench.presence_sweep                 # 128 to 10,240 channels
    .venv/bin/python -m bench.presence_sweep --channels 2560 --passes 50

Against a private redis-server: one member joins each channel (``RedisPresence``, as an instance
joins them), then the sweeper's pass (``sweep``) runs ``--passes`` times, and one refresh round
(what each instance does every ``PRESENCE_TTL``/3). Counted on Redis's side (``INFO
commandstats``): script calls (EVALSHA), and every command, scripts' own included; and the CPU
seconds this process spent. Prints a Markdown table (docs/security.md has one).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from typing import Any

import redis
import redis.asyncio

from app.presence import member_id
from app.presence_redis import RedisPresence
from bench.run import free_port


def counts(client: redis.Redis) -> tuple[int, int]:
    """(script calls, all commands) so far, less the INFO calls that read them."""
    stats: dict[str, Any] = client.info("commandstats")
    scripts = sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))
    return scripts, sum(int(entry["calls"]) for name, entry in stats.items() if name != "cmdstat_info")


async def measure(port: int, channels: int, passes: int) -> dict[str, float]:
    client = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool(port=port, max_connections=16))
    sync = redis.Redis(port=port)
    sync.flushall()
    presence = RedisPresence(client, ttl=30)
    try:
        for start in range(0, channels, 500):
            names = [f"bench:{n}" for n in range(start, min(start + 500, channels))]
            await asyncio.gather(*(presence.join(name, member_id(f"c-{name}", "", None)) for name in names))
        await presence.sweep()  # scripts loaded
        scripts, commands = counts(sync)
        cpu = time.process_time()
        for _ in range(passes):
            await presence.sweep()
        pass_cpu = (time.process_time() - cpu) / passes
        after_scripts, after_commands = counts(sync)
        sweep = ((after_scripts - scripts) / passes, (after_commands - commands) / passes)
        cpu = time.process_time()
        await presence._refresh()  # one round, as the refresher runs it
        refresh_cpu = time.process_time() - cpu
        final_scripts, final_commands = counts(sync)
    finally:
        await presence.close()
        await client.aclose()
    return {
        "channels": channels,
        "pass_scripts": sweep[0],
        "pass_commands": sweep[1],
        "pass_cpu_ms": pass_cpu * 1000,
        "refresh_scripts": final_scripts - after_scripts,
        "refresh_commands": final_commands - after_commands,
        "refresh_cpu_ms": refresh_cpu * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 512, 2560, 10240])
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="presence-sweep-")
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        sync = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                sync.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        rows = [asyncio.run(measure(port, n, args.passes)) for n in args.channels]
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print("| channels | sweeper pass: scripts | all commands | CPU | refresh round: scripts | all commands | CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['channels']:,} | {r['pass_scripts']:.0f} | {r['pass_commands']:.0f} | {r['pass_cpu_ms']:.2f} ms "
            f"| {r['refresh_scripts']:,} | {r['refresh_commands']:,} | {r['refresh_cpu_ms']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
