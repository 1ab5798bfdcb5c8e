"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here."""

import os
from pathlib import Path

import dagster as dg

from resources.artifact_store import LocalArtifactStore
from resources.dataset_policy import DatasetPolicy
from resources.landing_zone import LocalLandingZone
from resources.mlflow_tracking import MLflowResource
from resources.model_policy import ModelPolicy
from resources.trainer import YoloWorkspace
from resources.alerts import AlertNotifier
from sensors.failure_alerts import run_failure_alert
from sensors.labeled_data import labeled_data_sensor
from yolo_assets.automation import retrain_gate
from yolo_assets.batches import labeled_batch
from yolo_assets.evaluation import evaluation_report
from yolo_assets.home import (
    hash_cache_path,
    home_dir,
    landing_dir,
    mlflow_dir,
    mlflow_tracking_uri,
    scratch_dir,
    store_dir,
)
from yolo_assets.processed_images import processed_images
from yolo_assets.registry import registered_model
from yolo_assets.training import trained_weights

MODEL_ASSETS = [trained_weights, evaluation_report, registered_model]

model_automation_sensor = dg.AutomationConditionSensorDefinition(
    "model_automation_sensor",
    target=dg.AssetSelection.assets(*MODEL_ASSETS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Retrains, evaluates and registers when processed_images gets a new data version.",
)


def build_definitions(home: Path, **resource_overrides: dg.ConfigurableResource) -> dg.Definitions:
    """Everything wired to one home folder (the embedded default); MLflow and the retrain policy
    can be pointed elsewhere through environment variables (see the README)."""
    resources: dict[str, dg.ConfigurableResource] = {
        "landing_zone": LocalLandingZone(root=str(landing_dir(home)), hash_cache_path=str(hash_cache_path(home))),
        "artifact_store": LocalArtifactStore(root=str(store_dir(home))),
        "mlflow": MLflowResource(
            tracking_uri=os.environ.get("YOLO_ASSETS_MLFLOW_TRACKING_URI") or mlflow_tracking_uri(home),
            artifact_root=str(mlflow_dir(home) / "artifacts"),
            model_name=os.environ.get("YOLO_ASSETS_MODEL_NAME", "yolo-defect-detector"),
        ),
        "model_policy": ModelPolicy(
            min_new_images=int(os.environ.get("YOLO_ASSETS_MIN_NEW_IMAGES", "1")),
            first_model_min_map50=float(os.environ.get("YOLO_ASSETS_FIRST_MODEL_MIN_MAP50", "0.3")),
        ),
        "dataset_policy": DatasetPolicy(
            new_class_policy=os.environ.get("YOLO_ASSETS_NEW_CLASS_POLICY", "extend"),  # type: ignore[arg-type]
            label_conflicts=os.environ.get("YOLO_ASSETS_LABEL_CONFLICTS", "quarantine"),  # type: ignore[arg-type]
            missing_label=os.environ.get("YOLO_ASSETS_MISSING_LABEL", "background"),  # type: ignore[arg-type]
            honour_export_split=os.environ.get("YOLO_ASSETS_HONOUR_EXPORT_SPLIT", "false").lower() in ("1", "true", "yes"),
        ),
        # A webhook URL carries its token: it is read from the environment through EnvVar, never logged.
        "alert_notifier": AlertNotifier(
            webhook_url=dg.EnvVar("YOLO_ASSETS_ALERT_WEBHOOK_URL") if os.environ.get("YOLO_ASSETS_ALERT_WEBHOOK_URL") else None,
            ui_url=os.environ.get("YOLO_ASSETS_UI_URL", "http://127.0.0.1:3000"),
        ),
        "yolo_workspace": YoloWorkspace(scratch_dir=str(scratch_dir(home)), ultralytics_config_dir=str(home / "ultralytics")),
    }
    return dg.Definitions(
        assets=[labeled_batch, processed_images, *MODEL_ASSETS],
        asset_checks=[retrain_gate],
        sensors=[labeled_data_sensor, model_automation_sensor, run_failure_alert],
        resources={**resources, **resource_overrides},
    )


defs = build_definitions(home_dir())
