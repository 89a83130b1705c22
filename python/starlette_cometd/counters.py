"""The core's counters beyond ``stats()``, as flat integer fields: how a cluster's node reports
them to the others (beside its ``stats()``, see cluster/node.py) and what the metrics read
(metrics.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._core import Engine

# Unsuccessful replies by kind (``e:402:session_unknown``), and the histograms' buckets
# (``h:batches:0`` ... and ``h:batches:sum_us``).
ERRORS = "e:"
DURATIONS = "h:"


def flat_counters(engine: Engine) -> dict[str, int]:
    """The core's unsuccessful replies by kind and its histograms, as flat counters."""
    flat = {ERRORS + kind: count for kind, count in engine.error_counts().items()}
    for name, _, counts, total in engine.durations():
        flat.update({f"{DURATIONS}{name}:{i}": count for i, count in enumerate(counts)})
        flat[f"{DURATIONS}{name}:sum_us"] = round(total * 1e6)
    return flat
