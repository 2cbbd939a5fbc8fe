"""Garbage-collector settings for a long-running service, applied once it has started."""

from __future__ import annotations

import gc

#: Allocations between young-generation collections (CPython's default is 700). A worker or
#: gateway allocates a few dozen objects per task or request; at the default a collection runs
#: every few dozen tasks, and the full collections that follow walk the whole heap (the app,
#: pydantic's schemas): a large share of a worker's CPU on a fast drain (gc.callbacks shows it).
#: The young generation's garbage stays a few MB at most.
YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Collect what start-up left, then move every surviving object (modules, the app, schemas)
    out of the collector's sight (gc.freeze): they live as long as the process, and full
    collections no longer walk them. Reference counting still frees everything as usual."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
