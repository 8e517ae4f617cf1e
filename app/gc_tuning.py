"""The garbage collector, tuned for a process that holds many long-lived sockets.

CPython starts a collection of the youngest generation every 700 container allocations, and every
so often a full one that walks every live object: with thousands of open sockets, each made of
dozens of objects, those walks grew to 38 % of a handshake's CPU (0.25 of 0.67 ms, measured with
``gc.callbacks`` over 5,000 handshakes; docs/benchmarks.md). Two standard remedies, applied once
the application has started:

- ``gc.freeze()`` moves everything alive after start-up (modules, the app, the pools) to a
  permanent generation that collections skip; in a forked gunicorn worker it also keeps those
  pages shared.
- A higher first threshold: a young collection every ``threshold`` allocations instead of 700, so
  the older generations, and the full walks, come that much less often. Reference cycles still get
  collected; they just live a little longer (at most ``threshold`` allocations' worth).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("switchboard")


def tune(threshold: int) -> None:
    """Freeze start-up objects; young collections every ``threshold`` allocations (0: CPython's)."""
    gc.freeze()
    if threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)
    log.debug("gc: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())
