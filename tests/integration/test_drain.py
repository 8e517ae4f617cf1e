"""SIGTERM: readiness off, new sockets refused, open ones closed with 1012 in paced batches."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.support import AppProcess, expect_close, wait_until, ws_connect

DRAIN_SECONDS = 2.0
SOCKETS = 40


async def test_sigterm_drains_in_paced_batches(tmp_path: Path) -> None:
    app = AppProcess("drainee", tmp_path, {"SWITCHBOARD_DRAIN_SECONDS": str(DRAIN_SECONDS)}).start()
    try:
        sockets = [await ws_connect(app.ws(f"/ws/room/r{i % 4}")) for i in range(SOCKETS)]
        closed_at: list[float] = []

        async def watch(ws: object) -> tuple[int | None, str]:
            result = await expect_close(ws, timeout=DRAIN_SECONDS + 5)  # type: ignore[arg-type]
            closed_at.append(time.monotonic())
            return result

        watchers = [asyncio.create_task(watch(ws)) for ws in sockets]
        assert app.proc is not None
        started = time.monotonic()
        app.proc.send_signal(signal.SIGTERM)

        wait_until(lambda: httpx.get(app.http + "/readyz").status_code == 503, 2, "readyz 503 while draining")
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(app.ws("/ws/echo"))
        assert refused.value.response.status_code == 503

        results = await asyncio.gather(*watchers)
        assert all(code == 1012 for code, _ in results), results
        # Paced: spread over the drain period, not all at once, and done within it (plus slack).
        spread = max(closed_at) - min(closed_at)
        assert spread >= DRAIN_SECONDS * 0.5, f"closes spread over only {spread:.2f}s"
        assert max(closed_at) - started <= DRAIN_SECONDS + 1.5
        app.proc.wait(timeout=DRAIN_SECONDS + 10)
        # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done.
        assert app.proc.returncode == -signal.SIGTERM
        assert "Application shutdown complete" in app.log_text()
        assert "drained 40 connections" in app.log_text()
        assert "Traceback" not in app.log_text()
    finally:
        app.stop()
