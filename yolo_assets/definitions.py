"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here.

Every deployment setting is a resource field; `deployment_setting` fills it from the environment
(resources/settings.py), resolved when a run starts. The README lists the variables.
"""

from pathlib import Path

import dagster as dg

from resources.alerts import AlertNotifier
from resources.artifact_store import LocalArtifactStore
from resources.dataset_policy import DatasetPolicy
from resources.landing_zone import LocalLandingZone
from resources.mlflow_tracking import MLflowResource
from resources.model_policy import ModelPolicy
from resources.settings import deployment_setting, resource_from_environment
from resources.trainer import TrainingDefaults, YoloWorkspace
from sensors.automation import model_automation_sensor
from sensors.failure_alerts import run_failure_alert
from sensors.labeled_data import labeled_data_sensor
from yolo_assets.assets.dataset import processed_images
from yolo_assets.assets.evaluation import evaluation_report
from yolo_assets.assets.ingest import labeled_batch
from yolo_assets.assets.registry import registered_model
from yolo_assets.assets.training import retrain_gate, trained_weights
from yolo_assets.core.home import hash_cache_path, home_dir, landing_dir, mlflow_dir, mlflow_tracking_uri, scratch_dir, store_dir


def deployment_resources(home: Path) -> dict[str, dg.ConfigurableResource]:
    """The embedded default (everything in one home folder), with the deployment's settings."""
    return {
        "landing_zone": LocalLandingZone(root=str(landing_dir(home)), hash_cache_path=str(hash_cache_path(home))),
        "artifact_store": LocalArtifactStore(root=str(store_dir(home))),
        "mlflow": MLflowResource(
            tracking_uri=deployment_setting("YOLO_ASSETS_MLFLOW_TRACKING_URI", mlflow_tracking_uri(home)),
            artifact_root=str(mlflow_dir(home) / "artifacts"),
            model_name=deployment_setting("YOLO_ASSETS_MODEL_NAME", MLflowResource.model_fields["model_name"].default),
        ),
        "model_policy": resource_from_environment(
            ModelPolicy,
            {"min_new_images": "YOLO_ASSETS_MIN_NEW_IMAGES", "first_model_min_map50": "YOLO_ASSETS_FIRST_MODEL_MIN_MAP50"},
        ),
        "dataset_policy": resource_from_environment(
            DatasetPolicy,
            {
                "new_class_policy": "YOLO_ASSETS_NEW_CLASS_POLICY",
                "label_conflicts": "YOLO_ASSETS_LABEL_CONFLICTS",
                "missing_label": "YOLO_ASSETS_MISSING_LABEL",
                "honour_export_split": "YOLO_ASSETS_HONOUR_EXPORT_SPLIT",
            },
        ),
        # A webhook URL carries its token: EnvVar keeps it out of the UI, and it is never logged.
        "alert_notifier": resource_from_environment(
            AlertNotifier, {"webhook_url": "YOLO_ASSETS_ALERT_WEBHOOK_URL", "ui_url": "YOLO_ASSETS_UI_URL"}
        ),
        "yolo_workspace": YoloWorkspace(scratch_dir=str(scratch_dir(home)), ultralytics_config_dir=str(home / "ultralytics")),
        "training_defaults": resource_from_environment(
            TrainingDefaults, {field: f"YOLO_ASSETS_TRAIN_{field.upper()}" for field in TrainingDefaults.model_fields}
        ),
    }


def build_definitions(home: Path, **resource_overrides: dg.ConfigurableResource) -> dg.Definitions:
    """Everything wired to one home folder; tests replace single resources through `resource_overrides`."""
    return dg.Definitions(
        assets=[labeled_batch, processed_images, trained_weights, evaluation_report, registered_model],
        asset_checks=[retrain_gate],
        sensors=[labeled_data_sensor, model_automation_sensor, run_failure_alert],
        resources={**deployment_resources(home), **resource_overrides},
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by Dagster's tools when they load the code location, not when this module is imported."""
    return build_definitions(home_dir())
