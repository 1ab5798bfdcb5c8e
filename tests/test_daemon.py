"""The real Dagster daemon: a batch lands, the daemon's sensors ingest it and automation retrains,
evaluates and registers a model, with no CLI involved."""

import time
from pathlib import Path

import dagster as dg
import pytest
from helpers import TINY_TRAINING_ENV, Home, running_daemon, subprocess_env

from yolo_assets.assets.materializations import data_version_of

DEADLINE_S = 420


@pytest.mark.slow
def test_daemon_ingests_a_landed_batch_and_registers_a_model(tmp_path: Path) -> None:
    home = Home.create(tmp_path / "home")
    env = subprocess_env(
        home.path,
        # Automation launches runs without run config: deployment defaults keep this one tiny.
        **TINY_TRAINING_ENV,
        YOLO_ASSETS_FIRST_MODEL_MIN_MAP50="0",
    )
    home.land("batch_daemon", 24, seed=4)
    client = home.resource("mlflow").client()
    versions = []
    with open(tmp_path / "daemon.log", "wb") as log, running_daemon(env, log) as daemon:
        started = time.monotonic()
        while time.monotonic() - started < DEADLINE_S and daemon.poll() is None:
            time.sleep(5)
            try:
                versions = client.search_model_versions("name='yolo-defect-detector'")
            except Exception:  # the registry tables appear with the first registration
                versions = []
            if versions and "promotion_gate" in versions[0].tags:
                break
        # The version is tagged inside the run that registers it: that run ends a moment later.
        training_run_id = versions[0].tags.get("training_dagster_run_id") if versions else None
        while training_run_id and time.monotonic() - started < DEADLINE_S and daemon.poll() is None:
            run = home.instance.get_run_by_id(training_run_id)
            if run is None or run.is_finished:
                break
            time.sleep(1)
    daemon_log = (tmp_path / "daemon.log").read_text()[-4000:]
    assert versions, f"no model version registered within {DEADLINE_S}s; daemon log tail:\n{daemon_log}"
    tags = versions[0].tags
    assert tags["batch_names"] == "batch_daemon"
    runs = home.instance.get_runs()
    sensors = {run.tags.get("dagster/sensor_name") for run in runs}
    assert "labeled_data_sensor" in sensors
    assert any(run.tags.get("dagster/from_automation_condition") or run.tags.get("dagster/sensor_name") == "model_automation_sensor" for run in runs)
    # The version names the run that trained it: a successful run that made exactly these weights.
    training = home.instance.get_run_by_id(tags["training_dagster_run_id"])
    assert training is not None and training.status == dg.DagsterRunStatus.SUCCESS
    trained = home.instance.get_latest_materialization_event(dg.AssetKey("trained_weights"))
    assert trained is not None and trained.run_id == training.run_id
    assert trained.asset_materialization is not None and data_version_of(trained.asset_materialization) == tags["weights_version"]
    home.close()
