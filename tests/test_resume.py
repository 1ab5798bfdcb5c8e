"""A training killed with SIGKILL resumes from its checkpoint when attempted again, by itself."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from helpers import REPO, Home, kill_in_state, subprocess_env

from resources.model_policy import ModelPolicy
from resources.run_recovery import RunRecovery
from yolo_assets.detector.checkpoint import checkpoint_epoch
from yolo_assets.ops.cli import main

EPOCHS = 8


@pytest.mark.slow
def test_killed_training_resumes_from_a_later_epoch_and_finishes_registered(tmp_path: Path) -> None:
    home = Home.create(tmp_path / "home", model_policy=ModelPolicy(first_model_min_map50=0.0))  # a tiny model
    env = subprocess_env(home.path, YOLO_ASSETS_FIRST_MODEL_MIN_MAP50="0")
    home.land("batch_a", 32, seed=6)
    outcomes = home.tick()
    assert outcomes and all(o.success for o in outcomes)
    config = {"ops": {"trained_weights": {"config": {"epochs": EPOCHS, "imgsz": 64, "batch": 8, "workers": 0, "plots": False, "warm_start": False}}}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "yolo_assets.definitions",
               "--select", "trained_weights", "-c", str(tmp_path / "train.yaml")]
    checkpoints = home.store / "_objects" / "checkpoints"
    instance = home.instance

    # Imported now, not in the first look at a checkpoint: on a loaded machine that look took seconds, and
    # the tiny training (about an epoch a second) had finished all its epochs before the test saw one.
    import torch  # noqa: F401

    with open(tmp_path / "first.log", "w") as first_log:
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=first_log, stderr=subprocess.STDOUT, start_new_session=True)
    killed_after = 0

    def at_a_resumable_epoch() -> bool:
        nonlocal killed_after
        try:
            killed_after = checkpoint_epoch(next(checkpoints.rglob("*.pt")))
        except Exception:  # caught between copy and rename of a partial file: look again
            killed_after = 0
        return 2 <= killed_after < EPOCHS

    # The run worker and its step process, no cleanup.
    kill_in_state(first, lambda: any(checkpoints.rglob("*.pt")), at_a_resumable_epoch, poll_s=0.2)  # (none while the folder is missing)
    first.wait(30)
    assert 2 <= killed_after < EPOCHS, (killed_after, (tmp_path / "first.log").read_text()[-3000:])
    assert instance.get_latest_materialization_event(dg.AssetKey("trained_weights")) is None
    # The killed run still holds the `gpu` pool slot; recovery marks it failed and frees the slot.
    assert main(["--home", str(home.path), "recover"]) == 0
    assert instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])) == []

    # Nobody re-runs it: the killed run is a transient failure, attempted again by transient_failure_retry.
    home.redefine(model_policy=ModelPolicy(first_model_min_map50=0.0), run_recovery=RunRecovery(first_delay_s=0))
    [killed] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    [second] = [o for o in home.tick() if "transient_failure_retry" in o.description]
    assert second.success, second.failure
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_weights"))
    assert event is not None and event.run_id == second.run_id
    assert instance.get_run_by_id(second.run_id).tags["yolo_assets/retry_of"] == killed.run_id
    messages = [e.user_message for e in instance.all_logs(event.run_id)]
    resumed = [m for m in messages if m.startswith("resuming from epoch")]
    assert resumed and int(resumed[0].split()[3]) >= killed_after + 1 > 2
    started_epochs = [int(m.split()[1].split("/")[0]) for m in messages if m.startswith("epoch ")]
    assert min(started_epochs) > 1 and max(started_epochs) == EPOCHS  # did not start over
    mlflow = home.resource("mlflow")
    client = mlflow.client()
    runs = client.search_runs([mlflow.experiment_id()])
    assert len(runs) == 1  # the resumed training kept logging to the interrupted run
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "metrics/mAP50-95B")]
    assert sorted(set(steps)) == list(range(1, EPOCHS + 2))
    assert not list(checkpoints.rglob("*.pt"))  # cleaned up after success

    assert home.materialize(["evaluation_report", "registered_model", "model_rollout"]).success
    version = mlflow.alias_version("champion")
    assert version is not None and version.tags["weights_version"] == event.asset_materialization.tags["dagster/data_version"]
    home.close()
