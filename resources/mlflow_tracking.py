"""MLflow tracking and model registry. Embedded default: SQLite + local artifacts in the home folder;
a tracking server is a config change (`tracking_uri`)."""

import os
from pathlib import Path

import dagster as dg

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class MLflowResource(dg.ConfigurableResource):
    tracking_uri: str
    """e.g. sqlite:////abs/home/mlflow/mlflow.db, or http://127.0.0.1:5000 for a server."""
    artifact_root: str | None = None
    """Artifact location of the experiment when it is created (local folder for the embedded default)."""
    experiment: str = "yolo-assets"
    model_name: str = "yolo-defect-detector"

    def client(self):  # type: ignore[no-untyped-def]
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            return experiment.experiment_id
        location = Path(self.artifact_root).as_uri() if self.artifact_root else None
        return client.create_experiment(self.experiment, artifact_location=location)

    def alias_version(self, alias: str):  # type: ignore[no-untyped-def]
        """The registered model version behind an alias (`champion`, `challenger`), or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None

    def activate(self) -> None:
        """Point MLflow's fluent API (used by pyfunc.log_model) at this tracking server."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
