"""Handshake CPU per token algorithm, against HS256.

    make bench-auth                       # about a minute on 2 cores
    .venv/bin/python -m bench.auth --handshakes 500

For each algorithm one instance runs with that provider (HS256 with a secret; RS256, PS256,
ES256 and EdDSA with a PEM public key, as a JWKS key would be once cached). The client opens
``--handshakes`` ``/ws`` connections (``--concurrency`` at a time), each with its own token, sends
``connect`` and waits for the reply; the server's CPU (user + system, from /proc) over the run,
divided by the handshakes, is the cost of one. Verification alone is measured too, in this process,
as CPU per ``Authenticator.verify``. Results go between the auth markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from websockets.asyncio.client import connect

from app.auth import Authenticator
from app.auth_config import JwksOptions, ProviderConfig
from bench.sections import replace_section

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ALGORITHMS = ("HS256", "RS256", "PS256", "ES256", "EdDSA")
START, END = "<!-- auth:start -->", "<!-- auth:end -->"


def signing_key(alg: str) -> tuple[Any, str | None]:
    """The private key (or secret) and the public PEM (None for HMAC)."""
    if alg == "HS256":
        return SECRET, None
    if alg in ("RS256", "PS256"):
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, pem.decode()


def tokens(alg: str, key: Any, count: int) -> list[str]:
    now = int(time.time())
    return [jwt.encode({"sub": f"user-{n}", "iat": now, "exp": now + 3600}, key, algorithm=alg) for n in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_app(port: int, alg: str, pem: str | None, workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PROMETHEUS_"))}
    env.update(
        SWITCHBOARD_JWT_SECRET=SECRET if pem is None else "",
        SWITCHBOARD_JWT_ALGORITHMS=alg,
        SWITCHBOARD_LOG_LEVEL="warning",
        SWITCHBOARD_MAX_HANDSHAKES_PER_SECOND="100000",
    )
    if pem is not None:
        env["SWITCHBOARD_JWT_PUBLIC_KEY"] = pem
    log = (workdir / f"auth-{alg}.log").open("wb")
    cmd = [str(BIN / "python"), "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


async def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"no instance on {port}")


async def handshakes(port: int, batch: list[str], concurrency: int) -> None:
    queue = list(batch)

    async def one_client() -> None:
        while queue:
            token = queue.pop()
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=30) as ws:
                await ws.send(orjson.dumps({"id": 1, "op": "connect", "token": token}).decode())
                assert orjson.loads(await ws.recv())["ok"], "connect refused"

    await asyncio.gather(*(one_client() for _ in range(concurrency)))


async def verify_cost(alg: str, key: Any, pem: str | None, count: int) -> float:
    """CPU microseconds per Authenticator.verify, in this process."""
    source = {"secret_env": "BENCH_SECRET"} if pem is None else {"public_key": pem}
    os.environ["BENCH_SECRET"] = SECRET
    auth = Authenticator([ProviderConfig.model_validate({**source, "algorithms": [alg]})], JwksOptions())
    batch = tokens(alg, key, count)
    started = time.process_time()
    for token in batch:
        await auth.verify(token)
    return (time.process_time() - started) / count * 1e6


async def measure(alg: str, count: int, concurrency: int, reps: int, workdir: Path) -> dict[str, Any]:
    key, pem = signing_key(alg)
    port = free_port()
    proc = start_app(port, alg, pem, workdir)
    try:
        await wait_port(port)
        await handshakes(port, tokens(alg, key, 50), concurrency)  # warm-up: imports, caches
        per_handshake = []
        for _ in range(reps):
            batch = tokens(alg, key, count)
            before = cpu_seconds(proc.pid)
            await handshakes(port, batch, concurrency)
            per_handshake.append((cpu_seconds(proc.pid) - before) / count * 1e6)
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "alg": alg,
        "handshake_us": statistics.median(per_handshake),
        "verify_us": await verify_cost(alg, key, pem, 2000),
    }


def write(results: list[dict[str, Any]], command: str, count: int, reps: int) -> None:
    base = next(r for r in results if r["alg"] == "HS256")
    lines = [
        START,
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on this machine "
        f"({os.cpu_count()} cores): {count} `/ws` handshakes per run, median of {reps} runs; server CPU from /proc.",
        "",
        "| algorithm | server CPU per handshake | vs HS256 | verification alone | share of the handshake |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['alg']} | {r['handshake_us']:.0f} us | {r['handshake_us'] / base['handshake_us']:.2f}x | "
            f"{r['verify_us']:.0f} us | {r['verify_us'] / r['handshake_us']:.0%} |"
        )
    lines.append(END)
    replace_section(ROOT / "docs" / "benchmarks.md", START, END, lines, heading="Token verification")


async def main(args: argparse.Namespace) -> None:
    workdir = ROOT / "bench" / "results"
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for alg in ALGORITHMS:
        result = await measure(alg, args.handshakes, args.concurrency, args.reps, workdir)
        print(f"  {alg}: {result['handshake_us']:.0f} us per handshake, {result['verify_us']:.0f} us to verify")
        results.append(result)
    command = "make bench-auth" if len(sys.argv) == 1 else "python -m bench.auth " + " ".join(sys.argv[1:])
    write(results, command, args.handshakes, args.reps)
    print("done: docs/benchmarks.md (token verification)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--handshakes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
