"""Redis Sentinel for tests: a master, a replica and three sentinels on free loopback ports.

Each sentinel is ``redis-server <its own config> --sentinel``,
monitoring ``mymaster`` with a quorum of 2, down after 1 s. Every process is stopped by PID.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.support import REDIS_SERVER, RedisServer, free_port, wait_until

MASTER_NAME = "mymaster"


class SentinelSet:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(workdir / "replica")
        self.ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port), "--repl-diskless-sync-delay", "0"]
        self.replica.start()
        wait_until(lambda: replication(self.replica.port)["master_link_status"] == "up", 10, "the replica in sync")
        for port in self.ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 3000\n"
            )
            log = (self.dir / f"sentinel-{port}.log").open("ab")
            self.sentinels.append(subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"], stdout=log, stderr=log))
            log.close()
        wait_until(lambda: all(self.knows_replica(port) for port in self.ports), 15, "sentinels that see the replica")
        return self

    def knows_replica(self, port: int) -> bool:
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            others = client.sentinel_sentinels(MASTER_NAME)
            return bool(client.sentinel_slaves(MASTER_NAME)) and isinstance(others, list) and len(others) == 2
        finally:
            client.close()

    def master_port(self) -> int:
        client = redis.Redis(port=self.ports[0], socket_timeout=1)
        try:
            address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            assert isinstance(address, tuple), address
            return int(address[1])
        finally:
            client.close()

    def kill_master(self) -> float:
        """SIGKILL the current master; returns when it was killed (time.monotonic())."""
        current = self.master if self.master_port() == self.master.port else self.replica
        killed = time.monotonic()
        current.stop(signal.SIGKILL)
        return killed

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.replica.stop()
        self.master.stop()


def replication(port: int) -> dict[str, str]:
    client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
    try:
        return {k: str(v) for k, v in client.info("replication").items()}
    finally:
        client.close()


class ClusterSet:
    """A Redis Cluster of ``masters`` primaries, each with ``replicas`` replicas, on free ports."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1, extra: list[str] | None = None) -> None:
        self.dir = workdir
        self.masters, self.replicas = masters, replicas
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            node = RedisServer(workdir / f"n{i}")
            bus = free_port()
            node.extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(workdir / f"n{i}" / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--cluster-port", str(bus),
                "--repl-diskless-sync-delay", "0",
                *(extra or []),
            ]  # fmt: skip
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> ClusterSet:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until(self.healthy, 30, "cluster_state:ok with every replica in sync")
        return self

    def healthy(self) -> bool:
        client = redis.Redis(port=self.nodes[0].port, socket_timeout=1, decode_responses=True)
        try:
            if client.cluster("INFO").get("cluster_state") != "ok":
                return False
        finally:
            client.close()
        replicas = [n for n in self.nodes if replication(n.port).get("role") == "slave"]
        return len(replicas) == self.masters * self.replicas and all(
            replication(n.port).get("master_link_status") == "up" for n in replicas
        )

    def primaries(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and replication(n.port).get("role") == "master"]

    def owner(self, channel: str) -> RedisServer:
        """The primary that owns ``channel``'s slot now."""
        client = redis.Redis(port=self.primaries()[0].port, socket_timeout=1)
        try:
            slot = int(client.cluster("KEYSLOT", channel))
            for start, end, primary, *_ in client.cluster("SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        finally:
            client.close()
        raise AssertionError(f"no owner for slot of {channel}")

    def migrate(self, channel: str, target: RedisServer) -> None:
        """Move ``channel``'s slot, keys and all, to ``target`` (as ``redis-cli --cluster reshard``
        does, one slot): IMPORTING/MIGRATING, MIGRATE the keys, then SETSLOT NODE everywhere."""
        source = self.owner(channel)
        src = redis.Redis(port=source.port, socket_timeout=5)
        dst = redis.Redis(port=target.port, socket_timeout=5)
        try:
            slot = int(src.cluster("KEYSLOT", channel))
            src_id, dst_id = src.cluster("MYID"), dst.cluster("MYID")
            dst.cluster("SETSLOT", slot, "IMPORTING", src_id)
            src.cluster("SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.cluster("GETKEYSINSLOT", slot, 100):
                src.migrate("127.0.0.1", target.port, keys, 0, 5000)
            for node in self.primaries():
                client = redis.Redis(port=node.port, socket_timeout=5)
                try:
                    client.cluster("SETSLOT", slot, "NODE", dst_id)
                finally:
                    client.close()
        finally:
            src.close()
            dst.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGKILL)
