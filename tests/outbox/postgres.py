"""A private PostgreSQL for tests: initdb into a temp dir, ``postgres`` on a free port, stopped by PID.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user, in a
directory of its own. fsync is off: these tests restart the server cleanly, never the machine.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from tests.support import free_port, wait_until

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "switchboard"
# In the DSN (trust auth ignores it) so that tests can check it never reaches a log.
PASSWORD = "pg-secret-never-logged-0123456789"


def available() -> bool:
    return (BIN / "postgres").exists()


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def init(self) -> PostgresServer:
        cmd = [str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, **self._as)
        return self

    def start(self) -> PostgresServer:
        args = [str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"]
        args += ["-c", "max_connections=200", "-c", "log_min_messages=fatal"]
        log = (self.dir / "postgres.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **self._as)
        log.close()
        wait_until(self.ping, 30, f"postgres on {self.port}")
        return self

    def ping(self) -> bool:
        with psycopg.connect(self.url(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT is PostgreSQL's fast shutdown: sessions are ended, committed work is kept."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
