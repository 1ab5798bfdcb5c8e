"""Per-image preprocessing (EXIF transpose + resize), cached by (image hash, preprocess settings).

The cache lives in the artifact store as content-addressed objects: `<sha>.jpg` plus a `<sha>.json`
record written last, so a record's presence means the image beside it is complete.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from yolo_assets.core.fileio import atomic_write_bytes, object_file, object_relpath
from yolo_assets.core.hashing import hash_json, sha256_bytes
from yolo_assets.data.labels import decode_image, to_rgb

# The processed_images settings that change a preprocessed image (and so key its cache).
PREPROCESS_FIELDS = ("max_side", "jpeg_quality", "max_image_pixels")


def preprocess_namespace(settings: dict[str, Any]) -> str:
    return f"preprocessed/{hash_json(settings)[:16]}"


def decode_and_resize(data: bytes, max_side: int, max_pixels: int) -> Image.Image:
    """Decode, apply EXIF orientation, convert to RGB, shrink so the long side is <= max_side."""
    image = to_rgb(decode_image(data, max_pixels))
    scale = max_side / max(image.size)
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image


def difference_hash(image: Image.Image) -> str:
    """64-bit perceptual hash (dHash): near-identical pictures differ in a few bits."""
    small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = list(small.getdata())
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (pixels[row * 9 + col] > pixels[row * 9 + col + 1])
    return f"{bits:016x}"


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def preprocess_one(
    source: str, cache_root: str, image_sha: str, max_side: int, jpeg_quality: int, max_pixels: int
) -> dict[str, Any]:
    """Worker: preprocess one stored image into the cache and return its record."""
    data = Path(source).read_bytes()
    image = decode_and_resize(data, max_side, max_pixels)
    encoded = encode_jpeg(image, jpeg_quality)
    record = {
        "width": image.width,
        "height": image.height,
        "file_sha": sha256_bytes(encoded),
        # Identical pictures re-encoded differently still share this: the leakage check uses it.
        "pixel_sha": sha256_bytes(image.tobytes()),
        "dhash": difference_hash(image),
    }
    target = object_file(Path(cache_root), image_sha)
    atomic_write_bytes(target.with_suffix(".jpg"), encoded)
    atomic_write_bytes(target.with_suffix(".json"), json.dumps(record).encode())
    return record


def cache_entry_names(image_sha: str) -> list[str]:
    """The files of one image's cache entry, relative to the cache root: the image, then its record."""
    return [f"{object_relpath(image_sha)}.jpg", f"{object_relpath(image_sha)}.json"]


def cached_record(cache_root: Path, image_sha: str) -> dict[str, Any] | None:
    record = object_file(cache_root, image_sha).with_suffix(".json")
    return json.loads(record.read_text()) if record.exists() else None


def cached_image(cache_root: Path, image_sha: str) -> Path:
    return object_file(cache_root, image_sha).with_suffix(".jpg")
