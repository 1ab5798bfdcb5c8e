"""The synthetic generator's frame size: camera-size frames on request, the default pictures unchanged."""

from pathlib import Path

import pytest
from PIL import Image

from yolo_assets.data.synth import DEFAULT_CLASSES, parse_frame_size, render_image, write_batch


def test_frame_size_is_parsed_and_bounded() -> None:
    assert parse_frame_size("1920x1080") == (1920, 1080)
    for bad in ("1920", "axb", "16x16", "1920x100000"):
        with pytest.raises(ValueError):
            parse_frame_size(bad)


def test_a_frame_size_fixes_every_image_and_keeps_boxes_inside(tmp_path: Path) -> None:
    out = write_batch(tmp_path / "batch", 3, seed=4, frame_size=(640, 360))
    for index in range(3):
        assert Image.open(out / "images" / f"s4_{index:05d}.jpg").size == (640, 360)
        for line in (out / "labels" / f"s4_{index:05d}.txt").read_text().splitlines():
            _, cx, cy, w, h = (float(v) for v in line.split())
            edges = (cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2)
            assert all(-1e-5 <= edge <= 1 + 1e-5 for edge in edges)  # labels are written with 6 decimals


def test_the_default_pictures_do_not_depend_on_the_frame_option() -> None:
    image, boxes = render_image(5, 7, DEFAULT_CLASSES)
    # The size is drawn from the stream whether or not a frame size replaces it, so asking for the
    # size the default drew gives the very same picture: the option changed no default picture.
    framed, framed_boxes = render_image(5, 7, DEFAULT_CLASSES, (image.width, image.height))
    assert framed.tobytes() == image.tobytes() and framed_boxes == boxes
    assert 320 <= image.width <= 448 and 256 <= image.height <= 352
