"""Run a picklable function over many argument tuples on all cores."""

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
# Below this many items a pool costs more to start than it saves.
MIN_ITEMS_FOR_POOL = 24


def resolve_workers(workers: int) -> int:
    """0 means one worker per core."""
    return workers if workers > 0 else (os.cpu_count() or 1)


def parallel_starmap(fn: Callable[..., T], args: Sequence[tuple[Any, ...]], workers: int = 0) -> list[T]:
    """`fn(*a)` for each `a`, in order.

    Forked workers: a spawned one would re-import the parent's main module (the Dagster CLI in a run
    worker), costing seconds per pool. The functions run here (PIL, hashlib, file writes) take no
    lock a parent thread could hold. The pool is closed and joined, never terminated: terminate()
    signals the workers, which inherited Dagster's signal handlers.
    """
    workers = resolve_workers(workers)
    if workers <= 1 or len(args) < MIN_ITEMS_FOR_POOL:
        return [fn(*a) for a in args]
    chunksize = max(1, len(args) // (workers * 8))
    pool = multiprocessing.get_context("fork").Pool(min(workers, len(args)))
    try:
        results = pool.starmap(fn, args, chunksize=chunksize)
    except BaseException:
        pool.terminate()
        raise
    pool.close()
    pool.join()
    return results
