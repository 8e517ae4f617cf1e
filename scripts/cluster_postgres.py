"""`make cluster OUTBOX=1`: a private PostgreSQL for the outbox (docs/outbox.md), with its table.

initdb into a directory of its own under the temp dir (the ``postgres`` user must be able to reach
it, which DIR may not allow), ``postgres`` on a free loopback port with trust auth (loopback only, a
throwaway cluster), then the outbox DDL. As root, PostgreSQL (which refuses root) runs as the
``postgres`` user. Returns the server's PID and directory, for ``cluster.py down``, and the relays' URL.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path("/usr/lib/postgresql/15/bin")
USER = "switchboard"


def start(state_dir: Path, port: int) -> tuple[int, Path, str]:
    import psycopg  # the relay's own dependency: in the venv

    sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))
    from switchboard_client.outbox import DDL

    if not (BIN / "postgres").exists():
        raise SystemExit("cluster: PostgreSQL 15 is not installed (make deps installs postgresql-15)")
    home = Path(tempfile.mkdtemp(prefix="switchboard-cluster-pg-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(home, owner.pw_uid, owner.pw_gid)
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    initdb = [str(BIN / "initdb"), "-D", str(home / "data"), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
    subprocess.run(initdb, check=True, capture_output=True, timeout=120, **as_user)
    args = [str(BIN / "postgres"), "-D", str(home / "data"), "-p", str(port), "-k", str(home)]
    args += ["-c", "listen_addresses=127.0.0.1"]
    with (state_dir / "logs" / "postgres.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_user)
    url = f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
                conn.execute(DDL)
            return proc.pid, home, url
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("cluster: PostgreSQL did not start (see logs/postgres.log)") from None
            time.sleep(0.1)
