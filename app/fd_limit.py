"""The open-files limit: every socket is a file descriptor.

Container runtimes often start processes with a soft limit of 1024 (containerd 2.x does), which
would silently cap an instance at about a thousand sockets while the hard limit allows far more.
Start-up raises the soft limit to the hard one and logs both, so the ceiling is visible.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("switchboard")


def raise_open_files_limit() -> tuple[int, int]:
    """Soft limit up to the hard one; returns (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft, soft
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log.info(
        "open-files limit: soft %d -> %d (hard %s)", soft, now, "unlimited" if hard == resource.RLIM_INFINITY else hard
    )
    return soft, now
