"""The registered model: an MLflow pyfunc that wraps YOLO weights and returns detections (through
`detect`, in `inference.py`, the one detection path)."""

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from yolo_assets.detector.inference import decode_picture, detect, picture_bytes

DETECTION_COLUMNS = ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]

OUTPUT_COLUMNS: list[ColSpec | TensorSpec] = [ColSpec("long", "image"), ColSpec("long", "class_id"), ColSpec("string", "class_name")]
OUTPUT_COLUMNS += [ColSpec("double", name) for name in ("confidence", "x1", "y1", "x2", "y2")]
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "image")]),
    outputs=Schema(OUTPUT_COLUMNS),
    params=ParamSchema([ParamSpec("conf", "double", 0.25)]),
)


def log_detector(weights: Path, model_name: str) -> str:
    """Log `weights` as the pyfunc detector to the active MLflow run and register it under `model_name`;
    returns the new registry version."""
    import mlflow

    from yolo_assets.detector.setup import ultralytics_version

    with warnings.catch_warnings():
        # The signature is declared explicitly; MLflow's hints about type hints and input examples do not apply.
        warnings.filterwarnings("ignore", message=".*(type hint|input example).*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=YoloDetectorModel(),
            artifacts={"weights": str(weights)},
            signature=SIGNATURE,
            pip_requirements=[f"ultralytics=={ultralytics_version()}", "torch", "pandas", "mlflow"],
            registered_model_name=model_name,
        )
    return str(info.registered_model_version)


class YoloDetectorModel(PythonModel):
    """Input: a DataFrame with an `image` column (or a list) of image bytes, base64-encoded image bytes
    (MLflow's scoring server and KServe's MLflow runtime take JSON), or file paths.
    Output: one row per detection, pixel boxes in the input image's upright frame."""

    def load_context(self, context: PythonModelContext) -> None:
        import os

        from yolo_assets.detector.setup import OFFLINE_ENVIRONMENT

        for name, value in OFFLINE_ENVIRONMENT.items():  # before ultralytics is imported in this process
            os.environ.setdefault(name, value)
        from ultralytics import YOLO

        self.model = YOLO(context.artifacts["weights"])

    # model_input is deliberately unannotated: MLflow would otherwise derive a schema from the hint;
    # SIGNATURE (a DataFrame with an `image` column) is declared when the model is logged.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        conf = float((params or {}).get("conf", 0.25))
        values = list(model_input["image"]) if isinstance(model_input, pd.DataFrame) else list(model_input)
        rows = []
        for index, value in enumerate(values):
            for found in detect(self.model, decode_picture(picture_bytes(value)), conf):
                rows.append([index, *found.values()])
        return pd.DataFrame(rows, columns=DETECTION_COLUMNS)
