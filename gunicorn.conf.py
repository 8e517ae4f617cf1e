"""gunicorn settings for production: ``gunicorn -c gunicorn.conf.py``.

Every value comes from the environment, so one image serves compose, Kubernetes and
``make cluster``. Switchboard's own settings stay SWITCHBOARD_*; gunicorn's are the usual names.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from app.launch import env_int, load_settings
from app.logs import log_config

# Read once, here, so that every value gunicorn uses (the bind address above all) went through the
# same checks as the app's: a bad setting, or a Kubernetes service link such as
# SWITCHBOARD_PORT=tcp://10.96.0.12:80, never reaches gunicorn as text. A bad setting stops here
# with one line (status 2), before any worker starts.
# One async worker holds thousands of sockets; add workers for CPU, not for connections.
workers = env_int("WEB_CONCURRENCY", 1)
settings = load_settings(workers=workers)
wsgi_app = "app.main:create_app()"
worker_class = "app.server.Worker"
bind = [f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"]
# Every instance would otherwise claim the same ~/.gunicorn control socket.
control_socket_disable = True
# Worker heartbeat, not a request timeout: WebSockets live far longer and are not affected.
timeout = env_int("GUNICORN_TIMEOUT", 60)
keepalive = 5
# The drain (SWITCHBOARD_DRAIN_SECONDS) plus uvicorn's own 5 s shutdown must fit inside this.
graceful_timeout = int(settings.drain_seconds) + 15
logconfig_dict = log_config(settings.log_level)
# uvicorn logs handshakes itself; gunicorn's access log would duplicate them.
accesslog = None

# Metrics from every worker are merged through files in this directory.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "switchboard-metrics"))
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server: Any) -> None:
    # Files left by a previous run would be summed into this one's metrics.
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    os.makedirs(METRICS_DIR, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
