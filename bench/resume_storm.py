"""Resume storm: many clients resuming one channel from the same offset at once.

    .venv/bin/python -m bench.resume_storm --compare <git rev>   # this tree, then that revision

What a reconnect storm does to one survivor: N clients (1000 by default) connect at once to
``/ws/global/storm?since=S&epoch=E``, 100 messages behind, and each waits for its ``recovered``
frame. Per code tree, in one run against a private redis-server: the time until every client has
caught up, the history reads Redis served (``XRANGE`` calls during the storm: only the history
script makes them), and the instance's CPU. ``--compare`` runs the same against a git revision
(a temporary worktree), so "before" and "after" come from one run on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from bench.run import BIN, ROOT, SECRET, cpu_seconds, free_port, start_redis, wait_port

API_KEY = "bench-api-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def start_app(tree: Path, port: int, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_JWT_SECRET=SECRET, SWITCHBOARD_BROKER_URL=redis_url, SWITCHBOARD_API_KEYS=API_KEY)
    # The storm is the point here, not admission control: let every handshake in.
    env.update(SWITCHBOARD_LOG_LEVEL="warning", SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND="100000")
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=out)


async def resume(url: str) -> None:
    async with connect(url, max_size=None, open_timeout=60) as ws:
        async for raw in ws:
            if orjson.loads(raw).get("type") == "recovered":
                return


async def xranges(r: aioredis.Redis) -> int:
    calls: int = (await r.info("commandstats")).get("cmdstat_xrange", {}).get("calls", 0)
    return calls


async def storm(tree: Path, clients: int, workdir: Path) -> dict[str, Any]:
    redis_proc, redis_url = await start_redis(workdir)
    port = free_port()
    app = start_app(tree, port, redis_url, workdir / f"app-{tree.name}.log")
    r = aioredis.from_url(redis_url)
    try:
        await wait_port(port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}) as http:
            for n in range(200):
                reply = await http.post("/api/global/storm", json={"content": {"n": n, "pad": "x" * 100}})
                reply.raise_for_status()
        epoch = reply.json()["epoch"]
        url = f"ws://127.0.0.1:{port}/ws/global/storm?since=100&epoch={epoch}"
        await resume(url)  # warm: the channel is subscribed and the script loaded
        before = await xranges(r)
        cpu = cpu_seconds([app.pid])
        started = time.perf_counter()
        await asyncio.gather(*(resume(url) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        reads = await xranges(r) - before
        return {"seconds": elapsed, "reads": reads, "cpu": cpu_seconds([app.pid]) - cpu}
    finally:
        await r.aclose()
        app.terminate()
        app.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sb-storm-") as tmp:
        workdir = Path(tmp)
        trees = [("this tree", ROOT)]
        if args.compare:
            before = workdir / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(before), args.compare], cwd=ROOT, check=True)
            trees.insert(0, (args.compare, before))
        try:
            print(f"{args.clients} clients resuming 100 messages behind, at once")
            for name, tree in trees:
                found = asyncio.run(storm(tree, args.clients, workdir))
                print(
                    f"  {name:>12}: all caught up in {found['seconds']:.2f} s, {found['reads']} history reads, "
                    f"instance CPU {found['cpu']:.2f} s"
                )
        finally:
            if args.compare:
                subprocess.run(["git", "worktree", "remove", "--force", str(workdir / "before")], cwd=ROOT, check=False)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--compare", help="a git revision to measure too, before this tree")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
