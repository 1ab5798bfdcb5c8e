"""The registered model: an MLflow pyfunc that wraps YOLO weights and returns detections.

`detect` is the one detection path: the pyfunc, the detection service and the benchmarks call it.
"""

import base64
import binascii
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from PIL import Image

from yolo_assets.data.labels import image_problem, to_rgb
from yolo_assets.data.quarantine import QuarantineReason

DETECTION_COLUMNS = ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
# The same decompression-bomb guard as ingest (LabeledBatchConfig.max_image_pixels).
DEFAULT_MAX_PIXELS = 50_000_000

OUTPUT_COLUMNS: list[ColSpec | TensorSpec] = [ColSpec("long", "image"), ColSpec("long", "class_id"), ColSpec("string", "class_name")]
OUTPUT_COLUMNS += [ColSpec("double", name) for name in ("confidence", "x1", "y1", "x2", "y2")]
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "image")]),
    outputs=Schema(OUTPUT_COLUMNS),
    params=ParamSchema([ParamSpec("conf", "double", 0.25)]),
)


class BadImage(ValueError):
    """An input that is not a usable picture; `too_large` for the decompression-bomb guard."""

    def __init__(self, reason: str, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def decode_picture(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """8-bit RGB in its upright orientation (EXIF applied; grey, 16-bit, CMYK, palette converted), or
    BadImage with a one-line reason: the same rules as ingest's quarantine."""
    image, code, detail = image_problem(data, max_pixels)
    if image is None:
        raise BadImage(f"{code}: {detail}", too_large=code == QuarantineReason.IMAGE_TOO_LARGE)
    return to_rgb(image)


def is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # base64 text read as a path: a name too long
        return False


def picture_bytes(value: Any) -> bytes:
    """A pyfunc input cell: image bytes, base64 text (what a remote caller sends as JSON), or a path."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    text = str(value)
    if len(text) < 4096 and is_file(text):
        return Path(text).read_bytes()
    try:
        return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"not a file on this machine nor base64 image bytes: {text[:60]!r}") from None


def detect(model: Any, image: Image.Image, conf: float = 0.25) -> list[dict[str, Any]]:
    """Detections of an ultralytics YOLO model on one RGB picture, boxes in its pixels."""
    result = model.predict(image, conf=conf, verbose=False)[0]
    boxes = result.boxes
    return [
        {"class_id": int(class_id), "class_name": result.names[int(class_id)], "confidence": float(confidence),
         "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]}
        for box, class_id, confidence in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist())
    ]


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
