"""`evaluation_report`: the new weights and the current champion, validated on the SAME val split.

Writes metrics.json, a Markdown report and the plots as an artifact, shows the report (plots embedded)
on the asset page, and logs it to the training's MLflow run. Data version = hash of metrics.json.
"""

import base64
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict, cast

import dagster as dg
from PIL import Image

from resources.artifact_store import ArtifactStore, Built
from resources.mlflow_tracking import MLflowResource
from resources.trainer import YoloWorkspace
from yolo_assets.assets.automation import FOLLOW_UPSTREAM
from yolo_assets.assets.dataset import local_dataset
from yolo_assets.assets.keys import CODE_VERSIONS, EVALUATION_REPORT, TRAINED_WEIGHTS, identity
from yolo_assets.assets.materializations import latest_data_version
from yolo_assets.assets.training import champion_weights, read_training_summary, step_device, trained_weights, weights_path
from yolo_assets.core.fileio import atomic_write_bytes
from yolo_assets.core.versioning import cache_key, encoded_manifest
from yolo_assets.detector.lifecycle import TrainingSummary, log_metrics
from yolo_assets.detector.validate import validate_detector

METRICS = "metrics.json"


class EvaluationMetrics(TypedDict):
    """`metrics.json`, the evaluation report's data: both models scored on the same val split. Written by
    `evaluate`, read by the promotion gate and registration through `read_evaluation_metrics`."""

    weights_version: str
    dataset_version: str
    num_val_images: int
    champion_weights_version: str | None
    champion_model_version: str | None
    settings: dict[str, Any]
    """imgsz, batch and device of the validation"""
    challenger: dict[str, Any]
    """validate_detector's scores: mAP50, mAP50-95, precision, recall, per_class"""
    champion: dict[str, Any] | None


def read_evaluation_metrics(store: ArtifactStore, version: str) -> EvaluationMetrics:
    return cast(EvaluationMetrics, store.read_json(EVALUATION_REPORT, version, METRICS))
REPORT_PLOTS = ("BoxPR_curve.png", "confusion_matrix.png")
HEADLINE = ("mAP50", "mAP50-95", "precision", "recall")


class EvaluationConfig(dg.Config):
    imgsz: int = 0
    """Validation image size; 0 = the size the weights were trained at."""
    batch: int = 16
    device: str = "auto"


def _delta(new: float, old: float | None) -> str:
    return "" if old is None else f"{new - old:+.3f}"


def render_report(metrics: EvaluationMetrics, plot_links: dict[str, str]) -> str:
    """Markdown: headline metrics, per-class AP (challenger vs champion), PR curve, confusion matrix."""
    challenger, champion = metrics["challenger"], metrics["champion"]
    lines = [
        f"# Evaluation of weights `{metrics['weights_version'][:12]}`",
        "",
        f"Val split of dataset `{metrics['dataset_version'][:12]}` ({metrics['num_val_images']} images). "
        + (
            f"Champion: model version {metrics['champion_model_version']} (weights `{(metrics['champion_weights_version'] or '')[:12]}`), evaluated on the same split."
            if champion
            else "No champion yet."
        ),
        "",
        "| metric | challenger | champion | delta |",
        "|---|---|---|---|",
    ]
    for name in HEADLINE:
        old = champion[name] if champion else None
        lines.append(f"| {name} | {challenger[name]:.3f} | {'' if old is None else f'{old:.3f}'} | {_delta(challenger[name], old)} |")
    lines += ["", "| class | AP50 | AP50-95 | champion AP50-95 | delta |", "|---|---|---|---|---|"]
    for name, values in challenger["per_class"].items():
        old = champion["per_class"].get(name, {}).get("ap50_95") if champion else None
        lines.append(
            f"| {name} | {values['ap50']:.3f} | {values['ap50_95']:.3f} | {'' if old is None else f'{old:.3f}'} | {_delta(values['ap50_95'], old)} |"
        )
    for title, name in (("Precision-recall curve", "BoxPR_curve.png"), ("Confusion matrix", "confusion_matrix.png")):
        if name in plot_links:
            lines += ["", f"## {title}", "", f"![{title}]({plot_links[name]})"]
    return "\n".join(lines) + "\n"


def inline_png(path: Path, width: int = 720) -> str:
    """A downscaled data URI, so the plot shows on the Dagster asset page without leaving it."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@contextmanager
def evaluate(
    store: ArtifactStore,
    workspace: YoloWorkspace,
    config: EvaluationConfig,
    weights_version: str,
    summary: TrainingSummary,
    champion_version: str | None,
    champion_model_version: str | None,
    run_id: str,
    device: str,
) -> Iterator[Built[EvaluationMetrics]]:
    """Validate the challenger (with plots) and the champion on the same val split, on `device` (as the
    asset's `step_device` checked it); yields metrics.json's version and content, and how to store them
    with the plots and the Markdown report."""
    data_yaml = local_dataset(store, summary["dataset_version"])
    imgsz = config.imgsz or summary["recipe"]["imgsz"]
    settings = {"imgsz": imgsz, "batch": config.batch, "device": device}
    workdir = workspace.workdir("eval", run_id)

    def validate(weights: str, name: str, plots: bool) -> dict[str, Any]:
        return validate_detector(weights_path(store, weights), data_yaml, workdir / name, imgsz=imgsz, batch=config.batch, device=device, plots=plots)

    challenger = validate(weights_version, "challenger", plots=True)
    champion = validate(champion_version, "champion", plots=False) if champion_version else None
    val_list = data_yaml.parent / "val.txt"
    metrics: EvaluationMetrics = {
        "weights_version": weights_version,
        "dataset_version": summary["dataset_version"],
        "num_val_images": sum(1 for line in val_list.read_text().splitlines() if line.strip()),
        "champion_weights_version": champion_version,
        "champion_model_version": champion_model_version,
        "settings": settings,
        "challenger": challenger,
        "champion": champion,
    }
    version, encoded = encoded_manifest(metrics)

    def write(staging: Path) -> None:
        for name in REPORT_PLOTS:
            if (workdir / "challenger" / name).exists():
                shutil.copyfile(workdir / "challenger" / name, staging / name)
        atomic_write_bytes(staging / METRICS, encoded)
        (staging / "report.md").write_text(render_report(metrics, {name: name for name in REPORT_PLOTS if (staging / name).exists()}))

    yield Built(version, metrics, write)
    shutil.rmtree(workdir, ignore_errors=True)


def publish_evaluation(store: ArtifactStore, mlflow: MLflowResource, mlflow_run_id: str, version: str, metrics: EvaluationMetrics) -> None:
    """The headline metrics and the stored report go to the training's MLflow run."""
    client = mlflow.client()
    log_metrics(client, mlflow_run_id, {f"eval/{name}": metrics["challenger"][name] for name in HEADLINE})
    for path in sorted(store.local_path(EVALUATION_REPORT, version).iterdir()):
        client.log_artifact(mlflow_run_id, str(path), artifact_path="evaluation")


def report_metadata(metrics: EvaluationMetrics, stored: Path) -> dict[str, Any]:
    """The headline numbers, per-class AP and the Markdown report (its plots inline) an evaluation shows."""
    challenger, champion = metrics["challenger"], metrics["champion"]
    embedded = {name: inline_png(stored / name) for name in REPORT_PLOTS if (stored / name).exists()}
    return {
        **{name: round(challenger[name], 4) for name in HEADLINE},
        "champion_mAP50-95": round(champion["mAP50-95"], 4) if champion else None,
        "per_class_ap50_95": dg.MetadataValue.json({k: round(v["ap50_95"], 4) for k, v in challenger["per_class"].items()}),
        "report": dg.MetadataValue.md(render_report(metrics, embedded)),
        "weights_version": metrics["weights_version"],
        "dataset_version": metrics["dataset_version"],
    }


@dg.asset(
    **identity(EVALUATION_REPORT),
    deps=[trained_weights],
    automation_condition=FOLLOW_UPSTREAM,
    description="mAP50, mAP50-95, P, R, per-class AP, PR curve and confusion matrix, versus the champion on the same val split.",
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    artifact_store: ArtifactStore,
    mlflow: MLflowResource,
    yolo_workspace: YoloWorkspace,
) -> dg.MaterializeResult:
    weights_version = latest_data_version(context.instance, TRAINED_WEIGHTS)
    if weights_version is None:
        raise dg.Failure("trained_weights has never been materialised: nothing to evaluate", allow_retries=False)
    summary = read_training_summary(artifact_store, weights_version)
    champion_model = mlflow.alias_version("champion")
    champion_version = champion_weights(champion_model, artifact_store)
    if champion_version == weights_version:
        champion_version = None  # these weights are the champion already: nothing to compare against
    device = step_device(config.device, "evaluation_report", context.log)
    key = cache_key(
        CODE_VERSIONS[EVALUATION_REPORT],
        {"weights": weights_version, "dataset": summary["dataset_version"], "champion": champion_version},
        {**config.model_dump(), "device": device},  # a CPU result is not a GPU one
    )
    report = artifact_store.cached(
        EVALUATION_REPORT,
        key,
        build=lambda: evaluate(
            artifact_store, yolo_workspace, config, weights_version, summary, champion_version,
            champion_model.version if champion_model and champion_version else None, context.run.run_id, device,
        ),
        load=lambda version: read_evaluation_metrics(artifact_store, version),
        publish=lambda version, metrics: publish_evaluation(artifact_store, mlflow, summary["mlflow_run_id"], version, metrics),
    )
    metrics = report.summary
    challenger, champion = metrics["challenger"], metrics["champion"]
    context.log.info(
        f"weights {weights_version[:12]}: mAP50={challenger['mAP50']:.3f} mAP50-95={challenger['mAP50-95']:.3f}"
        + (f" (champion mAP50-95={champion['mAP50-95']:.3f})" if champion else " (no champion to compare)")
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(report.version),
        metadata={**report_metadata(metrics, artifact_store.local_path(EVALUATION_REPORT, report.version)), **report.metadata(),
                  "mlflow_run_id": summary["mlflow_run_id"]},
    )
