"""One detection: the picture a request carries (bytes, base64 text or a path) decoded by the same rules
as ingest's quarantine, and a YOLO model's detections on it. `detect` is the one detection path: the
registered pyfunc, the detection service and the benchmarks call it. Light on purpose (no MLflow, no
torch import): the service validates every request here."""

import base64
import binascii
from pathlib import Path
from typing import Any

from PIL import Image

from yolo_assets.data.labels import image_problem, to_rgb
from yolo_assets.data.quarantine import QuarantineReason

# The same decompression-bomb guard as ingest (LabeledBatchConfig.max_image_pixels).
DEFAULT_MAX_PIXELS = 50_000_000


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
