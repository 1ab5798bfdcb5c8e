"""A fresh pod: one dataset version fetched from S3 into an empty cache, the way a training or
evaluation step pod starts on Kubernetes (`local_dataset`), against `s5cmd` (the fastest S3 client we
know) copying the same objects (the artifact's files and the packs of image/label pairs) and, since a
training reads files, copying the same image and label files stored one object each; directly (SeaweedFS
on 127.0.0.1) and behind a proxy adding `--delay-ms` to every request, side by side in one run. Issue 20,
goal 3: our throughput at least 0.8x s5cmd's in both.

    .venv/bin/python benchmarks/bench_fresh_pod.py [--images 10000] [--delay-ms 20] [--s5cmd-workers 256]

The dataset is built once (synthetic batch, ingest and build on the S3 store, not timed). Each fetch
starts from an empty folder; throughput is the bytes fetched over the wall time.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_s3 import KEY, SECRET, land, open_home, s3_settings, s5cmd_copy
from dagster_aws.s3 import S3Resource
from latency_proxy import LatencyProxy

from resources.artifact_store import asset_folder
from resources.s3_artifact_store import COMPLETE, PACKS, S3ArtifactStore
from yolo_assets.assets.dataset import local_dataset
from yolo_assets.assets.keys import PROCESSED_IMAGES
from yolo_assets.assets.materializations import data_version_of
from yolo_assets.core.s3 import S3Prefix, parallel, request_counts
from yolo_assets.core.s3_packs import pack_keys
from yolo_assets.data.dataset_files import DATASET_ITEMS
from yolo_assets.data.synth import write_batch
from yolo_assets.ops.runs import tick
from yolo_assets.ops.services import SeaweedFS

BUCKET = "bench-fresh-pod"
PREFIX = "store"


def build_dataset(server: SeaweedFS, scratch: Path, images: int) -> str:
    """Ingest and build `images` synthetic images on the S3 store; the dataset version."""
    server.create_bucket(BUCKET)
    home = scratch / "home"
    defs, instance = open_home(home, s3_settings(server, BUCKET))
    land(defs, write_batch(scratch / "source", images, seed=21), "line_a")
    outcomes = tick(defs, instance, home, automation=False)
    assert outcomes and all(outcome.success for outcome in outcomes), outcomes
    event = instance.get_latest_materialization_event(PROCESSED_IMAGES)
    assert event is not None
    version = data_version_of(event.asset_materialization)
    assert version is not None
    instance.dispose()
    return version


def dataset_keys(server: SeaweedFS, version: str) -> list[str]:
    """Every object a fresh pod needs for `version`: the artifact's files and the packs (with their
    indexes) of the image/label pairs (the store holds this one dataset, so all of them)."""
    client = server.client()
    artifact = f"{PREFIX}/{asset_folder(PROCESSED_IMAGES)}/{version}"
    names = json.loads(client.get_object(Bucket=BUCKET, Key=f"{artifact}/{COMPLETE}")["Body"].read())["files"]
    packs = f"{PREFIX}/{PACKS}/{DATASET_ITEMS}"
    pairs = [f"{packs}/{key}" for key in pack_keys(S3Prefix(client, BUCKET, packs))]
    return [f"{artifact}/{COMPLETE}", *(f"{artifact}/{name}" for name in names), *pairs]


def loose_copy(server: SeaweedFS, scratch: Path) -> list[str]:
    """The dataset's image and label files as one object each under `loose/` (untimed): what s5cmd
    copies when a fresh pod needs the files themselves, as training does."""
    items = scratch / "home" / "cache" / "store" / "_objects" / DATASET_ITEMS
    files = sorted(path.relative_to(items).as_posix() for path in items.rglob("*") if path.is_file())
    client = server.client()
    parallel(lambda name: client.upload_file(str(items / name), BUCKET, f"loose/{name}"), files)
    return [f"loose/{name}" for name in files]


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def ours(endpoint: str, version: str, cache: Path) -> tuple[float, int, int]:
    store = S3ArtifactStore(
        s3=S3Resource(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET),
        bucket=BUCKET, prefix=PREFIX, cache_dir=str(cache),
    )
    before, started = request_counts(), time.perf_counter()
    data_yaml = local_dataset(store, version)
    seconds = time.perf_counter() - started
    assert data_yaml.is_file()
    return seconds, folder_bytes(cache), sum((request_counts() - before).values())


def s5cmd(endpoint: str, keys: list[str], target: Path, workers: int) -> tuple[float, int]:
    return s5cmd_copy(endpoint, BUCKET, keys, target, workers), folder_bytes(target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--s5cmd-workers", type=int, default=256, help="s5cmd's own default")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    scratch = Path(tempfile.mkdtemp(prefix="bench-fresh-pod-"))
    server = SeaweedFS(scratch / "seaweedfs", KEY, SECRET).start()
    try:
        started = time.perf_counter()
        version = build_dataset(server, scratch, args.images)
        keys = dataset_keys(server, version)
        loose = loose_copy(server, scratch)
        print(f"cpus: {os.cpu_count()}; dataset {version[:12]} of {args.images} images: {len(keys)} objects, "
              f"{len(loose)} image and label files (built in {time.perf_counter() - started:.0f}s, not timed)")
        with LatencyProxy(server.ports["s3"], delay_s=args.delay_ms / 1000) as proxy:
            for label, endpoint in (("direct", server.endpoint_url), (f"+{args.delay_ms:.0f} ms", proxy.url)):
                slug = label.replace(" ", "").replace("+", "delay")
                ours_s, ours_bytes, ours_requests = ours(endpoint, version, scratch / f"ours-{slug}")
                s5_s, s5_bytes = s5cmd(endpoint, keys, scratch / f"s5cmd-{slug}", args.s5cmd_workers)
                files_s, files_bytes = s5cmd(endpoint, loose, scratch / f"s5cmd-files-{slug}", args.s5cmd_workers)
                ours_rate = ours_bytes / ours_s
                print(f"{label:>8}: local_dataset {ours_s:6.2f}s {ours_rate / 1e6:7.1f} MB/s {ours_requests} requests | "
                      f"s5cmd, the same objects (packs) {s5_s:6.2f}s {s5_bytes / s5_s / 1e6:7.1f} MB/s: ratio {ours_rate / (s5_bytes / s5_s):.2f} | "
                      f"s5cmd, the same files one object each {files_s:6.2f}s {files_bytes / files_s / 1e6:7.1f} MB/s: "
                      f"ratio {ours_rate / (files_bytes / files_s):.2f} (target >= 0.8)")
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
