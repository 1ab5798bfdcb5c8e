"""The real Dagster daemon: a batch lands, the daemon's sensors ingest it and automation retrains,
evaluates and registers a model, with no CLI involved."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from yolo_assets.definitions import build_definitions
from yolo_assets.home import dagster_home, ensure_home, landing_dir
from yolo_assets.synth import write_batch

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 420


@pytest.mark.slow
def test_daemon_ingests_a_landed_batch_and_registers_a_model(tmp_path: Path) -> None:
    home = ensure_home(tmp_path / "home")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "YOLO_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home(home)),
        # Automation launches runs without run config: deployment defaults keep this one tiny.
        "YOLO_ASSETS_TRAIN_EPOCHS": "1",
        "YOLO_ASSETS_TRAIN_IMGSZ": "64",
        "YOLO_ASSETS_TRAIN_WORKERS": "0",
        "YOLO_ASSETS_FIRST_MODEL_MIN_MAP50": "0",
    }
    write_batch(landing_dir(home) / "batch_daemon", 24, seed=4)
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    defs = build_definitions(home)
    client = defs.resources["mlflow"].client()
    versions = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < DEADLINE_S and daemon.poll() is None:
            time.sleep(5)
            try:
                versions = client.search_model_versions("name='yolo-defect-detector'")
            except Exception:  # the registry tables appear with the first registration
                versions = []
            if versions and "promotion_gate" in versions[0].tags:
                break
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()
    daemon_log = (tmp_path / "daemon.log").read_text()[-4000:]
    assert versions, f"no model version registered within {DEADLINE_S}s; daemon log tail:\n{daemon_log}"
    tags = versions[0].tags
    assert tags["batch_names"] == "batch_daemon"
    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    runs = instance.get_runs()
    sensors = {run.tags.get("dagster/sensor_name") for run in runs}
    assert "labeled_data_sensor" in sensors
    assert any(run.tags.get("dagster/from_automation_condition") or run.tags.get("dagster/sensor_name") == "model_automation_sensor" for run in runs)
    assert instance.get_run_by_id(tags["training_dagster_run_id"]) is not None
    instance.dispose()
