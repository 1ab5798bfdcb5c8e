"""Read an ultralytics YOLO batch and inspect each image/label pair.

Every pair ends either accepted (hashes, size, boxes) or quarantined with a reason code; nothing
is dropped silently. `inspect_pair` runs in worker processes, so it takes and returns plain data.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageOps

from yolo_assets.hashing import sha256_bytes
from yolo_assets.fileio import atomic_write_bytes, object_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

# Quarantine reason codes (stable: users filter on them).
IMAGE_MISSING = "image_missing"
IMAGE_EMPTY = "image_empty"
IMAGE_UNDECODABLE = "image_undecodable"
IMAGE_TOO_LARGE = "image_too_large"
LABEL_MALFORMED = "label_malformed"
CLASS_UNKNOWN = "class_unknown"
COORDS_OUT_OF_RANGE = "coords_out_of_range"
BOX_DEGENERATE = "box_degenerate"


class BatchFormatError(ValueError):
    """The batch as a whole cannot be read (no data.yaml, no class names...)."""


@dataclass(frozen=True)
class BatchPair:
    image: str | None  # paths relative to the batch root
    label: str | None


@dataclass(frozen=True)
class BatchLayout:
    class_names: list[str]
    pairs: list[BatchPair]


def _class_names(data_yaml: Path) -> list[str]:
    try:
        data = yaml.safe_load(data_yaml.read_text()) or {}
    except yaml.YAMLError as error:
        raise BatchFormatError(f"{data_yaml.name} is not valid YAML: {error}") from error
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))):
            raise BatchFormatError(f"{data_yaml.name}: class ids must be 0..n-1, got {ids}")
        return [str(names[k] if k in names else names[str(k)]).strip() for k in ids]
    if isinstance(names, list) and names:
        return [str(n).strip() for n in names]
    raise BatchFormatError(f"{data_yaml.name} has no class 'names' list or mapping")


def label_path_for(image_rel: Path) -> Path:
    """Ultralytics' rule: the last `images` folder becomes `labels`, the suffix becomes .txt."""
    parts = list(image_rel.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_yolo_layout(root: Path) -> BatchLayout:
    data_yaml = next((root / n for n in ("data.yaml", "data.yml") if (root / n).is_file()), None)
    if data_yaml is None:
        raise BatchFormatError(f"no data.yaml at the batch root ({root.name}): not an ultralytics YOLO batch")
    names = _class_names(data_yaml)
    files = [p.relative_to(root) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    images = sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and "images" in p.parts[:-1])
    labels = {p for p in files if p.suffix == ".txt" and "labels" in p.parts[:-1]}
    pairs: list[BatchPair] = []
    for image in images:
        label = label_path_for(image)
        pairs.append(BatchPair(image.as_posix(), label.as_posix() if label in labels else None))
        labels.discard(label)
    pairs.extend(BatchPair(None, orphan.as_posix()) for orphan in sorted(labels))
    return BatchLayout(names, pairs)


def parse_label(text: str, num_classes: int) -> tuple[list[list[float]], str | None, str]:
    """YOLO label lines -> boxes [class_id, cx, cy, w, h]; or (partial, reason, detail) on the first bad line."""
    boxes: list[list[float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            return boxes, LABEL_MALFORMED, f"line {number}: expected 5 fields, got {len(fields)}"
        try:
            class_id = int(fields[0])
            cx, cy, w, h = (float(f) for f in fields[1:])
        except ValueError:
            return boxes, LABEL_MALFORMED, f"line {number}: not numbers: {line.strip()[:80]!r}"
        if not 0 <= class_id < num_classes:
            return boxes, CLASS_UNKNOWN, f"line {number}: class id {class_id} not in 0..{num_classes - 1}"
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            return boxes, COORDS_OUT_OF_RANGE, f"line {number}: coordinates outside [0, 1]: {line.strip()[:80]!r}"
        if w <= 0.0 or h <= 0.0:
            return boxes, BOX_DEGENERATE, f"line {number}: zero-size box"
        boxes.append([class_id, cx, cy, w, h])
    return boxes, None, ""


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Fully decode (truncation shows only on load) and apply the EXIF orientation."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)


def inspect_pair(
    root: str, image: str | None, label: str | None, num_classes: int, max_pixels: int, blob_root: str
) -> dict[str, Any]:
    """Validate one pair; accepted image and label bytes are copied into the content-addressed blob store."""
    result: dict[str, Any] = {"image": image, "label": label, "reason": None, "detail": ""}
    label_bytes = (Path(root) / label).read_bytes() if label else b""
    if label:
        result["label_sha"] = sha256_bytes(label_bytes)
    if image is None:
        return {**result, "reason": IMAGE_MISSING, "detail": "label file has no matching image"}
    image_bytes = (Path(root) / image).read_bytes()
    if not image_bytes:
        return {**result, "reason": IMAGE_EMPTY, "detail": "zero-byte image file"}
    try:
        decoded = decode_image(image_bytes, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return {**result, "reason": IMAGE_TOO_LARGE, "detail": str(error)[:200]}
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return {**result, "reason": IMAGE_UNDECODABLE, "detail": f"{type(error).__name__}: {str(error)[:200]}"}
    try:
        text = label_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return {**result, "reason": LABEL_MALFORMED, "detail": "label file is not UTF-8 text"}
    boxes, reason, detail = parse_label(text, num_classes)
    if reason:
        return {**result, "reason": reason, "detail": detail}
    image_sha = sha256_bytes(image_bytes)
    for sha, data in ((image_sha, image_bytes), (result.get("label_sha"), label_bytes)):
        if sha:
            blob = object_file(Path(blob_root), sha)
            if not blob.exists():
                atomic_write_bytes(blob, data)
    return {**result, "image_sha": image_sha, "width": decoded.width, "height": decoded.height, "boxes": boxes}
