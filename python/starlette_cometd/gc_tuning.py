"""The garbage collector's settings for a process that serves CometD.

Nearly everything such a server frees goes at once by reference counting; the cyclic
collector finds almost nothing (on the benchmark machine, a few objects a collection). Yet with
Python's defaults it runs after every 700 new objects, and every so often walks every object
alive: the modules, the application and each session's. Under load on the Redis engine those
full walks stopped the event loop for about 26 ms, more than once a second, which shows in the
latency of every message delivered meanwhile.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("starlette_cometd")

# The youngest generation is collected after this many new objects (Python's default: 700);
# the older generations keep Python's ratios to it.
YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Takes what is alive now (modules, the application) out of the collector's walks, and
    collects young objects 70 times less often. Call it once the application is built, in a
    process that only serves it: the CLI does so in every worker."""
    gc.collect()  # so that no garbage of the start-up is kept for good
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.debug(
        "garbage collector: %d objects set aside, young generation collected every %d",
        gc.get_freeze_count(),
        YOUNG_THRESHOLD,
    )
