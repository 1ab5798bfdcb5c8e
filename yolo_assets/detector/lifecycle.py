"""One training's lifecycle, without Dagster: its MLflow run (a new one, or the interrupted one resumed),
the checkpoint kept in the store while it trains, the ultralytics call, the summary stored with the
weights, and the run's files logged and the run finished once the weights are published.

`assets/training.py` decides what to train (dataset, recipe, warm start, device, cache key) and hands
the rest to `tracked_training`; a test or a script can drive it with a store and an `MlflowClient`.
"""

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from yolo_assets.core.background import LatestOnly
from yolo_assets.core.fileio import atomic_write_bytes, object_relpath
from yolo_assets.detector.checkpoint import checkpoint_epoch
from yolo_assets.detector.train import train_detector

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRAINING_SUMMARY = "training.json"
CHECKPOINTS = "checkpoints"
KEPT_FILES = ("results.csv", "args.yaml", "results.png", "labels.jpg", "BoxPR_curve.png", "BoxF1_curve.png",
              "confusion_matrix.png", "confusion_matrix_normalized.png", "val_batch0_pred.jpg", "train_batch0.jpg")


class TrainingSummary(TypedDict):
    """`training.json`, stored with the weights: what made them. Written by `tracked_training`, read by
    evaluation, registration and fresh-batch scoring through `assets/training.read_training_summary`."""

    mlflow_run_id: str
    dataset_version: str
    input_batches: dict[str, str]
    """batch -> the labeled_batch data version trained on"""
    recipe: dict[str, Any]
    final_metrics: dict[str, float]
    train_seconds: float
    dagster_run_id: str


class Log(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...


class CheckpointStore(Protocol):
    """What a checkpoint needs of the artifact store (resources/artifact_store.py implements it)."""

    def object_root(self, namespace: str) -> Path: ...
    def fetch_objects(self, namespace: str, names: Iterable[str]) -> int: ...
    def publish_objects(self, namespace: str, names: Iterable[str], replace: bool = False) -> int: ...
    def publish_snapshot(self, namespace: str, name: str, snapshot: Path) -> None: ...
    def delete_objects(self, namespace: str, names: Iterable[str]) -> None: ...


def log_metrics(client: "MlflowClient", run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Every value in one request (one database transaction): a `log_metric` per value cost ~0.3 s
    per training epoch against a SQLite store, 10-15% of a 2 s GPU epoch."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, float(value), now, step) for name, value in metrics.items()])


def log_params(client: "MlflowClient", run_id: str, params: Mapping[str, object]) -> None:
    """Every parameter in one request, as strings."""
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(name, str(value)) for name, value in params.items()])


@dataclass
class TrainingCheckpoint:
    """What an interrupted training of a recipe resumes from, kept in the store under its cache key
    (so a training killed on one machine resumes on another): ultralytics' last.pt, and the MLflow
    run it logs to.

    Each epoch's checkpoint is uploaded in the background while the next epoch trains (newest wins:
    epochs that end during an upload are coalesced into one more upload). The store's object is
    always a complete checkpoint: an upload replaces it in one step, so a training killed at any moment
    resumes from the last checkpoint that finished uploading."""

    store: CheckpointStore
    key: str
    log: Log | None = None
    _uploads: LatestOnly | None = field(default=None, init=False, repr=False)

    @property
    def names(self) -> list[str]:
        return [f"{object_relpath(self.key)}.pt", f"{object_relpath(self.key)}.json"]

    @property
    def weights(self) -> Path:
        return self.store.object_root(CHECKPOINTS) / self.names[0]

    @property
    def run_file(self) -> Path:
        return self.store.object_root(CHECKPOINTS) / self.names[1]

    def fetch(self) -> None:
        self.store.fetch_objects(CHECKPOINTS, self.names)

    def weights_saved(self, _: Path) -> None:
        """After every epoch (keep_checkpoint replaced `weights`): upload it, overlapping the next epoch."""
        if self._uploads is None:
            self._uploads = LatestOnly(self._upload_latest, self._upload_failed, name="checkpoint-upload")
        self._uploads.request()

    def _upload_latest(self) -> None:
        # A second name for the file as it is now: keep_checkpoint replaces `weights`, never rewrites
        # it, so the snapshot stays this epoch's checkpoint while the next one is written.
        snapshot = self.weights.with_name(self.weights.name + ".uploading")
        snapshot.unlink(missing_ok=True)
        try:
            os.link(self.weights, snapshot)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(self.weights, snapshot)
        try:
            self.store.publish_snapshot(CHECKPOINTS, self.names[0], snapshot)
        finally:
            snapshot.unlink(missing_ok=True)

    def _upload_failed(self, error: Exception) -> None:
        if self.log is not None:  # the next epoch's upload tries again; a resume uses the last one stored
            self.log.warning(f"checkpoint upload failed: {type(error).__name__}: {error}")

    def wait_for_upload(self) -> None:
        """The last epoch's checkpoint is in the store (or its upload failed and said so)."""
        if self._uploads is not None:
            self._uploads.wait()

    def save_run(self, run_id: str) -> None:
        atomic_write_bytes(self.run_file, json.dumps({"mlflow_run_id": run_id}).encode())
        self.store.publish_objects(CHECKPOINTS, self.names[1:], replace=True)

    def discard(self) -> None:
        self.store.delete_objects(CHECKPOINTS, self.names)


@dataclass(frozen=True)
class TrainingJob:
    """One training: what it trains on and with what, where it logs, and what it is part of."""

    client: "MlflowClient"
    experiment_id: str
    checkpoint: TrainingCheckpoint
    dataset_version: str
    data_yaml: Path
    workdir: Path
    model: str
    """Architecture YAML, or the weights a warm start begins from."""
    recipe: dict[str, Any]
    """Everything that determines the weights: logged as the run's params, kept in the summary."""
    train_args: dict[str, Any]
    """`train_detector`'s keyword arguments beside data, workdir, model and epochs."""
    input_batches: dict[str, str]
    tags: dict[str, str]
    """Tags of a new MLflow run, beside the dataset, batches and Dagster run."""
    dagster_run_id: str
    log: Log


def start_or_resume_run(job: TrainingJob) -> str:
    """The MLflow run of this training: the interrupted one when its checkpoint is there to resume,
    else a new run with the recipe as params and the lineage as tags."""
    checkpoint = job.checkpoint
    checkpoint.fetch()
    weights, run_file = checkpoint.weights, checkpoint.run_file
    done_epochs = checkpoint_epoch(weights) if weights.exists() else 0
    if weights.exists() and done_epochs >= job.recipe["epochs"]:
        weights.unlink()  # killed after its last epoch: nothing left to resume, train again
    if weights.exists() and run_file.exists():
        run_id: str = json.loads(run_file.read_text())["mlflow_run_id"]
        job.log.info(f"resuming from epoch {done_epochs + 1} (checkpoint of an interrupted training of this recipe)")
        job.client.set_tag(run_id, "resumed_by_dagster_run_id", job.dagster_run_id)
        return run_id
    run = job.client.create_run(
        job.experiment_id,
        run_name=f"train-{job.dataset_version[:10]}",
        tags={
            "dataset_version": job.dataset_version,
            "batches": json.dumps(job.input_batches, sort_keys=True),
            "dagster_run_id": job.dagster_run_id,
            **job.tags,
        },
    )
    params = {**job.recipe, "dataset_version": job.dataset_version, "workers": job.train_args.get("workers")}
    log_params(job.client, run.info.run_id, params)
    checkpoint.save_run(run.info.run_id)
    return str(run.info.run_id)


@contextmanager
def tracked_training(job: TrainingJob) -> Iterator[tuple[Path, TrainingSummary]]:
    """Train; yields the run folder (weights/best.pt, last.pt, plots) and the training summary, and
    removes the folder when the block ends.

    The checkpoint lives in the store under the cache key: a retried or re-launched training of the
    same recipe on the same data resumes from it, and keeps logging to the same MLflow run. A failed
    training marks its MLflow run FAILED and keeps the checkpoint.
    """
    run_id = start_or_resume_run(job)
    epochs = job.recipe["epochs"]
    last_metrics: dict[str, float] = {}

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        last_metrics.update(metrics)
        log_metrics(job.client, run_id, metrics, step=epoch)
        label = "final validation of best.pt" if epoch > epochs else f"epoch {epoch}/{epochs}"
        job.log.info(
            f"{label}: mAP50={metrics.get('metrics/mAP50B', 0):.3f} mAP50-95={metrics.get('metrics/mAP50-95B', 0):.3f} "
            f"box_loss={metrics.get('train/box_loss', float('nan')):.3f} cls_loss={metrics.get('train/cls_loss', float('nan')):.3f}"
        )

    started = time.perf_counter()
    try:
        rundir = train_detector(
            job.data_yaml, job.workdir, model=job.model, epochs=epochs, on_epoch=on_epoch,
            checkpoint=job.checkpoint.weights, on_checkpoint=job.checkpoint.weights_saved, **job.train_args,
        )
    except Exception:
        job.checkpoint.wait_for_upload()
        job.client.set_terminated(run_id, "FAILED")  # the checkpoint stays: a retry resumes from it
        raise
    job.checkpoint.wait_for_upload()  # before it is discarded: a late upload would bring it back
    summary: TrainingSummary = {
        "mlflow_run_id": run_id,
        "dataset_version": job.dataset_version,
        "input_batches": job.input_batches,
        "recipe": job.recipe,
        "final_metrics": last_metrics,
        "train_seconds": round(time.perf_counter() - started, 1),
        "dagster_run_id": job.dagster_run_id,
    }
    try:
        yield rundir, summary
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def write_training_files(rundir: Path, staging: Path, summary: TrainingSummary) -> None:
    """What the weights' version stores: best.pt and last.pt, the plots and results, and training.json."""
    for weights in ("best.pt", "last.pt"):
        shutil.copyfile(rundir / "weights" / weights, staging / weights)
    for name in KEPT_FILES:
        if (rundir / name).exists():
            shutil.copyfile(rundir / name, staging / name)
    atomic_write_bytes(staging / TRAINING_SUMMARY, json.dumps(summary, indent=1).encode())


def finish_run(client: "MlflowClient", summary: TrainingSummary, version: str, files: Iterable[Path], checkpoint: TrainingCheckpoint) -> None:
    """The stored files go to the training's MLflow run, which is then finished; the resumable
    checkpoint is no longer needed."""
    run_id = summary["mlflow_run_id"]
    for path in sorted(files):
        client.log_artifact(run_id, str(path), artifact_path="training")
    client.set_tag(run_id, "weights_version", version)
    client.set_terminated(run_id, "FINISHED")
    checkpoint.discard()
