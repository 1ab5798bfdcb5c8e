"""Burst benchmark: many batches landing together vs the same images as one batch.

    python benchmarks/bench_burst.py [--batches 50] [--images-per-batch 20] [--workdir DIR]

Both cases run side by side in one invocation, each in a fresh process of its own (so that peak RSS is
its own) on a fresh home, through `tick(..., automation=False)`: what `yolo-assets tick --no-automation`
and, run by run, the daemon do. Prints the wall time of each, their ratio (target <= 1.5), the number
of `processed_images` versions each made (target <= 3 for the burst) and peak RSS.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resources.settings import DeploymentSettings  # noqa: E402
from yolo_assets.assets.keys import PROCESSED_IMAGES  # noqa: E402
from yolo_assets.assets.materializations import data_version_of  # noqa: E402
from yolo_assets.core.home import dagster_home, ensure_home, landing_dir  # noqa: E402
from yolo_assets.data.synth import write_batch  # noqa: E402
from yolo_assets.definitions import build_definitions  # noqa: E402
from yolo_assets.ops.runs import tick  # noqa: E402


def write_sources(root: Path, batches: int, images_per_batch: int) -> None:
    """`root/burst/batch_NNN` (the burst) and `root/single/batch_all` (the same files in one batch)."""
    single = root / "single" / "batch_all"
    for index in range(batches):
        batch = write_batch(root / "burst" / f"batch_{index:03d}", images_per_batch, seed=100 + index)
        for path in sorted(p for p in batch.rglob("*") if p.is_file()):
            relative = path.relative_to(batch)
            if relative.parts[0] in ("images", "labels"):
                target = single / relative.parent / f"b{index:03d}_{relative.name}"
            else:
                target = single / relative  # data.yaml, _SUCCESS: the same in every batch
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def run_case(workdir: Path, case: str) -> dict[str, float]:
    """In this process: a warm-up ingest in a throwaway home, then the case on a fresh home."""
    for name, source_root in ((f"warm-up-{case}", None), (case, workdir / "sources" / case)):
        home = ensure_home(workdir / f"home-{name}")
        if source_root is None:
            write_batch(landing_dir(home) / "batch_warm_up", 30, seed=3)
        else:
            for batch in sorted(source_root.iterdir()):
                shutil.copytree(batch, landing_dir(home) / batch.name)
        defs = build_definitions(home, DeploymentSettings.from_environment())
        instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
        started = time.perf_counter()
        outcomes = tick(defs, instance, home, automation=False)
        seconds = time.perf_counter() - started
        assert outcomes and all(o.success for o in outcomes), [o.failure for o in outcomes if not o.success]
    records = instance.fetch_materializations(PROCESSED_IMAGES, limit=10_000).records
    versions = {data_version_of(r.asset_materialization) for r in records}
    return {
        "seconds": seconds,
        "runs": len(outcomes),
        "dataset_versions": len(versions),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(workdir: Path, case: str) -> dict[str, float]:
    """`run_case` in a fresh interpreter: its own imports, its own peak RSS."""
    output = subprocess.run(
        [sys.executable, __file__, "--workdir", str(workdir), "--case", case],
        check=True, stdout=subprocess.PIPE, text=True,  # stderr (Dagster logs, errors) passes through
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--images-per-batch", type=int, default=20)
    parser.add_argument("--workdir", help="keep the homes here (default: a temp dir, removed)")
    parser.add_argument("--case", choices=["burst", "single"], help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="yolo-burst-"))
    if args.case:
        print(json.dumps(run_case(workdir, args.case)))
        return
    try:
        write_sources(workdir / "sources", args.batches, args.images_per_batch)
        images = args.batches * args.images_per_batch
        single = measure(workdir, "single")
        burst = measure(workdir, "burst")
        print(f"{images} images: one batch {single['seconds']:.1f}s ({single['runs']} runs, {single['dataset_versions']} dataset version, "
              f"peak RSS {single['peak_rss_mib']:.0f} MiB)")
        print(f"{args.batches} x {args.images_per_batch} burst: {burst['seconds']:.1f}s ({burst['runs']} runs, "
              f"{burst['dataset_versions']} dataset versions, peak RSS {burst['peak_rss_mib']:.0f} MiB)")
        print(f"time ratio burst / one batch = {burst['seconds'] / single['seconds']:.2f} (target <= 1.5); "
              f"dataset versions {burst['dataset_versions']} (target <= 3)")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
