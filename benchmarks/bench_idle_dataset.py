"""Idle `dataset_sensor` evaluations on an instance of many batches, with and without its cursor.

    python benchmarks/bench_idle_dataset.py [--batches 1000,10000] [--evaluations 5]

An idle tick evaluates both sensors; with thousands of batches `dataset_sensor` is the costly one, since
deciding whether the dataset is up to date reads every batch's latest materialisation. The cursor keeps a
fingerprint built from storage ids alone and skips that comparison while nothing moved. Both ways are
measured side by side on the same instance: the evaluation without a cursor (what every evaluation cost
before the fingerprint, and what the first one costs now) and the evaluations that follow with it.

The batches are recorded as runless `labeled_batch` materialisations carrying the metadata the asset
writes (`batch_metadata` of a 20-image manifest with 3 quarantined items), so 10,000 batches take about
a minute and a half to set up instead of hours of ingest runs; the dataset is one `processed_images`
materialisation whose `input_batches` name them all.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resources.settings import DeploymentSettings
from sensors.dataset import dataset_sensor
from yolo_assets.assets.ingest import BATCH_PARTITIONS, LabeledBatchConfig, batch_metadata
from yolo_assets.assets.keys import CODE_VERSIONS, LABELED_BATCH, PROCESSED_IMAGES
from yolo_assets.core.home import dagster_home, ensure_home
from yolo_assets.data.batch_manifest import BatchItem, BatchManifest
from yolo_assets.data.quarantine import QuarantineReason, quarantine_entry
from yolo_assets.definitions import build_definitions

CLASSES = ["scratch", "spot", "crack"]


def batch_manifest(index: int) -> BatchManifest:
    items: list[BatchItem] = [
        {"source": f"images/{i}.jpg", "label_source": f"labels/{i}.txt", "image_sha": f"{index:032x}{i:032x}", "label_sha": None,
         "width": 64, "height": 64, "split_hint": None, "boxes": [[CLASSES[(index + i) % 3], 0.5, 0.5, 0.2, 0.2]] if i % 5 else []}
        for i in range(20)
    ]
    quarantine = [quarantine_entry(f"images/q{i}.jpg", f"labels/q{i}.txt", QuarantineReason.COORDS_OUT_OF_RANGE, "y=1.6") for i in range(3)]
    return {"format": "yolo", "classes": CLASSES, "items": items, "quarantine": quarantine, "notes": {"coords_clipped": 1}}


def populate(instance: dg.DagsterInstance, batches: int) -> None:
    names = [f"batch_{index:05d}" for index in range(batches)]
    instance.add_dynamic_partitions(BATCH_PARTITIONS, names)
    config = LabeledBatchConfig()
    for index, name in enumerate(names):
        metadata = {**batch_metadata(batch_manifest(index), config), "content_hash": f"{index:064x}",
                    "class_registry_passed": True, "new_classes": dg.MetadataValue.json([])}
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=LABELED_BATCH, partition=name, metadata=metadata,
            tags={"dagster/data_version": f"{index:064x}", "dagster/code_version": CODE_VERSIONS[LABELED_BATCH]},
        ))
    inputs = {name: f"{index:064x}" for index, name in enumerate(names)}
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=PROCESSED_IMAGES, metadata={"input_batches": dg.MetadataValue.json(inputs), "retractions_version": ""},
        tags={"dagster/data_version": "bench", "dagster/code_version": CODE_VERSIONS[PROCESSED_IMAGES]},
    ))


def evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> tuple[float, Any]:
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources, cursor=cursor) as context:
        started = time.perf_counter()
        data = dataset_sensor.evaluate_tick(context)
        return time.perf_counter() - started, data


def measure(workdir: Path, batches: int, evaluations: int) -> None:
    home = ensure_home(workdir / f"home-{batches}")
    defs = build_definitions(home, DeploymentSettings.from_environment())
    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    started = time.perf_counter()
    populate(instance, batches)
    setup_s = time.perf_counter() - started
    evaluate(defs, instance, None)  # warm-up: imports, first queries
    without, with_cursor = [], []
    for _ in range(evaluations):  # alternated, so both see the same machine
        seconds, first = evaluate(defs, instance, None)
        assert not first.run_requests and first.cursor, first
        without.append(seconds)
        seconds, data = evaluate(defs, instance, first.cursor)
        assert not data.run_requests and "nothing moved" in (data.skip_message or ""), data.skip_message
        with_cursor.append(seconds)
    slow, fast = statistics.median(without), statistics.median(with_cursor)
    print(f"{batches} batches (set up in {setup_s:.0f}s): idle dataset_sensor without cursor {slow * 1000:.0f} ms, "
          f"with cursor {fast * 1000:.1f} ms (medians of {evaluations}): ratio {fast / slow:.3f}")
    instance.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1000,10000", help="comma-separated instance sizes")
    parser.add_argument("--evaluations", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="yolo-bench-idle-"))
    try:
        for batches in (int(value) for value in args.batches.split(",")):
            measure(workdir, batches, args.evaluations)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
