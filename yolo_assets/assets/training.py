"""`trained_weights`: ultralytics training on the current `processed_images` version, and the
`retrain_gate` check that decides whether a new dataset version is worth a training.

Cache key = (dataset version, warm-start weights, config, resolved device, ultralytics version, code
version): a hit returns the stored weights without an epoch. Data version = sha256 of best.pt, made
reproducible by `canonicalize_checkpoint`. One MLflow run per training, metrics logged every epoch.
"""

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

import dagster as dg
from pydantic import Field

from resources.artifact_store import ArtifactStore, Built
from resources.kubernetes import gpus_requested
from resources.mlflow_tracking import MLflowResource
from resources.model_policy import ModelPolicy
from resources.trainer import TrainingDefaults, YoloWorkspace
from yolo_assets.assets.automation import RETRAIN_ON_NEW_DATA
from yolo_assets.assets.dataset import local_dataset, processed_images, read_dataset_manifest
from yolo_assets.assets.keys import (
    CODE_VERSIONS,
    FRESH_BATCH_EVALUATION,
    PROCESSED_IMAGES,
    TRAINED_WEIGHTS,
    code_versions_through,
    identity,
)
from yolo_assets.assets.materializations import data_version_of, latest_data_version, latest_materialization, metadata_value
from yolo_assets.core.hashing import sha256_file
from yolo_assets.core.versioning import cache_key
from yolo_assets.data.dataset_manifest import DatasetManifest
from yolo_assets.detector.checkpoint import checkpoint_class_names
from yolo_assets.detector.lifecycle import (
    TRAINING_SUMMARY,
    TrainingCheckpoint,
    TrainingJob,
    TrainingSummary,
    finish_run,
    tracked_training,
    write_training_files,
)
from yolo_assets.detector.setup import GpuUnavailable, cuda_report, resolve_device, ultralytics_version


def read_training_summary(store: ArtifactStore, weights_version: str) -> TrainingSummary:
    return cast(TrainingSummary, store.read_json(TRAINED_WEIGHTS, weights_version, TRAINING_SUMMARY))


# What the launchpad says of the fields a deployment fills in for automation-launched runs.
DEPLOYMENT_DEFAULT = "Empty: the deployment default (training_defaults resource, YOLO_ASSETS_TRAIN_*)."


class TrainingConfig(dg.Config):
    model: str = "yolov8n.yaml"
    """Architecture YAML, trained from scratch (a .pt path also works; names are never downloaded)."""
    epochs: int | None = Field(default=None, description=DEPLOYMENT_DEFAULT)
    warm_start_epochs: int | None = Field(default=None, description=DEPLOYMENT_DEFAULT)
    imgsz: int | None = Field(default=None, description=DEPLOYMENT_DEFAULT)
    batch: int | None = Field(default=None, description=DEPLOYMENT_DEFAULT)
    mosaic: float = 0.0
    """Mosaic augmentation probability; it shrinks thin defects on small images, so off by default."""
    warmup_epochs: float = 1.0
    plots: bool | None = Field(default=None, description=DEPLOYMENT_DEFAULT)
    device: str = "auto"
    """`auto` = CUDA when present, else CPU; or `cpu`, `0`, `0,1`."""
    seed: int = 0
    deterministic: bool = True
    workers: int | None = Field(default=None, description=DEPLOYMENT_DEFAULT)
    warm_start: bool = True
    """Start from the current champion's weights when there is one."""

    def with_defaults(self, defaults: TrainingDefaults) -> "TrainingConfig":
        """This config with every empty field taken from the deployment's defaults."""
        missing = {name: getattr(defaults, name) for name in TrainingDefaults.model_fields if getattr(self, name) is None}
        return self.model_copy(update=missing)

    def recipe(self, device: str, warm_start_from: str | None) -> dict[str, Any]:
        """Everything that determines the weights (the cache key's config part)."""
        return {
            **self.model_dump(exclude={"workers", "plots", "device", "epochs", "warm_start_epochs", "warm_start"}),
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


def weights_path(store: ArtifactStore, version: str) -> Path:
    return store.local_path(TRAINED_WEIGHTS, version) / "best.pt"


def warm_start_refusal(champion_classes: list[str], dataset_classes: list[str]) -> str | None:
    """Why the champion's weights cannot seed a training on this dataset, or None when they can.

    Class ids never shift between dataset versions (new classes are appended), so the champion's
    classes are the first ones of the dataset's, in order. Anything else (a model registered by hand,
    a class list rebuilt) would start the head on the wrong names: train from scratch instead."""
    if dataset_classes[: len(champion_classes)] == champion_classes:
        return None
    return f"the champion predicts {champion_classes}, not the first classes of the dataset {dataset_classes}"


def champion_weights(champion: Any, store: ArtifactStore) -> str | None:
    """Data version of the champion model version's weights (`mlflow.alias_version("champion")`),
    when they are still in the store."""
    version = champion.tags.get("weights_version") if champion else None
    return version if version and store.exists(TRAINED_WEIGHTS, version) else None


@contextmanager
def run_training(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    store: ArtifactStore,
    mlflow: MLflowResource,
    workspace: YoloWorkspace,
    dataset_version: str,
    recipe: dict[str, Any],
    input_batches: dict[str, str],
    checkpoint: TrainingCheckpoint,
) -> Iterator[Built[TrainingSummary]]:
    """The training `detector/lifecycle.py` runs; yields the weights' data version (sha256 of best.pt),
    the summary and how to store the run's files."""
    assert config.imgsz is not None and config.batch is not None and config.workers is not None and config.plots is not None  # with_defaults
    job = TrainingJob(
        client=mlflow.client(),
        experiment_id=mlflow.experiment_id(),
        checkpoint=checkpoint,
        dataset_version=dataset_version,
        data_yaml=local_dataset(store, dataset_version),
        workdir=workspace.workdir("train", context.run.run_id),
        model=str(weights_path(store, recipe["warm_start_from"])) if recipe["warm_start_from"] else config.model,
        recipe=recipe,
        train_args={
            "imgsz": config.imgsz, "batch": config.batch, "mosaic": config.mosaic, "warmup_epochs": config.warmup_epochs,
            "device": config.device, "seed": config.seed, "deterministic": config.deterministic, "workers": config.workers,
            "plots": config.plots,
        },
        input_batches=input_batches,
        tags={"code_versions": json.dumps(code_versions_through(TRAINED_WEIGHTS), sort_keys=True)},
        dagster_run_id=context.run.run_id,
        log=context.log,
    )
    with tracked_training(job) as (rundir, summary):
        yield Built(sha256_file(rundir / "weights" / "best.pt"), summary, lambda staging: write_training_files(rundir, staging, summary))


@dg.asset(
    **identity(TRAINED_WEIGHTS),
    deps=[processed_images],
    pool="gpu",  # one training per device on a machine; in a cluster, the run queue caps trainings
    automation_condition=RETRAIN_ON_NEW_DATA,
    description="YOLO weights trained on the current processed_images version (MLflow run per training).",
)
def trained_weights(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    artifact_store: ArtifactStore,
    mlflow: MLflowResource,
    yolo_workspace: YoloWorkspace,
    training_defaults: TrainingDefaults,
) -> dg.MaterializeResult:
    dataset, dataset_version = trainable_dataset(context.instance)
    splits = metadata_value(dataset, "splits", {})
    input_batches = metadata_value(dataset, "input_batches", {})
    config = config.with_defaults(training_defaults)
    check_model_source(config.model)
    warm_start_from, refusal = warm_start_source(config, mlflow, artifact_store, metadata_value(dataset, "classes", []), context.log)
    device = step_device(config.device, "trained_weights", context.log)
    recipe = config.recipe(device, warm_start_from)
    key = cache_key(CODE_VERSIONS[TRAINED_WEIGHTS], {"dataset": dataset_version}, recipe)
    checkpoint = TrainingCheckpoint(artifact_store, key, context.log)

    def build() -> AbstractContextManager[Built[TrainingSummary]]:
        context.log.info(
            f"training {recipe['model'] if not warm_start_from else 'from champion ' + warm_start_from[:12]} "
            f"for {recipe['epochs']} epochs on dataset {dataset_version[:12]} ({splits}) on {device}"
        )
        return run_training(context, config, artifact_store, mlflow, yolo_workspace, dataset_version, recipe, input_batches, checkpoint)

    weights = artifact_store.cached(
        TRAINED_WEIGHTS,
        key,
        build,
        load=lambda version: read_training_summary(artifact_store, version),
        publish=lambda version, summary: finish_run(
            mlflow.client(), summary, version, artifact_store.local_path(TRAINED_WEIGHTS, version).iterdir(), checkpoint
        ),
    )
    if weights.cache_hit:
        context.log.info(f"cache hit: weights {weights.version[:12]} were trained on this dataset with this recipe; no epoch runs")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(weights.version),
        metadata={**weights.metadata(), **training_metadata(weights.summary, refusal, device)},
    )


def trainable_dataset(instance: dg.DagsterInstance) -> tuple[dg.AssetMaterialization, str]:
    """The latest processed_images materialisation and version; a dataset that cannot be trained on
    is a failure no retry changes."""
    dataset = latest_materialization(instance, PROCESSED_IMAGES)
    version = data_version_of(dataset)
    if dataset is None or version is None:
        raise dg.Failure("processed_images has never been materialised: there is nothing to train on", allow_retries=False)
    splits = metadata_value(dataset, "splits", {})
    if not splits.get("train") or not splits.get("val"):
        raise dg.Failure(f"dataset {version[:12]} needs images in both splits to train, has {splits}", allow_retries=False)
    return dataset, version


def warm_start_source(
    config: TrainingConfig, mlflow: MLflowResource, store: ArtifactStore, dataset_classes: list[str], log: Any
) -> tuple[str | None, str | None]:
    """The champion's weights version a training starts from (None: from scratch), and why the
    champion was refused when it was."""
    champion = champion_weights(mlflow.alias_version("champion"), store) if config.warm_start else None
    if champion is None:
        return None, None
    refusal = warm_start_refusal(checkpoint_class_names(weights_path(store, champion)), dataset_classes)
    if refusal:
        log.warning(f"training from scratch, not from champion {champion[:12]}: {refusal}")
        return None, refusal
    return champion, None


def training_metadata(summary: TrainingSummary, refusal: str | None, device: str) -> dict[str, Any]:
    final = summary["final_metrics"]
    return {
        "dataset_version": summary["dataset_version"],
        "input_batches": dg.MetadataValue.json(summary["input_batches"]),
        "warm_start_from": summary["recipe"]["warm_start_from"] or "",
        "warm_start_refused": refusal or "",
        "epochs": summary["recipe"]["epochs"],
        "device": device,
        "train_mAP50": round(final["metrics/mAP50B"], 4) if "metrics/mAP50B" in final else None,
        "train_mAP50-95": round(final["metrics/mAP50-95B"], 4) if "metrics/mAP50-95B" in final else None,
        "train_seconds": summary["train_seconds"],
        "mlflow_run_id": summary["mlflow_run_id"],
    }


def step_device(device: str, step: str, log: Any) -> str:
    """The device `step` runs on: a step whose pod asked for a GPU (or whose config names a CUDA
    device) fails at once, without retries, where CUDA is not usable; on a GPU, the log says which."""
    try:
        resolved = resolve_device(device, gpus_requested(step))
    except GpuUnavailable as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    if resolved not in ("cpu", "mps"):
        log.info(f"{step} on CUDA: {cuda_report()}")
    return resolved


def retraction_changes(current: DatasetManifest, trained_on: DatasetManifest) -> dict[str, list[str]]:
    """Batches retracted or unretracted between two dataset manifests: a retraining trigger of its own,
    whatever min_new_images says (a retraction adds no image, yet its labels must leave the model)."""
    now, then = current.get("retracted_batches", {}), trained_on.get("retracted_batches", {})
    return {"retracted": sorted(now.keys() - then.keys()), "unretracted": sorted(then.keys() - now.keys())}


@dg.asset_check(
    asset=processed_images,
    name="retrain_gate",
    # Blocking so RETRAIN_ON_NEW_DATA can require it with the blocking checks (split_leakage) and
    # leave out the advisory near_duplicates; it only ever fails with WARN severity, which halts nothing.
    blocking=True,
    description="Passes when at least min_new_images images are new since the dataset the current weights were trained on, a batch was retracted or unretracted since, or the champion drifted on a fresh batch since.",
)
def retrain_gate(
    context: dg.AssetCheckExecutionContext, artifact_store: ArtifactStore, model_policy: ModelPolicy
) -> dg.AssetCheckResult:
    current = latest_data_version(context.instance, PROCESSED_IMAGES)
    trained_on = metadata_value(latest_materialization(context.instance, TRAINED_WEIGHTS), "dataset_version")
    if current is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"reason": "no dataset yet"})
    if not trained_on or not artifact_store.exists(PROCESSED_IMAGES, trained_on):
        return dg.AssetCheckResult(passed=True, metadata={"reason": "no trained model yet", "min_new_images": model_policy.min_new_images})
    current_manifest = read_dataset_manifest(artifact_store, current)
    trained_manifest = read_dataset_manifest(artifact_store, trained_on)
    new_images = len({i["sha"] for i in current_manifest["items"]} - {i["sha"] for i in trained_manifest["items"]})
    drifted = drifted_batches_since_training(context.instance)
    retractions = retraction_changes(current_manifest, trained_manifest)
    passed = new_images >= model_policy.min_new_images or bool(drifted) or any(retractions.values())
    reason = f"{new_images} new images since the last trained dataset (minimum {model_policy.min_new_images})"
    reason += "".join(f"; {kind} since: {', '.join(batches)}" for kind, batches in retractions.items() if batches)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if passed else dg.AssetCheckSeverity.WARN,
        metadata={
            "new_images": new_images,
            "min_new_images": model_policy.min_new_images,
            "drifted_batches": dg.MetadataValue.json(drifted),
            "retraction_changes": dg.MetadataValue.json(retractions),
            "trained_on_dataset": trained_on,
            "reason": reason + (f"; the champion drifted on fresh batches {drifted}" if drifted else ""),
        },
    )


# Fresh-batch scorings read for drift: far more than batches land between two trainings.
DRIFT_WINDOW = 200


def drifted_batches_since_training(instance: dg.DagsterInstance) -> list[str]:
    """Batches on which the champion drifted (fresh_data_drift) since the latest training started:
    a drift is a retraining trigger beside min_new_images."""
    trained = instance.fetch_materializations(TRAINED_WEIGHTS, limit=1).records
    after = trained[0].storage_id if trained else 0
    records = instance.fetch_materializations(FRESH_BATCH_EVALUATION, limit=DRIFT_WINDOW).records
    return sorted({
        str(record.asset_materialization.partition)
        for record in records
        if record.storage_id > after and record.asset_materialization and metadata_value(record.asset_materialization, "drift", False)
    })
