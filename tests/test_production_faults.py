"""Faults of the production servers and the daemon (S3, PostgreSQL, a missing marker, the daemon killed),
each on servers of its own so they can be killed: nothing is lost, and what failed says why. The model
path's faults (the MLflow server down, a training killed) are in test_model_path_faults.py."""

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from helpers import ProductionHome, production_home, running_daemon, s3_client, upload_batch
from sentinels import SENTINEL_S3_KEY, SENTINEL_S3_SECRET

from yolo_assets.ops.services import Postgres, SeaweedFS

pytestmark = pytest.mark.slow


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path / "seaweedfs", SENTINEL_S3_KEY, SENTINEL_S3_SECRET).start()
    try:
        yield server
    finally:
        server.stop()


def incomplete_artifacts(home: ProductionHome) -> list[str]:
    """Artifact folders in the store without their completion object."""
    client = s3_client(home)
    keys = [e["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=home.bucket, Prefix="store/")
            for e in page.get("Contents", [])]
    folders = {"/".join(key.split("/")[:3]) for key in keys if not key.split("/")[1].startswith("_") and "/_cache_keys/" not in key}
    return sorted(folder for folder in folders if f"{folder}/_COMPLETE.json" not in keys)


def test_an_upload_without_its_marker_is_never_ingested(own_s3: SeaweedFS, postgres: Postgres, tmp_path: Path) -> None:
    with production_home(tmp_path / "home", own_s3, postgres) as home:
        upload_batch(home, "line_a", 4, seed=21, marker=False)
        assert home.tick() == []
        assert home.instance.get_dynamic_partitions("batches") == []
        s3_client(home).put_object(Bucket=home.bucket, Key="landing/line_a/_SUCCESS", Body=b"")
        batch_run, dataset_run = home.tick()
        assert batch_run.success and dataset_run.success and home.metadata("labeled_batch", "line_a")["num_images"] == 4


def test_the_s3_server_killed_mid_ingest_comes_back_and_the_step_retries(own_s3: SeaweedFS, postgres: Postgres, tmp_path: Path) -> None:
    with production_home(tmp_path / "home", own_s3, postgres) as home:
        upload_batch(home, "line_a", 12, seed=22)
        home.instance.add_dynamic_partitions("batches", ["line_a"])
        own_s3.stop()  # SIGKILL: the server dies while the ingest starts
        restart = threading.Timer(1.0, own_s3.start)  # back ~12 s later (SeaweedFS reloads its data)
        restart.start()
        outcome = home.materialize(["labeled_batch", "processed_images"], partition="line_a")
        restart.join()
        assert outcome.success, outcome.failure
        retries = home.instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert retries, "the outage should have outlasted boto3's own retries"
        assert home.metadata("processed_images")["num_images"] == 12
        assert incomplete_artifacts(home) == []


def run_statuses(home: ProductionHome) -> dict[str, dg.DagsterRunStatus]:
    return {run.run_id: run.status for run in home.instance.get_runs()}


def test_the_daemon_killed_while_it_launches_a_run_leaves_no_run_starting_for_ever(own_s3: SeaweedFS, postgres: Postgres, tmp_path: Path) -> None:
    """A lost daemon host (its process group SIGKILLed: daemon, code server, the run worker being
    started) leaves the run STARTING with no process behind it. Run monitoring fails it after its start
    timeout, and the retry sensor ingests the batch again (found by the chaos soak under load)."""
    with production_home(tmp_path / "home", own_s3, postgres, YOLO_ASSETS_RETRY_FIRST_DELAY_S="0") as home:
        config_file = home.path / "dagster" / "dagster.yaml"
        config = yaml.safe_load(config_file.read_text())
        assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["max_resume_run_attempts"] == 0
        config["run_monitoring"].update(start_timeout_seconds=20, poll_interval_seconds=5)  # minutes in deploy/dagster.yaml
        config_file.write_text(yaml.safe_dump(config))
        upload_batch(home, "line_a", 4, seed=27)
        with open(tmp_path / "daemon-1.log", "wb") as log, running_daemon(dict(os.environ), log) as daemon:
            deadline = time.monotonic() + 180
            while not (starting := [r for r, s in run_statuses(home).items() if s == dg.DagsterRunStatus.STARTING]):
                assert time.monotonic() < deadline and daemon.poll() is None, (tmp_path / "daemon-1.log").read_text()[-3000:]
                time.sleep(0.05)
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        [lost] = starting
        time.sleep(5)
        assert run_statuses(home)[lost] == dg.DagsterRunStatus.STARTING  # its worker died with the group
        with open(tmp_path / "daemon-2.log", "wb") as log, running_daemon(dict(os.environ), log):
            deadline = time.monotonic() + 240
            while not [run for run in home.instance.get_runs(dg.RunsFilter(tags={"yolo_assets/retry_of": lost})) if run.is_finished]:
                assert time.monotonic() < deadline, (tmp_path / "daemon-2.log").read_text()[-3000:]
                time.sleep(2)
        assert home.metadata("labeled_batch", "line_a")["num_images"] == 4
        failed = home.instance.get_run_record_by_id(lost)
        assert failed is not None and failed.dagster_run.status == dg.DagsterRunStatus.FAILURE
        [failure] = home.instance.all_logs(lost, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "longer than 20 seconds to start" in failure.message
        [retry] = home.instance.get_runs(dg.RunsFilter(tags={"yolo_assets/retry_of": lost}))
        assert retry.tags["dagster/partition"] == "line_a" and retry.status == dg.DagsterRunStatus.SUCCESS


def test_postgres_restarted_between_ticks(own_s3: SeaweedFS, tmp_path: Path) -> None:
    root = Path(f"/tmp/yolo-assets-test-pg-{uuid.uuid4().hex[:8]}")
    server = Postgres(root, "sentinel-restart-pg", durable=False).start()
    try:
        with production_home(tmp_path / "home", own_s3, server) as home:
            upload_batch(home, "line_a", 4, seed=23)
            assert [o.success for o in home.tick()] == [True, True]
            server.stop()
            server.start()  # same port, same data
            upload_batch(home, "line_b", 4, seed=24)
            batch_run, dataset_run = home.tick()
            assert batch_run.success and dataset_run.success and home.metadata("processed_images")["num_images"] == 8
            assert len(home.instance.get_runs()) == 4
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
