"""Load on the production path (S3, PostgreSQL) under the real daemon: a burst of batches (8; BURST_BATCHES=100
for the full burst) uploaded at once, with
`yolo-assets tick` started beside the daemon. Every batch gets exactly one partition and one ingest run,
the burst becomes at most a few dataset versions (not 100), and each dataset version is trained at most
once."""

import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import dagster as dg
import pytest
from helpers import REPO, TINY_TRAINING_ENV, ProductionHome, production_home, running_daemon

from yolo_assets.assets.materializations import data_version_of, metadata_value
from yolo_assets.data.synth import write_batch
from yolo_assets.ops.runs import live_daemon_heartbeat_age
from yolo_assets.ops.services import Postgres, SeaweedFS

pytestmark = pytest.mark.slow

# 8 batches, as many as the uploader's threads, show every behaviour of a burst (one run per batch, a few
# dataset versions, one training each) in a twelfth of the ingest runs 100 take (~15 min here; each run is
# a process of its own under the daemon, ~5 s of CPU with its PostgreSQL connections); BURST_BATCHES=100
# runs the full burst.
BATCHES = int(os.environ.get("BURST_BATCHES", "8"))
IMAGES_PER_BATCH = 2
# A bound on settling, not a speed target: ~9 s of ingest run per batch on a quiet 2-core machine, twice
# that when another job shares the cores (each ingest run also has its fresh_batch_evaluation step).
DEADLINE_S = 300 + 18 * BATCHES
IN_PROGRESS = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}
# Automation launches runs without run config: deployment defaults keep the retraining tiny.


def materializations(home: ProductionHome, asset: str) -> list[dg.AssetMaterialization]:
    records = home.instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    return [r.asset_materialization for r in records if r.asset_materialization]


def settled(home: ProductionHome) -> bool:
    """Every batch ingested, the dataset holds them all, and the model trained on that dataset is registered."""
    if any(run.status in IN_PROGRESS for run in home.instance.get_runs()):
        return False
    datasets = materializations(home, "processed_images")
    if not datasets or len(metadata_value(datasets[0], "input_batches", {})) < BATCHES:
        return False
    registered = materializations(home, "registered_model")
    return bool(registered) and metadata_value(registered[0], "dataset_version") == data_version_of(datasets[0])


def tick_beside_the_daemon(home: ProductionHome, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("yolo-assets")), "--home", str(home.path), "tick", "--no-automation"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )


def test_a_burst_of_uploads_under_the_daemon_and_a_tick_gives_one_run_per_batch_and_one_dataset(
    seaweedfs: SeaweedFS, postgres: Postgres, tmp_path: Path
) -> None:
    with production_home(tmp_path / "home", seaweedfs, postgres, **TINY_TRAINING_ENV) as home:
        sources = [write_batch(tmp_path / "upload" / f"line_{i:03d}", IMAGES_PER_BATCH, seed=1000 + i) for i in range(BATCHES)]
        zone = home.resource("landing_zone")
        daemon_log = tmp_path / "daemon.log"
        with (
            open(daemon_log, "wb") as daemon_out, open(tmp_path / "tick-1.log", "wb") as tick_1,
            open(tmp_path / "tick-2.log", "wb") as tick_2, running_daemon(dict(os.environ), daemon_out) as daemon,
        ):
            ticks = []
            with ThreadPoolExecutor(8) as uploads:
                landed = list(uploads.map(lambda source: zone.upload_batch(source, source.name), sources))
                # A tick while the daemon starts (it may run batches in process until the daemon's heartbeat appears) ...
                ticks.append(tick_beside_the_daemon(home, tick_1))
            assert landed == [IMAGES_PER_BATCH * 2 + 1] * BATCHES  # images, labels and data.yaml; the marker last
            started = time.monotonic()
            while live_daemon_heartbeat_age(home.instance) is None and time.monotonic() - started < 120:
                time.sleep(1)
            # ... and one once it runs (it must start nothing).
            ticks.append(tick_beside_the_daemon(home, tick_2))
            while time.monotonic() - started < DEADLINE_S and daemon.poll() is None and not settled(home):
                time.sleep(5)
            for tick in ticks:
                tick.wait(120)
        tick_output = [(tmp_path / f"tick-{i}.log").read_text() for i in (1, 2)]
        assert settled(home), f"not settled within {DEADLINE_S}s; ticks: {tick_output}; daemon log tail:\n{daemon_log.read_text()[-4000:]}"

        names = sorted(source.name for source in sources)
        assert sorted(home.instance.get_dynamic_partitions("batches")) == names
        runs = home.instance.get_runs()
        ingest_runs = [run for run in runs if run.tags.get("dagster/sensor_name") == "labeled_data_sensor"]
        per_batch = Counter(run.tags.get("dagster/partition") for run in ingest_runs)
        assert sorted(per_batch) == names and set(per_batch.values()) == {1}, per_batch.most_common(3)  # one run each, 0 duplicates
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in ingest_runs)
        assert len({run.tags["dagster/run_key"] for run in ingest_runs}) == BATCHES
        assert "dagster-daemon is running" in tick_output[1]  # the second tick left everything to the daemon

        # The burst makes a few dataset versions at most (the daemon builds once nothing is being ingested).
        datasets = materializations(home, "processed_images")
        assert len({data_version_of(m) for m in datasets}) <= 3, len(datasets)
        assert metadata_value(datasets[0], "num_images") == BATCHES * IMAGES_PER_BATCH
        # At most one training per dataset version.
        trained_on = Counter(metadata_value(m, "dataset_version") for m in materializations(home, "trained_weights"))
        assert trained_on and set(trained_on.values()) == {1}, trained_on
        print(f"{len(ingest_runs)} ingest runs, {len(datasets)} dataset versions, {sum(trained_on.values())} trainings; "
              f"tick 1: {tick_output[0].strip().splitlines()[-1:]}, tick 2: {tick_output[1].strip()}")
