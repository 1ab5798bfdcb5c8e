"""`trained_weights`: ultralytics training on the current `processed_images` version.

Cache key = (dataset version, warm-start weights, config, resolved device, ultralytics version, code
version): a hit returns the stored weights without an epoch. Data version = sha256 of best.pt, made
reproducible by `canonicalize_checkpoint`. One MLflow run per training, metrics logged every epoch.
"""

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg

from resources.artifact_store import ArtifactStore
from resources.mlflow_tracking import MLflowResource
from resources.trainer import YoloWorkspace
from yolo_assets.retries import TRAINING_RETRY
from yolo_assets.automation import RETRAIN_ON_NEW_DATA
from yolo_assets.batches import LABELED_BATCH_CODE_VERSION
from yolo_assets.detector import checkpoint_epoch, resolve_device, train_detector, ultralytics_version
from yolo_assets.fileio import atomic_write_bytes
from yolo_assets.hashing import sha256_file
from yolo_assets.processed_images import PROCESSED_IMAGES, PROCESSED_IMAGES_CODE_VERSION, processed_images
from yolo_assets.versioning import cache_key, latest_materialization, metadata_value

TRAINED_WEIGHTS = "trained_weights"
TRAINED_WEIGHTS_CODE_VERSION = "1"
TRAINING_SUMMARY = "training.json"
CHECKPOINTS = "checkpoints"
KEPT_FILES = ("results.csv", "args.yaml", "results.png", "labels.jpg", "BoxPR_curve.png", "BoxF1_curve.png",
              "confusion_matrix.png", "confusion_matrix_normalized.png", "val_batch0_pred.jpg", "train_batch0.jpg")
# Run on a GPU node in production (dagster-k8s reads this tag); ignored by the local executors.
K8S_GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


def _default(name: str, fallback: int) -> int:
    """Deployment-wide default for runs that automation launches (they carry no run config)."""
    return int(os.environ.get(f"YOLO_ASSETS_TRAIN_{name.upper()}", fallback))


class TrainingConfig(dg.Config):
    model: str = "yolov8n.yaml"
    """Architecture YAML, trained from scratch (a .pt path also works; names are never downloaded)."""
    epochs: int = _default("epochs", 20)
    warm_start_epochs: int = _default("warm_start_epochs", 8)
    """Epochs when starting from the champion's weights (the daily-retrain case)."""
    imgsz: int = _default("imgsz", 256)
    batch: int = _default("batch", 8)
    """Small batches: more optimiser steps per epoch, which matters on small from-scratch datasets."""
    mosaic: float = 0.0
    """Mosaic augmentation probability; it shrinks thin defects on small images, so off by default."""
    warmup_epochs: float = 1.0
    device: str = "auto"
    """`auto` = CUDA when present, else CPU; or `cpu`, `0`, `0,1`."""
    seed: int = 0
    deterministic: bool = True
    workers: int = _default("workers", 2)
    """Dataloader workers; does not change the weights."""
    warm_start: bool = True
    """Start from the current champion's weights when there is one."""

    def recipe(self, device: str, warm_start_from: str | None) -> dict[str, Any]:
        """Everything that determines the weights (the cache key's config part)."""
        return {
            **self.model_dump(exclude={"workers", "device", "epochs", "warm_start_epochs", "warm_start"}),
            "epochs": self.warm_start_epochs if warm_start_from else self.epochs,
            "device": "cpu" if device == "cpu" else "cuda",
            "warm_start_from": warm_start_from,
            "ultralytics": ultralytics_version(),
        }


def check_model_source(model: str) -> None:
    """A wrong architecture name or weights path is a config error: fail at once, never retry."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        if model.endswith((".yaml", ".yml")):
            yaml_model_load(model)  # resolves scaled names (yolov8n.yaml -> yolov8.yaml, scale n) as YOLO() does
        elif not Path(model).is_file():
            raise FileNotFoundError(f"weights file {model!r} does not exist (names are never downloaded)")
    except Exception as error:
        raise dg.Failure(f"model {model!r} cannot be used: {error}", allow_retries=False) from error


def code_versions() -> dict[str, str]:
    return {
        "labeled_batch": LABELED_BATCH_CODE_VERSION,
        "processed_images": PROCESSED_IMAGES_CODE_VERSION,
        "trained_weights": TRAINED_WEIGHTS_CODE_VERSION,
    }


def weights_path(store: ArtifactStore, version: str) -> Path:
    return store.local_path(TRAINED_WEIGHTS, version) / "best.pt"


def champion_weights(champion: Any, store: ArtifactStore) -> str | None:
    """Data version of the champion model version's weights (`mlflow.alias_version("champion")`),
    when they are still in the store."""
    version = champion.tags.get("weights_version") if champion else None
    return version if version and store.exists(TRAINED_WEIGHTS, version) else None


def run_training(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    store: ArtifactStore,
    mlflow: MLflowResource,
    workspace: YoloWorkspace,
    dataset_version: str,
    recipe: dict[str, Any],
    input_batches: dict[str, str],
    key: str,
) -> tuple[str, dict[str, Any]]:
    """Train, store the artifact, track it in MLflow; returns (weights data version, summary).

    The checkpoint lives in the store under the cache key: a retried or re-launched training of the
    same recipe on the same data resumes from it, and keeps logging to the same MLflow run.
    """
    client = mlflow.client()
    checkpoint = store.object_path(CHECKPOINTS, key).with_suffix(".pt")
    run_file = checkpoint.with_suffix(".json")
    done_epochs = checkpoint_epoch(checkpoint) if checkpoint.exists() else 0
    if checkpoint.exists() and done_epochs >= recipe["epochs"]:
        checkpoint.unlink()  # killed after its last epoch: nothing left to resume, train again
    if checkpoint.exists() and run_file.exists():
        run_id = json.loads(run_file.read_text())["mlflow_run_id"]
        context.log.info(f"resuming from epoch {done_epochs + 1} (checkpoint of an interrupted training of this recipe)")
        client.set_tag(run_id, "resumed_by_dagster_run_id", context.run.run_id)
    else:
        run = client.create_run(
            mlflow.experiment_id(),
            run_name=f"train-{dataset_version[:10]}",
            tags={
                "dataset_version": dataset_version,
                "batches": json.dumps(input_batches, sort_keys=True),
                "dagster_run_id": context.run.run_id,
                "code_versions": json.dumps(code_versions(), sort_keys=True),
            },
        )
        run_id = run.info.run_id
        for name, value in {**recipe, "dataset_version": dataset_version, "workers": config.workers}.items():
            client.log_param(run_id, name, str(value))
        atomic_write_bytes(run_file, json.dumps({"mlflow_run_id": run_id}).encode())
    epochs = recipe["epochs"]
    last_metrics: dict[str, float] = {}

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        last_metrics.update(metrics)
        for name, value in metrics.items():
            client.log_metric(run_id, name, value, step=epoch)
        label = "final validation of best.pt" if epoch > epochs else f"epoch {epoch}/{epochs}"
        context.log.info(
            f"{label}: mAP50={metrics.get('metrics/mAP50B', 0):.3f} mAP50-95={metrics.get('metrics/mAP50-95B', 0):.3f} "
            f"box_loss={metrics.get('train/box_loss', float('nan')):.3f} cls_loss={metrics.get('train/cls_loss', float('nan')):.3f}"
        )

    data_yaml = store.local_path(PROCESSED_IMAGES, dataset_version) / "data.yaml"
    model = str(weights_path(store, recipe["warm_start_from"])) if recipe["warm_start_from"] else config.model
    started = time.perf_counter()
    try:
        rundir = train_detector(
            data_yaml,
            workspace.workdir("train", context.run.run_id),
            model=model,
            epochs=epochs,
            imgsz=config.imgsz,
            batch=config.batch,
            mosaic=config.mosaic,
            warmup_epochs=config.warmup_epochs,
            device=config.device,
            seed=config.seed,
            deterministic=config.deterministic,
            workers=config.workers,
            on_epoch=on_epoch,
            checkpoint=checkpoint,
        )
    except Exception:
        client.set_terminated(run_id, "FAILED")  # the checkpoint stays: a retry resumes from it
        raise
    version = sha256_file(rundir / "weights" / "best.pt")
    summary = {
        "mlflow_run_id": run_id,
        "dataset_version": dataset_version,
        "input_batches": input_batches,
        "recipe": recipe,
        "final_metrics": last_metrics,
        "train_seconds": round(time.perf_counter() - started, 1),
        "dagster_run_id": context.run.run_id,
    }
    if not store.exists(TRAINED_WEIGHTS, version):
        with store.write_artifact(TRAINED_WEIGHTS, version) as staging:
            for weights in ("best.pt", "last.pt"):
                shutil.copyfile(rundir / "weights" / weights, staging / weights)
            for name in KEPT_FILES:
                if (rundir / name).exists():
                    shutil.copyfile(rundir / name, staging / name)
            atomic_write_bytes(staging / TRAINING_SUMMARY, json.dumps(summary, indent=1).encode())
    stored = store.local_path(TRAINED_WEIGHTS, version)
    for path in sorted(stored.iterdir()):
        client.log_artifact(run_id, str(path), artifact_path="training")
    client.set_tag(run_id, "weights_version", version)
    client.set_terminated(run_id, "FINISHED")
    shutil.rmtree(rundir, ignore_errors=True)
    checkpoint.unlink(missing_ok=True)
    run_file.unlink(missing_ok=True)
    return version, summary


@dg.asset(
    retry_policy=TRAINING_RETRY,
    deps=[processed_images],
    code_version=TRAINED_WEIGHTS_CODE_VERSION,
    pool="gpu",
    op_tags=K8S_GPU_TAGS,
    group_name="model",
    automation_condition=RETRAIN_ON_NEW_DATA,
    kinds={"pytorch"},
    description="YOLO weights trained on the current processed_images version (MLflow run per training).",
)
def trained_weights(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    artifact_store: ArtifactStore,
    mlflow: MLflowResource,
    yolo_workspace: YoloWorkspace,
) -> dg.MaterializeResult:
    dataset = latest_materialization(context.instance, PROCESSED_IMAGES)
    if dataset is None:
        raise dg.Failure("processed_images has never been materialised: there is nothing to train on", allow_retries=False)
    dataset_version = dataset.tags["dagster/data_version"]
    splits = metadata_value(dataset, "splits", {})
    if not splits.get("train") or not splits.get("val"):
        raise dg.Failure(
            f"dataset {dataset_version[:12]} needs images in both splits to train, has {splits}", allow_retries=False
        )
    input_batches = metadata_value(dataset, "input_batches", {})
    check_model_source(config.model)
    warm_start_from = champion_weights(mlflow.alias_version("champion"), artifact_store) if config.warm_start else None
    device = resolve_device(config.device)
    recipe = config.recipe(device, warm_start_from)
    key = cache_key(TRAINED_WEIGHTS_CODE_VERSION, {"dataset": dataset_version}, recipe)
    version = artifact_store.lookup_cache_key(TRAINED_WEIGHTS, key)
    cache_hit = version is not None
    if version is not None:
        summary = artifact_store.read_json(TRAINED_WEIGHTS, version, TRAINING_SUMMARY)
        context.log.info(f"cache hit: weights {version[:12]} were trained on this dataset with this recipe; no epoch runs")
    else:
        context.log.info(
            f"training {recipe['model'] if not warm_start_from else 'from champion ' + warm_start_from[:12]} "
            f"for {recipe['epochs']} epochs on dataset {dataset_version[:12]} ({splits}) on {device}"
        )
        version, summary = run_training(
            context, config, artifact_store, mlflow, yolo_workspace, dataset_version, recipe, input_batches, key
        )
        artifact_store.record_cache_key(TRAINED_WEIGHTS, key, version)
    final = summary["final_metrics"]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "cache_hit": cache_hit,
            "cache_key": key,
            "dataset_version": dataset_version,
            "input_batches": dg.MetadataValue.json(summary["input_batches"]),
            "warm_start_from": summary["recipe"]["warm_start_from"] or "",
            "epochs": summary["recipe"]["epochs"],
            "device": device,
            "train_mAP50": round(final["metrics/mAP50B"], 4) if "metrics/mAP50B" in final else None,
            "train_mAP50-95": round(final["metrics/mAP50-95B"], 4) if "metrics/mAP50-95B" in final else None,
            "train_seconds": summary["train_seconds"],
            "mlflow_run_id": summary["mlflow_run_id"],
            "path": dg.MetadataValue.path(artifact_store.uri(TRAINED_WEIGHTS, version)),
        },
    )
