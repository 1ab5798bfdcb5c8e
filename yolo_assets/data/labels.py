"""Inspect one image/label item: decode the image, parse its YOLO label, keep it or say why not.

Every item ends accepted (hashes, size, boxes) or quarantined with a reason code; nothing is dropped
silently. `inspect_item` runs in worker processes, so it takes and returns plain data.
"""

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from yolo_assets.core.fileio import atomic_write_bytes, object_file
from yolo_assets.core.hashing import sha256_bytes
from yolo_assets.data.quarantine import QuarantineReason

ROUNDING = 1e-5  # labels carry ~6 decimals: edge boxes may poke out by that much


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit grey is scaled (not clipped), palette and alpha flattened on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the image from its header (raises for files that are no image at all, and
    DecompressionBombError/Warning for more than `max_pixels`, which PIL checks when it opens)."""
    # PIL's limit is a process global: set it for this open only, so that whatever else runs in the
    # process later (ultralytics saving and our report reading large plots) keeps PIL's default.
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Fully decode (truncation shows only on load) and apply the EXIF orientation."""
    with open_image(data, max_pixels) as opened:
        opened.load()
        return ImageOps.exif_transpose(opened)


def image_problem(data: bytes, max_pixels: int) -> tuple[Image.Image | None, str | None, str]:
    """(decoded image, None, "") or (None, reason code, detail)."""
    if not data:
        return None, QuarantineReason.IMAGE_EMPTY, "zero-byte image file"
    try:
        open_image(data, max_pixels).close()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return None, QuarantineReason.IMAGE_TOO_LARGE, str(error)[:200]
    except Exception:  # UnidentifiedImageError, or a format plugin that cannot even read the header
        return None, QuarantineReason.IMAGE_NOT_AN_IMAGE, "not an image file, whatever its extension says"
    try:
        return decode_image(data, max_pixels), None, ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return None, QuarantineReason.IMAGE_TOO_LARGE, str(error)[:200]
    except OSError as error:
        code = QuarantineReason.IMAGE_TRUNCATED if "truncated" in str(error).lower() else QuarantineReason.IMAGE_UNDECODABLE
        return None, code, f"{type(error).__name__}: {str(error)[:200]}"
    except Exception as error:  # PIL raises SyntaxError, ValueError... for other broken files
        return None, QuarantineReason.IMAGE_UNDECODABLE, f"{type(error).__name__}: {str(error)[:200]}"


def parse_label(text: str, num_classes: int, tolerance: float) -> tuple[list[list[float]], str | None, str, dict[str, int]]:
    """YOLO label lines -> unique boxes [class_id, cx, cy, w, h].

    Polygons (class x1 y1 x2 y2 ...) become their bounding box; coordinates within `tolerance`
    outside [0, 1] are clipped; duplicate lines are dropped. Returns (boxes, reason, detail, fixes).
    """
    boxes: list[list[float]] = []
    fixes = {"polygons_converted": 0, "coords_clipped": 0, "duplicate_boxes_removed": 0}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 5 or (len(fields) > 5 and len(fields) % 2 == 0):
            return [], QuarantineReason.LABEL_MALFORMED, f"line {number}: {len(fields)} fields (a box has 5, a polygon an odd number >= 7)", fixes
        try:
            class_id = int(fields[0])
            values = [float(f) for f in fields[1:]]
        except ValueError:
            return [], QuarantineReason.LABEL_MALFORMED, f"line {number}: not numbers: {line.strip()[:80]!r}", fixes
        if not all(math.isfinite(v) for v in values):
            return [], QuarantineReason.LABEL_NOT_FINITE, f"line {number}: NaN or infinite value", fixes
        if not 0 <= class_id < num_classes:
            return [], QuarantineReason.CLASS_UNKNOWN, f"line {number}: class id {class_id} not in 0..{num_classes - 1}", fixes
        if len(values) > 4:  # a segmentation polygon: its bounding box
            xs, ys = values[0::2], values[1::2]
            values = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
            fixes["polygons_converted"] += 1
        cx, cy, w, h = values
        if w <= 0 or h <= 0:
            return [], QuarantineReason.BOX_DEGENERATE, f"line {number}: width or height <= 0", fixes
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if min(x0, y0) < -tolerance or max(x1, y1) > 1 + tolerance:
            return [], QuarantineReason.COORDS_OUT_OF_RANGE, f"line {number}: box reaches outside [0, 1] by more than {tolerance}", fixes
        if min(x0, y0) < -ROUNDING or max(x1, y1) > 1 + ROUNDING:
            fixes["coords_clipped"] += 1  # beyond what 6-decimal label rounding explains
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
        box = [class_id, round((x0 + x1) / 2, 6), round((y0 + y1) / 2, 6), round(x1 - x0, 6), round(y1 - y0, 6)]
        if box in boxes:
            fixes["duplicate_boxes_removed"] += 1
            continue
        boxes.append(box)
    return boxes, None, "", fixes


def label_problem(data: bytes, max_bytes: int, max_boxes: int) -> str:
    """Why a label is too large to parse ("" when it is not): over the byte cap, or more box lines than
    `max_boxes` (counted without parsing)."""
    if len(data) > max_bytes:
        return f"label larger than {max_bytes:,} bytes (max_label_bytes)"
    lines = sum(1 for line in data.splitlines() if line.strip())
    if lines > max_boxes:
        return f"{lines:,} box lines, more than max_label_boxes={max_boxes:,}"
    return ""


@dataclass(frozen=True)
class InspectionRules:
    """What every item of a batch is checked against (plain data: it travels to the worker processes)."""

    num_classes: int
    max_pixels: int
    coordinate_tolerance: float
    missing_label: str
    """`background` or `quarantine` (DatasetPolicy.missing_label)."""
    blob_root: str
    """Where accepted image and label bytes are copied, content-addressed."""
    max_label_bytes: int = 1024**2
    max_label_boxes: int = 10_000


def inspect_item(root: str, image: str | None, label: str | None, label_text: str | None, rules: InspectionRules) -> dict[str, Any]:
    """Validate one item; accepted image and label bytes are copied into the content-addressed blob store."""
    max_label_bytes, missing_label = rules.max_label_bytes, rules.missing_label
    result: dict[str, Any] = {"image": image, "label": label, "reason": None, "detail": "", "fixes": {}}
    if label is not None:
        with open(Path(root) / label, "rb") as handle:
            label_bytes = handle.read(max_label_bytes + 1)  # never more than the cap in memory
    else:
        label_bytes = (label_text or "").encode()
    too_large = label_problem(label_bytes, max_label_bytes, rules.max_label_boxes)
    if too_large:
        return {**result, "reason": QuarantineReason.LABEL_TOO_LARGE, "detail": too_large}
    if label is not None or label_text is not None:
        result["label_sha"] = sha256_bytes(label_bytes)
    if image is None:
        return {**result, "reason": QuarantineReason.IMAGE_MISSING, "detail": "label file has no matching image"}
    if label is None and label_text is None and missing_label == "quarantine":
        return {**result, "reason": QuarantineReason.LABEL_MISSING, "detail": "image has no label file (missing_label=quarantine)"}
    image_bytes = (Path(root) / image).read_bytes()
    decoded, reason, detail = image_problem(image_bytes, rules.max_pixels)
    if reason:
        return {**result, "reason": reason, "detail": detail}
    try:
        text = label_bytes.decode("utf-8-sig")  # a byte-order mark is harmless
    except UnicodeDecodeError:
        return {**result, "reason": QuarantineReason.LABEL_NOT_TEXT, "detail": "label file is not UTF-8 text"}
    boxes, reason, detail, fixes = parse_label(text, rules.num_classes, rules.coordinate_tolerance)
    if reason:
        return {**result, "reason": reason, "detail": detail}
    image_sha = sha256_bytes(image_bytes)
    for sha, data in ((image_sha, image_bytes), (result.get("label_sha"), label_bytes)):
        if sha:
            blob = object_file(Path(rules.blob_root), sha)
            if not blob.exists():
                atomic_write_bytes(blob, data)
    assert decoded is not None
    return {
        **result,
        "fixes": {k: v for k, v in fixes.items() if v},
        "image_sha": image_sha,
        "width": decoded.width,
        "height": decoded.height,
        "boxes": boxes,
    }
