"""Per-epoch checkpoints on S3: the same training on the local store and on the S3 store (SeaweedFS on
127.0.0.1, directly and behind a proxy adding a round trip of `--delay-ms` and holding uploads to
`--upload-mb-s`), with the checkpoint uploaded in the background (today's code) and synchronously after
each epoch (the code before, patched in for comparison), side by side in one run. Target: S3 within
1.05x of local.

    .venv/bin/python benchmarks/bench_checkpoints.py [--epochs 8] [--images 48] [--imgsz 128] [--delay-ms 20] [--upload-mb-s 20]
"""

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg
from bench_s3 import KEY, SECRET, land, open_home, s3_settings
from latency_proxy import LatencyProxy

from yolo_assets.data.synth import write_batch
from yolo_assets.detector.lifecycle import TrainingCheckpoint
from yolo_assets.ops.runs import execute, tick
from yolo_assets.ops.services import SeaweedFS


@contextmanager
def synchronous_checkpoints() -> Iterator[None]:
    """The code before: each epoch's checkpoint uploaded before the next epoch starts."""
    background = TrainingCheckpoint.weights_saved
    TrainingCheckpoint.weights_saved = lambda self, _: self._upload_latest()  # type: ignore[method-assign]
    try:
        yield
    finally:
        TrainingCheckpoint.weights_saved = background  # type: ignore[method-assign]


def train(home: Path, settings: dict[str, str], batch: Path, config: dict[str, Any], synchronous: bool) -> float:
    """Ingest and build (not timed), then one training; its train_seconds (the ultralytics loop and
    the checkpoints, without set-up)."""
    defs, instance = open_home(home, settings)
    land(defs, batch, batch.name)  # into the home's landing zone: its folder, or the S3 prefix
    ingested = tick(defs, instance, home, automation=False)
    assert ingested and all(outcome.success for outcome in ingested)
    with synchronous_checkpoints() if synchronous else nullcontext():
        outcome = execute(defs, instance, [dg.AssetKey("trained_weights")], run_config={"ops": {"trained_weights": {"config": config}}})
    assert outcome.success, outcome.failure
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_weights"))
    assert event is not None and event.asset_materialization is not None
    return float(event.asset_materialization.metadata["train_seconds"].value)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--upload-mb-s", type=float, default=20.0, help="upload bandwidth behind the proxy")
    args = parser.parse_args()
    os.environ.setdefault("YOLO_ASSETS_FIRST_MODEL_MIN_MAP50", "0")
    config = {"epochs": args.epochs, "imgsz": args.imgsz, "batch": 8, "workers": 0, "warm_start": False}
    scratch = Path(tempfile.mkdtemp(prefix="bench-checkpoints-"))
    batch = write_batch(scratch / "upload" / "line_a", args.images, seed=7)
    server = SeaweedFS(scratch / "seaweedfs", KEY, SECRET).start()
    results: dict[str, float] = {}
    try:
        with LatencyProxy(server.ports["s3"], delay_s=args.delay_ms / 1000, upload_bytes_per_s=args.upload_mb_s * 1e6) as proxy:
            variants = [("local", None, False), ("s3", server.endpoint_url, False), ("s3, synchronous uploads", server.endpoint_url, True),
                        (f"s3 +{args.delay_ms:.0f} ms, {args.upload_mb_s:.0f} MB/s", proxy.url, False),
                        (f"s3 +{args.delay_ms:.0f} ms, {args.upload_mb_s:.0f} MB/s, synchronous uploads", proxy.url, True)]
            for index, (name, endpoint, synchronous) in enumerate(variants):
                settings = {"YOLO_ASSETS_STORAGE": "local"}
                if endpoint:
                    bucket = f"bench-ckpt-{index}"
                    server.create_bucket(bucket)
                    settings = {**s3_settings(server, bucket), "YOLO_ASSETS_S3_ENDPOINT_URL": endpoint}
                results[name] = train(scratch / f"home-{index}", settings, batch, config, synchronous)
                print(f"{name:55s} train {results[name]:6.1f} s  ({results[name] / results['local']:.3f}x local)", flush=True)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
