"""Run a picklable function over many argument tuples on all cores."""

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# Below this many items a pool costs more to start than it saves.
MIN_ITEMS_FOR_POOL = 24


# cgroup v2's CPU quota: "max 100000" (no limit) or "<quota> <period>" (a container's CPU limit).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its affinity mask, capped by the container's CPU limit.

    `os.cpu_count()` reports the node's cores; a Kubernetes pod limited to 4 CPUs on a 64-core node
    that starts 64 workers is throttled, not faster.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, cpus)
    if quota != "max" and int(period) > 0:
        cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(1, cpus)


def resolve_workers(workers: int) -> int:
    """0 means one worker per usable CPU."""
    return workers if workers > 0 else usable_cpus()


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
