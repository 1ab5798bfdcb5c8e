"""`fresh_batch_evaluation`: every accepted batch scored by the live models before any model trains on it.

A labeled batch that lands is production data with ground truth that no model has seen: it runs in
the batch's own ingest run, right after `labeled_batch` (its blocking checks passed), and the dataset
build waits for ingest runs to finish (sensors/dataset.py), so no model is trained on a batch before
the batch has been scored. The champion (and the canary, when a gray release is under way) are
validated on all of the batch's accepted images, preprocessed as `processed_images` will preprocess
them (the same per-image cache: the dataset build later decodes nothing twice). A model whose
training lineage (its `batches` tag) includes this batch is never scored on it.

The canary's verdict on the batch (the promotion gate's rule, canary vs champion) is the evidence
`model_rollout` acts on; `fresh_data_drift` warns when the champion does worse on the batch than on
its own offline validation, and a drift is a retraining trigger (`retrain_gate`).
"""

import json
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from resources.artifact_store import ArtifactStore, Built
from resources.mlflow_tracking import MLflowResource
from resources.model_policy import ModelPolicy
from resources.trainer import YoloWorkspace
from yolo_assets.assets.dataset import ProcessedImagesConfig
from yolo_assets.assets.evaluation import HEADLINE, EvaluationConfig
from yolo_assets.assets.ingest import batch_partitions, labeled_batch, read_batch_manifest
from yolo_assets.assets.keys import CODE_VERSIONS, FRESH_BATCH_EVALUATION, LABELED_BATCH, REGISTERED_MODEL, TRAINED_WEIGHTS, identity
from yolo_assets.assets.materializations import data_version_of, latest_materialization
from yolo_assets.assets.training import read_training_summary, step_device, weights_path
from yolo_assets.core.fileio import atomic_write_bytes, link_or_copy
from yolo_assets.core.versioning import cache_key, encoded_manifest
from yolo_assets.data.batch_manifest import BatchItem, BatchManifest
from yolo_assets.data.dataset_files import preprocess_missing
from yolo_assets.data.dataset_manifest import label_text
from yolo_assets.data.preprocess import cached_image, preprocess_namespace
from yolo_assets.detector.checkpoint import checkpoint_class_names
from yolo_assets.detector.validate import validate_detector
from yolo_assets.release.gate import promotion_decision
from yolo_assets.release.rollout import CANARY, CHAMPION, RolloutStore

SCORES = "scores.json"
HOLDS, REGRESSES = "holds", "regresses"

FRESH_DATA_DRIFT = dg.AssetCheckSpec(
    "fresh_data_drift",
    asset=FRESH_BATCH_EVALUATION,
    blocking=False,
    description="Warns when the champion's mAP50-95 on the fresh batch is more than drift_tolerance below its offline validation figure.",
)


def batch_version(instance: dg.DagsterInstance, batch: str) -> str | None:
    """The data version of the batch partition's latest materialisation (this run's, in an ingest run)."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=LABELED_BATCH, asset_partitions=[batch]), limit=1).records
    return data_version_of(records[0].asset_materialization) if records else None


def live_models(mlflow: MLflowResource, store: ArtifactStore, batch: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The models to score, by route (`champion`, `canary`): registry version, weights version and
    offline mAP50-95; and, by route, why a live model is not scored (trained on this batch, weights gone)."""
    client = mlflow.client()
    state = RolloutStore(client, mlflow.model_name).read()
    models, not_scored = {}, {}
    for route, version in ((CHAMPION, state.champion), (CANARY, state.canary)):
        if version is None:
            continue
        tags = client.get_model_version(mlflow.model_name, version).tags
        lineage = json.loads(tags.get("batches") or "{}")
        if batch in lineage:
            not_scored[route] = f"version {version} was trained on batch {batch}: it is never scored on its own training data"
        elif not tags.get("weights_version") or not store.exists(TRAINED_WEIGHTS, tags["weights_version"]):
            not_scored[route] = f"version {version}: its weights are not in the artifact store"
        else:
            models[route] = {"version": version, "weights_version": tags["weights_version"], "offline_mAP50-95": float(tags.get("mAP50-95", "nan"))}
    return models, not_scored


def write_scoring_folder(folder: Path, items: list[BatchItem], image_root: Path, class_names: list[str]) -> tuple[Path, int]:
    """An ultralytics val set of the batch for a model predicting `class_names`: its images (links into
    the preprocessing cache) and labels in that model's class ids. Boxes of classes the model does not
    know are left out (returned: how many), they cannot count for or against it."""
    class_id = {name: i for i, name in enumerate(class_names)}
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    unknown, paths = 0, []
    for item in items:
        sha = item["image_sha"]
        link_or_copy(cached_image(image_root, sha), folder / "images" / f"{sha}.jpg")
        labels = [[class_id[box[0]], *box[1:]] for box in item["boxes"] if box[0] in class_id]
        unknown += len(item["boxes"]) - len(labels)
        (folder / "labels" / f"{sha}.txt").write_text(label_text(labels))
        paths.append(f"{folder / 'images' / sha}.jpg\n")
    (folder / "val.txt").write_text("".join(paths))
    data = {"train": "val.txt", "val": "val.txt", "nc": len(class_names), "names": dict(enumerate(class_names))}
    (folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder / "data.yaml", unknown


def score_batch(
    store: ArtifactStore, workspace: YoloWorkspace, config: EvaluationConfig, manifest: BatchManifest,
    models: dict[str, dict[str, Any]], run_id: str,
) -> dict[str, Any]:
    """Each model's metrics on the batch's accepted images, preprocessed through the shared cache."""
    preprocess = ProcessedImagesConfig()
    items = manifest["items"]
    _, decoded = preprocess_missing(store, [item["image_sha"] for item in items], preprocess.preprocess_settings(), preprocess.workers)
    image_root = store.object_root(preprocess_namespace(preprocess.preprocess_settings()))
    workdir = workspace.workdir("fresh", run_id)
    scores: dict[str, Any] = {}
    try:
        for route, model in models.items():
            weights = weights_path(store, model["weights_version"])
            data_yaml, unknown = write_scoring_folder(workdir / f"{route}-data", items, image_root, checkpoint_class_names(weights))
            imgsz = config.imgsz or int(read_training_summary(store, model["weights_version"])["recipe"]["imgsz"])
            metrics = validate_detector(weights, data_yaml, workdir / route, imgsz=imgsz, batch=config.batch, device=config.device, plots=False)
            scores[route] = {**model, **metrics, "imgsz": imgsz, "boxes_of_unknown_classes": unknown}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"models": scores, "num_processed": decoded}


def canary_verdict(scores: dict[str, Any], policy: ModelPolicy) -> tuple[str, list[str]]:
    """`holds` or `regresses` by the promotion gate's rule (canary vs champion on this batch); "" when
    the batch was not scored by both."""
    if CHAMPION not in scores or CANARY not in scores:
        return "", []
    passed, reasons = promotion_decision({"challenger": scores[CANARY], "champion": scores[CHAMPION]}, policy)
    return (HOLDS if passed else REGRESSES), reasons


def drift_result(scores: dict[str, Any], policy: ModelPolicy) -> dg.AssetCheckResult:
    champion = scores.get(CHAMPION)
    if champion is None:
        return dg.AssetCheckResult(passed=True, metadata={"reason": "no champion scored on this batch"})
    offline, fresh = champion["offline_mAP50-95"], champion["mAP50-95"]
    drifted = fresh < offline - policy.drift_tolerance
    return dg.AssetCheckResult(
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "champion_version": champion["version"],
            "fresh_mAP50-95": round(fresh, 4),
            "offline_mAP50-95": round(offline, 4),
            "drift_tolerance": policy.drift_tolerance,
            "reason": f"champion mAP50-95 {fresh:.3f} on the batch vs {offline:.3f} offline (tolerance {policy.drift_tolerance})",
        },
    )


def scores_metadata(scores: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for route, score in scores.items():
        metadata[f"{route}_version"] = score["version"]
        metadata.update({f"{route}_{name}": round(score[name], 4) for name in HEADLINE})
        metadata[f"{route}_per_class_ap50_95"] = dg.MetadataValue.json({k: round(v["ap50_95"], 4) for k, v in score["per_class"].items()})
    return metadata


def scored_batch(
    store: ArtifactStore, workspace: YoloWorkspace, config: EvaluationConfig, batch: str, version: str,
    models: dict[str, dict[str, Any]], not_scored: dict[str, str], run_id: str,
) -> Built[dict[str, Any]]:
    """The live models' scores on every accepted image of the batch (none when no model is live), and
    the scores file the artifact holds."""
    manifest = read_batch_manifest(store, version)
    scored = score_batch(store, workspace, config, manifest, models, run_id) if models else {}
    result = {"batch": batch, "batch_version": version, "num_images": len(manifest["items"]), "scores": scored.get("models", {}),
              "not_scored": not_scored, "num_processed": scored.get("num_processed", 0)}
    encoded_version, encoded = encoded_manifest(result)
    return Built(encoded_version, result, lambda staging: atomic_write_bytes(staging / SCORES, encoded))


def log_scores(log: dg.DagsterLogManager, batch: str, result: dict[str, Any], verdict: str, reasons: list[str]) -> None:
    for route, why in result["not_scored"].items():
        log.info(f"{route} not scored on batch {batch}: {why}")
    for route, score in result["scores"].items():
        log.info(f"{route} version {score['version']} on fresh batch {batch}: mAP50={score['mAP50']:.3f} mAP50-95={score['mAP50-95']:.3f}")
    if verdict:
        log.info(f"canary {verdict} on batch {batch}: {'; '.join(reasons)}")


@dg.asset(
    **identity(FRESH_BATCH_EVALUATION),
    partitions_def=batch_partitions,
    deps=[labeled_batch],
    check_specs=[FRESH_DATA_DRIFT],
    description="The champion (and canary) scored on all of a fresh batch's accepted images, before any model trains on it.",
)
def fresh_batch_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    artifact_store: ArtifactStore,
    mlflow: MLflowResource,
    model_policy: ModelPolicy,
    yolo_workspace: YoloWorkspace,  # ultralytics is imported here too: its settings folder comes first
) -> dg.MaterializeResult:
    batch = context.partition_key
    version = batch_version(context.instance, batch)
    if version is None:
        raise dg.Failure(f"batch {batch} has never been ingested: nothing to score", allow_retries=False)
    # Nothing registered yet: skip without opening the registry (an ingest run stays cheap).
    registered = latest_materialization(context.instance, REGISTERED_MODEL) is not None
    models, not_scored = live_models(mlflow, artifact_store, batch) if registered else ({}, {CHAMPION: "no champion yet"})
    device = step_device(config.device, FRESH_BATCH_EVALUATION.path[-1], context.log)
    key = cache_key(
        CODE_VERSIONS[FRESH_BATCH_EVALUATION],
        {"batch": version, "models": {route: (m["version"], m["weights_version"]) for route, m in models.items()}},
        {**config.model_dump(), "device": device},
    )

    stored = artifact_store.cached(
        FRESH_BATCH_EVALUATION, key,
        lambda: nullcontext(scored_batch(artifact_store, yolo_workspace, config, batch, version, models, not_scored, context.run.run_id)),
        load=lambda v: artifact_store.read_json(FRESH_BATCH_EVALUATION, v, SCORES),
    )
    result, scores = stored.summary, stored.summary["scores"]
    verdict, reasons = canary_verdict(scores, model_policy)
    log_scores(context.log, batch, result, verdict, reasons)
    drift = drift_result(scores, model_policy)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(stored.version),
        metadata={
            "batch_version": version,
            "num_images": result["num_images"],
            "scored": bool(scores),
            # Images decoded into the preprocessing cache here: the dataset build that includes the batch reuses them.
            "num_processed": result["num_processed"] if not stored.cache_hit else 0,
            **scores_metadata(scores),
            "not_scored": dg.MetadataValue.json(result["not_scored"]),
            "canary_verdict": verdict,
            "canary_verdict_reasons": dg.MetadataValue.json(reasons),
            "drift": not drift.passed,
            **stored.metadata(),
        },
        check_results=[drift],
    )
