"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here.

`defs()` reads the deployment's settings from the environment once (`DeploymentSettings`) and hands
them to `build_definitions`: every setting is a resource field, an `EnvVar` resolved when a run starts
(resources/settings.py). The README lists the variables.
"""

from pathlib import Path

import dagster as dg

from resources.alerts import AlertNotifier
from resources.artifact_store import LocalArtifactStore
from resources.dataset_policy import DatasetPolicy
from resources.kubernetes import EXECUTOR_VARIABLE, executor_from_environment
from resources.landing_zone import LocalLandingZone
from resources.mlflow_tracking import MLflowResource
from resources.model_policy import ModelPolicy
from resources.run_recovery import RunRecovery
from resources.settings import DeploymentSettings
from resources.trainer import TrainingDefaults, YoloWorkspace
from sensors.automation import model_automation_sensor
from sensors.dataset import dataset_sensor
from sensors.failure_alerts import run_failure_alert
from sensors.labeled_data import labeled_data_sensor
from sensors.retries import transient_failure_retry
from sensors.rollout import rollout_sensor
from yolo_assets.assets.dataset import processed_images
from yolo_assets.assets.evaluation import evaluation_report
from yolo_assets.assets.fresh import fresh_batch_evaluation
from yolo_assets.assets.ingest import labeled_batch
from yolo_assets.assets.registry import registered_model
from yolo_assets.assets.retractions import batch_retractions
from yolo_assets.assets.rollout import model_rollout
from yolo_assets.assets.training import retrain_gate, trained_weights
from yolo_assets.core.home import hash_cache_path, home_dir, landing_dir, mlflow_dir, mlflow_tracking_uri, scratch_dir, store_dir
from yolo_assets.release.rollout import check_steps

STORAGE_VARIABLE = "YOLO_ASSETS_STORAGE"
TRACKING_URI_VARIABLE = "YOLO_ASSETS_MLFLOW_TRACKING_URI"
ROLLOUT_STEPS_VARIABLE = "YOLO_ASSETS_ROLLOUT_STEPS"


def storage_choice(settings: DeploymentSettings) -> str:
    storage = settings.value(STORAGE_VARIABLE, "local")
    if storage not in ("local", "s3"):
        raise ValueError(f"{STORAGE_VARIABLE} must be local or s3, not {storage!r}")
    return str(storage)


def storage_resources(home: Path, settings: DeploymentSettings) -> dict[str, dg.ConfigurableResource]:
    """Where batches land and artifacts live: the home folder (`YOLO_ASSETS_STORAGE=local`, the
    default) or S3 (`s3`). The switch shapes the code location, so it is read when it loads."""
    if storage_choice(settings) == "local":
        return {
            "landing_zone": LocalLandingZone(root=str(landing_dir(home)), hash_cache_path=str(hash_cache_path(home))),
            "artifact_store": LocalArtifactStore(root=str(store_dir(home))),
        }
    # Only an S3 deployment imports boto3 and dagster-aws (~0.6 s of CPU in every process that loads the
    # code location: code servers, run workers, the CLI).
    from dagster_aws.s3 import S3Resource

    from resources.s3_artifact_store import S3ArtifactStore
    from resources.s3_landing_zone import S3LandingZone

    s3 = settings.resource(
        S3Resource,
        {
            "endpoint_url": "YOLO_ASSETS_S3_ENDPOINT_URL",
            "region_name": "YOLO_ASSETS_S3_REGION",
            "aws_access_key_id": "AWS_ACCESS_KEY_ID",
            "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        },
    )
    if not settings.value("YOLO_ASSETS_S3_BUCKET"):
        raise ValueError(f"{STORAGE_VARIABLE}=s3 needs YOLO_ASSETS_S3_BUCKET, the bucket of the artifact store")
    bucket = settings.setting("YOLO_ASSETS_S3_BUCKET", "")
    return {
        "landing_zone": S3LandingZone(
            s3=s3,
            bucket=settings.setting("YOLO_ASSETS_S3_LANDING_BUCKET", bucket),
            prefix=settings.setting("YOLO_ASSETS_S3_LANDING_PREFIX", "landing"),
            scratch_dir=str(scratch_dir(home) / "batches"),
        ),
        "artifact_store": S3ArtifactStore(
            s3=s3,
            bucket=bucket,
            prefix=settings.setting("YOLO_ASSETS_S3_STORE_PREFIX", "store"),
            cache_dir=settings.setting("YOLO_ASSETS_CACHE_DIR", str(home / "cache" / "store")),
            cache_max_bytes=settings.setting("YOLO_ASSETS_CACHE_MAX_BYTES", S3ArtifactStore.model_fields["cache_max_bytes"].default),
        ),
    }


def mlflow_resource(home: Path, settings: DeploymentSettings) -> MLflowResource:
    """The embedded default (SQLite and artifacts in the home), or the tracking server the
    deployment names (it stores the artifacts: the client needs only the URI)."""
    model_name = settings.setting("YOLO_ASSETS_MODEL_NAME", MLflowResource.model_fields["model_name"].default)
    tracking_uri = settings.setting(TRACKING_URI_VARIABLE, mlflow_tracking_uri(home))
    return MLflowResource(tracking_uri=tracking_uri, artifact_root=str(mlflow_dir(home) / "artifacts"), model_name=model_name)


def rollout_steps_setting(settings: DeploymentSettings) -> list[int]:
    """YOLO_ASSETS_ROLLOUT_STEPS, e.g. `10,50,100` (`100`: promote at once); checked when the code location loads."""
    value = settings.value(ROLLOUT_STEPS_VARIABLE)
    if not value:
        return list(ModelPolicy.model_fields["rollout_steps"].default)
    try:
        return list(check_steps([int(part) for part in value.split(",")]))
    except ValueError as error:
        raise ValueError(f"{ROLLOUT_STEPS_VARIABLE}={value!r}: {error}") from None


def deployment_resources(home: Path, settings: DeploymentSettings) -> dict[str, dg.ConfigurableResource]:
    """Everything wired to one home folder (the embedded default), with the deployment's settings."""
    return {
        **storage_resources(home, settings),
        "mlflow": mlflow_resource(home, settings),
        "model_policy": settings.resource(
            ModelPolicy,
            {
                "min_new_images": "YOLO_ASSETS_MIN_NEW_IMAGES",
                "first_model_min_map50": "YOLO_ASSETS_FIRST_MODEL_MIN_MAP50",
                "drift_tolerance": "YOLO_ASSETS_DRIFT_TOLERANCE",
                "retraction_policy": "YOLO_ASSETS_RETRACTION_POLICY",
            },
            rollout_steps=rollout_steps_setting(settings),
        ),
        "dataset_policy": settings.resource(
            DatasetPolicy,
            {
                "new_class_policy": "YOLO_ASSETS_NEW_CLASS_POLICY",
                "label_conflicts": "YOLO_ASSETS_LABEL_CONFLICTS",
                "missing_label": "YOLO_ASSETS_MISSING_LABEL",
                "honour_export_split": "YOLO_ASSETS_HONOUR_EXPORT_SPLIT",
            },
        ),
        # A webhook URL carries its token: EnvVar keeps it out of the UI, and it is never logged.
        "alert_notifier": settings.resource(
            AlertNotifier, {"webhook_url": "YOLO_ASSETS_ALERT_WEBHOOK_URL", "ui_url": "YOLO_ASSETS_UI_URL"}
        ),
        "run_recovery": settings.resource(
            RunRecovery, {"max_attempts": "YOLO_ASSETS_RETRY_MAX_ATTEMPTS", "first_delay_s": "YOLO_ASSETS_RETRY_FIRST_DELAY_S"}
        ),
        "yolo_workspace": YoloWorkspace(scratch_dir=str(scratch_dir(home)), ultralytics_config_dir=str(home / "ultralytics")),
        "training_defaults": settings.resource(
            TrainingDefaults, {field: f"YOLO_ASSETS_TRAIN_{field.upper()}" for field in TrainingDefaults.model_fields}
        ),
    }


def step_executor(settings: DeploymentSettings) -> dg.ExecutorDefinition:
    """One pod per step (`YOLO_ASSETS_EXECUTOR=k8s`), or every step in the run's own process.

    A run's steps are a chain (one batch's ingest; the dataset; train -> evaluate -> register), so a
    local run gains nothing from Dagster's multiprocess default, which starts a fresh interpreter per
    step (~2 s of imports each): under the daemon that doubled the cost of a burst of small batches.
    Step pods share no disk, so a cluster needs the S3 store and an MLflow server.
    """
    executor = executor_from_environment(settings.environ)
    shared = storage_choice(settings) == "s3" and settings.value(TRACKING_URI_VARIABLE)
    if executor is not None and not shared:
        raise ValueError(f"{EXECUTOR_VARIABLE}=k8s needs {STORAGE_VARIABLE}=s3 and {TRACKING_URI_VARIABLE}: step pods share no disk")
    return executor or dg.in_process_executor


def build_definitions(home: Path, settings: DeploymentSettings, **resource_overrides: dg.ConfigurableResource) -> dg.Definitions:
    """Everything wired to one home folder with `settings`; tests replace single resources through
    `resource_overrides`."""
    executor = step_executor(settings)  # the deployment's shape first: a wrong switch is the error to see
    return dg.Definitions(
        assets=[
            labeled_batch, fresh_batch_evaluation, batch_retractions, processed_images,
            trained_weights, evaluation_report, registered_model, model_rollout,
        ],
        asset_checks=[retrain_gate],
        sensors=[
            labeled_data_sensor, dataset_sensor, rollout_sensor, model_automation_sensor, transient_failure_retry, run_failure_alert,
        ],
        resources={**deployment_resources(home, settings), **resource_overrides},
        executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by Dagster's tools when they load the code location, not when this module is imported."""
    return build_definitions(home_dir(), DeploymentSettings.from_environment())
