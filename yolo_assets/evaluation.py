"""`evaluation_report`: the new weights and the current champion, validated on the SAME val split.

Writes metrics.json, a Markdown report and the plots as an artifact, shows the report (plots embedded)
on the asset page, and logs it to the training's MLflow run. Data version = hash of metrics.json.
"""

import base64
import io
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from PIL import Image

from resources.artifact_store import ArtifactStore
from resources.mlflow_tracking import MLflowResource
from resources.trainer import YoloWorkspace
from yolo_assets.retries import TRANSIENT_RETRY
from yolo_assets.automation import FOLLOW_UPSTREAM
from yolo_assets.detector import resolve_device, validate_detector
from yolo_assets.fileio import atomic_write_bytes
from yolo_assets.processed_images import PROCESSED_IMAGES
from yolo_assets.training import TRAINED_WEIGHTS, TRAINING_SUMMARY, champion_weights, trained_weights, weights_path
from yolo_assets.versioning import cache_key, encoded_manifest, latest_data_version

EVALUATION_REPORT = "evaluation_report"
EVALUATION_CODE_VERSION = "1"
REPORT_PLOTS = ("BoxPR_curve.png", "confusion_matrix.png")
HEADLINE = ("mAP50", "mAP50-95", "precision", "recall")


class EvaluationConfig(dg.Config):
    imgsz: int = 0
    """Validation image size; 0 = the size the weights were trained at."""
    batch: int = 16
    device: str = "auto"


def _delta(new: float, old: float | None) -> str:
    return "" if old is None else f"{new - old:+.3f}"


def render_report(metrics: dict[str, Any], plot_links: dict[str, str]) -> str:
    """Markdown: headline metrics, per-class AP (challenger vs champion), PR curve, confusion matrix."""
    challenger, champion = metrics["challenger"], metrics["champion"]
    lines = [
        f"# Evaluation of weights `{metrics['weights_version'][:12]}`",
        "",
        f"Val split of dataset `{metrics['dataset_version'][:12]}` ({metrics['num_val_images']} images). "
        + (
            f"Champion: model version {metrics['champion_model_version']} (weights `{metrics['champion_weights_version'][:12]}`), evaluated on the same split."
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
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def evaluate(
    store: ArtifactStore,
    workspace: YoloWorkspace,
    config: EvaluationConfig,
    weights_version: str,
    summary: dict[str, Any],
    champion_version: str | None,
    champion_model_version: str | None,
    run_id: str,
) -> tuple[dict[str, Any], Path]:
    data_yaml = store.local_path(PROCESSED_IMAGES, summary["dataset_version"]) / "data.yaml"
    settings = {"imgsz": config.imgsz or summary["recipe"]["imgsz"], "batch": config.batch, "device": resolve_device(config.device)}
    workdir = workspace.workdir("eval", run_id)
    challenger = validate_detector(weights_path(store, weights_version), data_yaml, workdir / "challenger", plots=True, **settings)
    champion = None
    if champion_version:
        champion = validate_detector(weights_path(store, champion_version), data_yaml, workdir / "champion", plots=False, **settings)
    val_list = data_yaml.parent / "val.txt"
    metrics = {
        "weights_version": weights_version,
        "dataset_version": summary["dataset_version"],
        "num_val_images": sum(1 for line in val_list.read_text().splitlines() if line.strip()),
        "champion_weights_version": champion_version,
        "champion_model_version": champion_model_version,
        "settings": settings,
        "challenger": challenger,
        "champion": champion,
    }
    return metrics, workdir


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    deps=[trained_weights],
    code_version=EVALUATION_CODE_VERSION,
    group_name="model",
    automation_condition=FOLLOW_UPSTREAM,
    kinds={"pytorch", "mlflow"},
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
    summary = artifact_store.read_json(TRAINED_WEIGHTS, weights_version, TRAINING_SUMMARY)
    champion_model = mlflow.alias_version("champion")
    champion_version = champion_weights(champion_model, artifact_store)
    if champion_version == weights_version:
        champion_version = None  # these weights are the champion already: nothing to compare against
    key = cache_key(
        EVALUATION_CODE_VERSION,
        {"weights": weights_version, "dataset": summary["dataset_version"], "champion": champion_version},
        {**config.model_dump(), "device": resolve_device(config.device)},  # a CPU result is not a GPU one
    )
    version = artifact_store.lookup_cache_key(EVALUATION_REPORT, key)
    cache_hit = version is not None
    if version is not None:
        metrics = artifact_store.read_json(EVALUATION_REPORT, version, "metrics.json")
    else:
        metrics, workdir = evaluate(
            artifact_store, yolo_workspace, config, weights_version, summary, champion_version,
            champion_model.version if champion_model and champion_version else None, context.run.run_id,
        )
        version, encoded = encoded_manifest(metrics)
        if not artifact_store.exists(EVALUATION_REPORT, version):
            with artifact_store.write_artifact(EVALUATION_REPORT, version) as staging:
                for name in REPORT_PLOTS:
                    if (workdir / "challenger" / name).exists():
                        shutil.copyfile(workdir / "challenger" / name, staging / name)
                atomic_write_bytes(staging / "metrics.json", encoded)
                report = render_report(metrics, {name: name for name in REPORT_PLOTS if (staging / name).exists()})
                (staging / "report.md").write_text(report)
        shutil.rmtree(workdir, ignore_errors=True)
    stored = artifact_store.local_path(EVALUATION_REPORT, version)
    if not cache_hit:
        client = mlflow.client()
        for name in HEADLINE:
            client.log_metric(summary["mlflow_run_id"], f"eval/{name}", metrics["challenger"][name])
        for path in sorted(stored.iterdir()):
            client.log_artifact(summary["mlflow_run_id"], str(path), artifact_path="evaluation")
        artifact_store.record_cache_key(EVALUATION_REPORT, key, version)
    embedded = {name: inline_png(stored / name) for name in REPORT_PLOTS if (stored / name).exists()}
    challenger, champion = metrics["challenger"], metrics["champion"]
    context.log.info(
        f"weights {weights_version[:12]}: mAP50={challenger['mAP50']:.3f} mAP50-95={challenger['mAP50-95']:.3f}"
        + (f" (champion mAP50-95={champion['mAP50-95']:.3f})" if champion else " (no champion to compare)")
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **{name: round(challenger[name], 4) for name in HEADLINE},
            "champion_mAP50-95": round(champion["mAP50-95"], 4) if champion else None,
            "per_class_ap50_95": dg.MetadataValue.json({k: round(v["ap50_95"], 4) for k, v in challenger["per_class"].items()}),
            "report": dg.MetadataValue.md(render_report(metrics, embedded)),
            "weights_version": weights_version,
            "dataset_version": metrics["dataset_version"],
            "cache_hit": cache_hit,
            "mlflow_run_id": summary["mlflow_run_id"],
            "path": dg.MetadataValue.path(str(stored)),
        },
    )
