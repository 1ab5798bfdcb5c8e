"""`registered_model`: an MLflow Model Registry version with lineage tags, promoted by the gate.

The `promotion_gate` check (blocking) passes when the challenger is not worse than the champion on the
same val split (mAP50-95 within a tolerance, no class's AP dropping too far), or, with no champion yet,
when its mAP50 clears a floor. Pass: the version is offered to `model_rollout` (canary, then
champion on fresh-batch evidence). Fail: alias `challenger`, and the champion stays.
"""

import json
from typing import TYPE_CHECKING

import dagster as dg

from resources.artifact_store import ArtifactStore
from resources.mlflow_tracking import MLflowResource
from resources.model_policy import ModelPolicy
from resources.trainer import YoloWorkspace
from yolo_assets.assets.automation import FOLLOW_UPSTREAM
from yolo_assets.assets.dataset import read_dataset_manifest
from yolo_assets.assets.evaluation import EvaluationMetrics, evaluation_report, read_evaluation_metrics
from yolo_assets.assets.keys import (
    EVALUATION_REPORT,
    REGISTERED_MODEL,
    code_versions_through,
    identity,
)
from yolo_assets.assets.materializations import latest_data_version
from yolo_assets.assets.training import read_training_summary, weights_path
from yolo_assets.core.hashing import hash_json
from yolo_assets.data.retractions import retracted_batches_of
from yolo_assets.detector.lifecycle import TrainingSummary
from yolo_assets.release.gate import promotion_decision

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

PROMOTION_GATE = dg.AssetCheckSpec(
    "promotion_gate",
    asset=REGISTERED_MODEL,
    blocking=True,
    description="The challenger is not worse than the champion on the same val split (or clears the first-model floor).",
)


def find_version(mlflow: MLflowResource, weights_version: str) -> "ModelVersion | None":
    """The registry version already made from these weights: registration is idempotent."""
    versions = mlflow.client().search_model_versions(
        f"name='{mlflow.model_name}' and tags.weights_version='{weights_version}'"
    )
    return max(versions, key=lambda v: int(v.version)) if versions else None


def champion_retracted_batches(mlflow: MLflowResource, store: ArtifactStore, metrics: EvaluationMetrics) -> list[str]:
    """The batches the champion compared in `metrics` learned from that the challenger's dataset retracted."""
    if not metrics["champion_model_version"]:
        return []
    champion = mlflow.client().get_model_version(mlflow.model_name, metrics["champion_model_version"])
    retracted = read_dataset_manifest(store, metrics["dataset_version"]).get("retracted_batches", {})
    records = [{"batch": batch, "data_version": version} for batch, version in retracted.items()]
    return retracted_batches_of(json.loads(champion.tags.get("batches", "{}")), records)


def retracted_champion_reasons(metrics: EvaluationMetrics, tainted: list[str]) -> list[str]:
    """The gate's note when the champion it compared with learned from batches since retracted."""
    if not tainted:
        return []
    return [f"the champion (version {metrics['champion_model_version']}) was trained on batches since retracted "
            f"({', '.join(tainted)}); both were scored on this dataset's val split, which leaves them out"]


def lineage_tags(summary: TrainingSummary, metrics: EvaluationMetrics, evaluation_version: str, run_id: str) -> dict[str, str]:
    """The registry version's tags: which data, code, training and evaluation made it, and its scores."""
    return {
        "weights_version": metrics["weights_version"],
        "dataset_version": metrics["dataset_version"],
        "batches": json.dumps(summary["input_batches"], sort_keys=True),
        "batch_names": ",".join(sorted(summary["input_batches"])),
        "training_dagster_run_id": summary["dagster_run_id"],
        "dagster_run_id": run_id,
        "evaluation_version": evaluation_version,
        "code_versions": json.dumps(code_versions_through(REGISTERED_MODEL), sort_keys=True),
        "mAP50": f"{metrics['challenger']['mAP50']:.4f}",
        "mAP50-95": f"{metrics['challenger']['mAP50-95']:.4f}",
    }


def register(
    mlflow: MLflowResource, store: ArtifactStore, summary: TrainingSummary, metrics: EvaluationMetrics, tags: dict[str, str]
) -> "ModelVersion":
    from resources.mlflow_tracking import import_mlflow

    mlflow_api = import_mlflow()
    from yolo_assets.detector.serving import log_detector

    weights = weights_path(store, metrics["weights_version"])
    with mlflow.activated(), mlflow_api.start_run(run_id=summary["mlflow_run_id"]):
        number = log_detector(weights, mlflow.model_name)
    client = mlflow.client()
    for name, value in tags.items():
        client.set_model_version_tag(mlflow.model_name, number, name, value)
    return client.get_model_version(mlflow.model_name, number)


def record_gate(mlflow: MLflowResource, version: str, passed: bool, reasons: list[str]) -> str:
    """The gate's verdict on the registry version, and the version's alias: `champion` when it is the
    champion already; a passed version is offered to model_rollout (canary first, or champion at once);
    a refused one is the `challenger`, which serves no traffic."""
    champion = mlflow.alias_version("champion")
    client = mlflow.client()
    alias = "champion" if champion is not None and champion.version == version else "rollout candidate" if passed else "challenger"
    if alias == "challenger":
        client.set_registered_model_alias(mlflow.model_name, alias, version)
    client.set_model_version_tag(mlflow.model_name, version, "promotion_gate", "passed" if passed else "failed")
    client.set_model_version_tag(mlflow.model_name, version, "promotion_reasons", "; ".join(reasons))
    return alias


def promotion_gate_result(metrics: EvaluationMetrics, passed: bool, reasons: list[str], alias: str, tainted: list[str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=PROMOTION_GATE.name,
        passed=passed,
        metadata={
            "reasons": dg.MetadataValue.json(reasons),
            "challenger_mAP50-95": round(metrics["challenger"]["mAP50-95"], 4),
            "champion_mAP50-95": round(metrics["champion"]["mAP50-95"], 4) if metrics["champion"] else None,
            "alias": alias,
            "champion_trained_on_retracted": dg.MetadataValue.json(tainted),
        },
    )


@dg.asset(
    **identity(REGISTERED_MODEL),
    deps=[evaluation_report],
    check_specs=[PROMOTION_GATE],
    automation_condition=FOLLOW_UPSTREAM,
    description="MLflow registry version of the evaluated weights; offered to model_rollout when the promotion gate passes.",
)
def registered_model(
    context: dg.AssetExecutionContext,
    artifact_store: ArtifactStore,
    mlflow: MLflowResource,
    model_policy: ModelPolicy,
    yolo_workspace: YoloWorkspace,  # ultralytics is imported here too: its settings folder comes first
) -> dg.MaterializeResult:
    evaluation_version = latest_data_version(context.instance, EVALUATION_REPORT)
    if evaluation_version is None:
        raise dg.Failure("evaluation_report has never been materialised: nothing to register", allow_retries=False)
    metrics = read_evaluation_metrics(artifact_store, evaluation_version)
    summary = read_training_summary(artifact_store, metrics["weights_version"])
    passed, reasons = promotion_decision(metrics, model_policy)
    tainted = champion_retracted_batches(mlflow, artifact_store, metrics)
    reasons += retracted_champion_reasons(metrics, tainted)
    version = find_version(mlflow, metrics["weights_version"])
    already_registered = version is not None
    if version is None:
        version = register(mlflow, artifact_store, summary, metrics, lineage_tags(summary, metrics, evaluation_version, context.run.run_id))
    alias = record_gate(mlflow, version.version, passed, reasons)
    context.log.info(f"{mlflow.model_name} version {version.version} -> alias {alias}: {'; '.join(reasons)}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hash_json({"model": mlflow.model_name, "version": version.version, "alias": alias})),
        metadata={
            "model_name": mlflow.model_name,
            "model_version": int(version.version),
            "alias": alias,
            "model_uri": f"models:/{mlflow.model_name}/{version.version}",
            "already_registered": already_registered,
            "promotion_gate_passed": passed,
            "weights_version": metrics["weights_version"],
            "dataset_version": metrics["dataset_version"],
            "evaluation_version": evaluation_version,
            "mAP50": round(metrics["challenger"]["mAP50"], 4),
            "mAP50-95": round(metrics["challenger"]["mAP50-95"], 4),
        },
        check_results=[promotion_gate_result(metrics, passed, reasons, alias, tainted)],
    )
