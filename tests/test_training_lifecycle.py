"""The training lifecycle (detector/lifecycle.py) driven without Dagster: a store, an MLflow client and
a tiny dataset. Interrupted after its first epoch, a training resumes on its checkpoint and keeps
logging to the same MLflow run; finished, its files reach that run and its checkpoint is discarded."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from resources.artifact_store import LocalArtifactStore
from resources.mlflow_tracking import import_mlflow
from yolo_assets.data.synth import DEFAULT_CLASSES, write_batch
from yolo_assets.detector.checkpoint import checkpoint_epoch
from yolo_assets.detector.lifecycle import (
    TRAINING_SUMMARY,
    TrainingCheckpoint,
    TrainingJob,
    finish_run,
    tracked_training,
    write_training_files,
)

pytestmark = pytest.mark.slow

TRAIN_ARGS = {"imgsz": 64, "batch": 8, "mosaic": 0.0, "warmup_epochs": 0.0, "device": "cpu", "seed": 0, "deterministic": True, "workers": 0}


class Interrupted(Exception):
    pass


class RecordingLog:
    """A step log that keeps its lines, and can stop the training when one is written."""

    def __init__(self, stop_at: str | None = None) -> None:
        self.lines: list[str] = []
        self.stop_at = stop_at

    def info(self, msg: str) -> None:
        self.lines.append(msg)
        if self.stop_at and msg.startswith(self.stop_at):
            raise Interrupted(msg)  # as a killed process would at that line

    def warning(self, msg: str) -> None:
        self.lines.append(msg)


def test_an_interrupted_training_resumes_on_its_run_and_a_finished_one_publishes_its_files(tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "batch", 8, seed=41)
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(batch), "train": "images", "val": "images", "names": dict(enumerate(DEFAULT_CLASSES))}))
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    client = import_mlflow().MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("lifecycle", artifact_location=str(tmp_path / "artifacts"))

    def job(log: RecordingLog, dagster_run_id: str) -> TrainingJob:
        return TrainingJob(
            client=client, experiment_id=experiment, checkpoint=TrainingCheckpoint(store, "ab" * 32, log),
            dataset_version="dataset-v1", data_yaml=data_yaml, workdir=tmp_path / "work" / dagster_run_id, model="yolov8n.yaml",
            recipe={"epochs": 2, "model": "yolov8n.yaml"}, train_args=TRAIN_ARGS, input_batches={"batch": "batch-v1"},
            tags={"code_versions": "{}"}, dagster_run_id=dagster_run_id, log=log,
        )

    # Epoch 2 is reported just before its checkpoint would be kept: killed there, the store holds epoch 1's.
    first = job(RecordingLog(stop_at="epoch 2/2"), "run-1")
    with pytest.raises(Interrupted), tracked_training(first):
        pass
    [interrupted] = client.search_runs([experiment])
    assert interrupted.info.status == "FAILED" and interrupted.data.params["dataset_version"] == "dataset-v1"
    assert checkpoint_epoch(first.checkpoint.weights) == 1  # the store kept epoch 1's checkpoint

    log = RecordingLog()
    second = job(log, "run-2")
    with tracked_training(second) as (rundir, summary):
        staging = tmp_path / "staging"
        staging.mkdir()
        write_training_files(rundir, staging, summary)
    assert not rundir.exists()
    assert "resuming from epoch 2 (checkpoint of an interrupted training of this recipe)" in log.lines
    assert summary["mlflow_run_id"] == interrupted.info.run_id and summary["dagster_run_id"] == "run-2"
    assert [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "metrics/mAP50B")][:2] == [1, 2]
    assert {"best.pt", "last.pt", "results.csv", TRAINING_SUMMARY} <= {p.name for p in staging.iterdir()}

    finish_run(client, summary, "weights-v1", staging.iterdir(), second.checkpoint)
    run: Any = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["weights_version"] == "weights-v1"
    assert run.data.tags["resumed_by_dagster_run_id"] == "run-2" and run.data.tags["dagster_run_id"] == "run-1"
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "training")} >= {"best.pt", TRAINING_SUMMARY}
    assert not second.checkpoint.weights.exists() and not second.checkpoint.run_file.exists()
