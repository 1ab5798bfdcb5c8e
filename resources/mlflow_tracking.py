"""MLflow tracking and model registry. Embedded default: SQLite + local artifacts in the home folder;
a tracking server is a config change (`tracking_uri`)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from types import ModuleType

    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# Process environment on purpose: MLflow reads these when it is first imported. MLflow 3 reports
# usage to its telemetry service by default; nothing here may talk to any host but the tracking server.
MLFLOW_ENVIRONMENT = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def import_mlflow() -> "ModuleType":
    """`mlflow`, imported with telemetry and progress bars off."""
    for name, value in MLFLOW_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import mlflow

    return mlflow


class MLflowResource(dg.ConfigurableResource):
    tracking_uri: str
    """e.g. sqlite:////abs/home/mlflow/mlflow.db, or http://127.0.0.1:5000 for a server (from
    YOLO_ASSETS_MLFLOW_TRACKING_URI through EnvVar: a URI may carry credentials)."""
    artifact_root: str | None = None
    """Artifact location of the experiment when it is created on a local tracking store (the embedded
    default); ignored for a tracking server, which stores artifacts itself."""
    experiment: str = "yolo-assets"
    model_name: str = "yolo-defect-detector"

    def client(self) -> "MlflowClient":
        return import_mlflow().MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        # A tracking server stores the artifacts itself (--serve-artifacts): a local folder would be wrong there.
        server = self.tracking_uri.startswith(("http://", "https://"))
        location = Path(self.artifact_root).as_uri() if self.artifact_root and not server else None
        return client.create_experiment(self.experiment, artifact_location=location)

    def alias_version(self, alias: str) -> "ModelVersion | None":
        """The registered model version behind an alias (`champion`, `challenger`), or None."""
        client = self.client()
        from mlflow.exceptions import MlflowException  # imported by client() with telemetry off

        try:
            return client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None

    @contextmanager
    def activated(self) -> Iterator[None]:
        """Point MLflow's fluent API (used by pyfunc.log_model) at this tracking store for a while.

        mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment; it is restored
        afterwards so nothing else in the process (or its children) inherits our store by accident.
        """
        mlflow = import_mlflow()

        # Process environment on purpose: MLflow's fluent API keeps its URIs there.
        saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            yield
        finally:
            # mlflow.set_*_uri(None) resets MLflow's own default (and writes the environment), so the
            # environment is restored last.
            mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # None restores MLflow's default
            mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
