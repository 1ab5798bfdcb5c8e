"""Synthetic factory-inspection batches: defects on product surfaces, in ultralytics YOLO format.

Deterministic by seed: image i of seed s is the same whatever N is. Boxes are computed from the
drawn geometry, so the labels are exact and the set is learnable by a small detector. A frame size
(camera-size frames, e.g. 1920x1080) replaces the default 320-448 x 256-352 pictures; strokes and blur
grow with it, so a defect stays visible once the frame is shrunk to the training size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

from yolo_assets.core.parallel import parallel_starmap
from yolo_assets.data.landing_contract import SUCCESS_MARKER

DEFECT_KINDS = ("scratch", "spot", "crack", "dent")
DEFAULT_CLASSES = ("scratch", "spot", "crack")
SURFACES = ("brushed_metal", "plastic", "painted", "cast")
BACKGROUND_SHARE = 0.12

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
FrameSize = tuple[int, int]  # width, height
# The default pictures' short side is at most this: strokes and blur are drawn at scale 1 up to it.
DEFAULT_SHORT_SIDE = 352


def _scale(image: Image.Image) -> float:
    """Stroke and blur scale: 1 for the default sizes, proportional to the short side above them."""
    return max(1.0, min(image.size) / DEFAULT_SHORT_SIDE)


def parse_frame_size(text: str) -> FrameSize:
    """`1920x1080` -> (1920, 1080)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"frame size must be WIDTHxHEIGHT (e.g. 1920x1080), not {text!r}") from None
    if not (32 <= width <= 8192 and 32 <= height <= 8192):
        raise ValueError(f"frame size {text!r} outside 32..8192 pixels a side")
    return width, height


def _surface(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    kind = SURFACES[int(rng.integers(len(SURFACES)))]
    base = rng.uniform(90, 200, size=3)
    if kind == "brushed_metal":
        gray = rng.uniform(120, 190)
        rows = rng.normal(0, 6, size=(height, 1)) + rng.normal(0, 3, size=(height, width))
        pixels = np.repeat((gray + rows)[:, :, None], 3, axis=2) + np.array([0, 2, 6])
    elif kind == "plastic":
        pixels = np.broadcast_to(base, (height, width, 3)) + rng.normal(0, 3, size=(height, width, 1))
    elif kind == "painted":
        ramp = np.linspace(-25, 25, width)[None, :, None]
        pixels = base + ramp + rng.normal(0, 4, size=(height, width, 1))
    else:  # cast: blotchy low-frequency texture
        coarse = rng.normal(0, 18, size=(height // 16 + 2, width // 16 + 2))
        blotches = np.array(Image.fromarray(coarse.astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC))
        pixels = base + blotches[:, :, None] + rng.normal(0, 5, size=(height, width, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _contrast_color(rng: np.random.Generator, image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    pixel = cast(tuple[int, int, int], image.getpixel((int(x), int(y))))
    level = sum(pixel) / 3
    value = int(rng.uniform(15, 50)) if level > 110 else int(rng.uniform(200, 245))
    return (value, value, value)


def _polyline_box(points: Sequence[tuple[float, float]], pad: float) -> Box:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def _draw_scratch(rng: np.random.Generator, image: Image.Image, draw: ImageDraw.ImageDraw) -> Box:
    width, height = image.size
    length = rng.uniform(0.3, 0.55) * min(width, height)
    angle = rng.uniform(0, math.pi)
    x0, y0 = rng.uniform(0.15 * width, 0.85 * width), rng.uniform(0.15 * height, 0.85 * height)
    points = [(x0 + t * length * math.cos(angle) + rng.normal(0, 1.0), y0 + t * length * math.sin(angle))
              for t in np.linspace(0, 1, 8)]
    stroke = round(int(rng.integers(3, 6)) * _scale(image))
    draw.line(points, fill=_contrast_color(rng, image, x0, y0), width=stroke)
    return _polyline_box(points, stroke / 2 + 1)


def _draw_spot(rng: np.random.Generator, image: Image.Image, draw: ImageDraw.ImageDraw) -> Box:
    width, height = image.size
    rx, ry = rng.uniform(0.04, 0.08) * width, rng.uniform(0.04, 0.08) * height
    cx, cy = rng.uniform(0.1 * width, 0.9 * width), rng.uniform(0.1 * height, 0.9 * height)
    tint = (int(rng.uniform(90, 140)), int(rng.uniform(45, 70)), int(rng.uniform(10, 30)))  # rust / stain
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tint)
    return cx - rx, cy - ry, cx + rx, cy + ry


def _draw_crack(rng: np.random.Generator, image: Image.Image, draw: ImageDraw.ImageDraw) -> Box:
    width, height = image.size
    x, y = rng.uniform(0.2 * width, 0.8 * width), rng.uniform(0.2 * height, 0.8 * height)
    heading = rng.uniform(0, 2 * math.pi)
    step = 0.045 * min(width, height)
    points = [(x, y)]
    for _ in range(int(rng.integers(6, 11))):
        heading += rng.uniform(-1.1, 1.1)  # jagged zig-zag, unlike a scratch
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        points.append((x, y))
    branch_at = points[len(points) // 2]
    branch = [branch_at, (branch_at[0] + 2 * step * math.cos(heading + 1.4), branch_at[1] + 2 * step * math.sin(heading + 1.4))]
    stroke = round(int(rng.integers(3, 6)) * _scale(image))
    for line in (points, branch):
        draw.line(line, fill=(20, 18, 16), width=stroke, joint="curve")
    return _polyline_box(points + branch, stroke / 2 + 1)


def _draw_dent(rng: np.random.Generator, image: Image.Image, draw: ImageDraw.ImageDraw) -> Box:
    width, height = image.size
    r = rng.uniform(0.05, 0.09) * min(width, height)
    cx, cy = rng.uniform(0.15 * width, 0.85 * width), rng.uniform(0.15 * height, 0.85 * height)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(35, 35, 35), width=round(3 * _scale(image)))
    draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 3, cy + r / 3), fill=(235, 235, 235))
    return cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1


DRAWERS: dict[str, Callable[[np.random.Generator, Image.Image, ImageDraw.ImageDraw], Box]] = {
    "scratch": _draw_scratch,
    "spot": _draw_spot,
    "crack": _draw_crack,
    "dent": _draw_dent,
}


def render_image(
    seed: int, index: int, classes: Sequence[str], frame_size: FrameSize | None = None
) -> tuple[Image.Image, list[tuple[int, Box]]]:
    """One synthetic image and its (class id, pixel box) list; `frame_size` fixes its size."""
    rng = np.random.default_rng([seed, index])
    width, height = int(rng.integers(320, 449)), int(rng.integers(256, 353))  # drawn always: same stream after
    if frame_size is not None:
        width, height = frame_size
    image = _surface(rng, width, height)
    draw = ImageDraw.Draw(image)
    count = 0 if rng.random() < BACKGROUND_SHARE else int(rng.integers(1, 4))
    boxes: list[tuple[int, Box]] = []
    for _ in range(count):
        class_id = int(rng.integers(len(classes)))
        boxes.append((class_id, DRAWERS[classes[class_id]](rng, image, draw)))
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.7)) * _scale(image)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 5), size=(height, width, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), boxes


def yolo_label_lines(boxes: Sequence[tuple[int, Box]], width: int, height: int) -> list[str]:
    lines = []
    for class_id, (x0, y0, x1, y1) in boxes:
        x0, x1 = max(0.0, x0), min(float(width), x1)
        y0, y1 = max(0.0, y0), min(float(height), y1)
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        lines.append(f"{class_id} {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def _write_item(out: Path, seed: int, index: int, classes: Sequence[str], frame_size: FrameSize | None) -> None:
    """Worker: one image and its label file."""
    image, boxes = render_image(seed, index, classes, frame_size)
    stem = f"s{seed}_{index:05d}"
    image.save(out / "images" / f"{stem}.jpg", quality=90)
    lines = yolo_label_lines(boxes, *image.size)
    (out / "labels" / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def write_batch(
    out: Path, images: int, seed: int, classes: Sequence[str] = DEFAULT_CLASSES, frame_size: FrameSize | None = None
) -> Path:
    """Write a YOLO-format batch to `out` (images/, labels/, data.yaml), `_SUCCESS` last; the images
    are rendered on all usable CPUs (a camera-size frame takes a few tenths of a second)."""
    unknown = [c for c in classes if c not in DRAWERS]
    if unknown or not classes:
        raise ValueError(f"unknown defect classes {unknown}; choose from {', '.join(DEFECT_KINDS)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    parallel_starmap(_write_item, [(out, seed, index, tuple(classes), frame_size) for index in range(images)])
    (out / "data.yaml").write_text(yaml.safe_dump({"names": list(classes), "nc": len(classes)}, sort_keys=False))
    (out / SUCCESS_MARKER).write_text("")
    return out
