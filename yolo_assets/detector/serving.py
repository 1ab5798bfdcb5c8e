"""The registered model: an MLflow pyfunc that wraps YOLO weights and returns detections."""

from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

DETECTION_COLUMNS = ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]

OUTPUT_COLUMNS: list[ColSpec | TensorSpec] = [ColSpec("long", "image"), ColSpec("long", "class_id"), ColSpec("string", "class_name")]
OUTPUT_COLUMNS += [ColSpec("double", name) for name in ("confidence", "x1", "y1", "x2", "y2")]
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "image")]),
    outputs=Schema(OUTPUT_COLUMNS),
    params=ParamSchema([ParamSpec("conf", "double", 0.25)]),
)


class YoloDetectorModel(PythonModel):
    """Input: a DataFrame with an `image` column of file paths (or a list of paths).
    Output: one row per detection, pixel boxes in the input image's frame."""

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
        params = params or {}
        paths = list(model_input["image"]) if isinstance(model_input, pd.DataFrame) else list(model_input)
        rows = []
        for index, path in enumerate(paths):
            predictions: Any = self.model.predict(str(path), conf=float(params.get("conf", 0.25)), verbose=False)
            result = predictions[0]
            boxes = result.boxes
            for box, class_id, confidence in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist()):
                rows.append([index, int(class_id), result.names[int(class_id)], float(confidence), *box])
        return pd.DataFrame(rows, columns=DETECTION_COLUMNS)
