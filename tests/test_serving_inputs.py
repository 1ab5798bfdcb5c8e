"""The detection service's input catalogue, against the real service and a real registered champion:
every bad kind is a 4xx with a one-line reason, the next good request is answered, memory stays
bounded; odd but valid pictures (grey, 16-bit, CMYK, EXIF-rotated) are answered in their own pixels."""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import pytest
import requests
from helpers import Home, training_run_config
from PIL import Image

from resources.model_policy import ModelPolicy
from yolo_assets.ops.services import DetectionService

pytestmark = pytest.mark.slow

MAX_BYTES, MAX_PIXELS = 2_000_000, 4_000_000
TINY = training_run_config(warm_start=True)


def encoded(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "CMYK": 4}.get(mode)
    shape = (size[1], size[0], channels) if channels else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode)


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(noise("RGB", (320, 200), 1), exif=exif)


def sixteen_bit() -> bytes:
    pixels = (np.random.default_rng(2).integers(0, 65535, (150, 180))).astype(np.uint16)
    return encoded(Image.fromarray(pixels), "PNG")  # uint16 -> mode I;16


@dataclass
class Served:
    service: DetectionService
    good: bytes

    def post(self, files: Any = None, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.service.url}/v1/detect", files=files, timeout=60, **kwargs)

    def detect(self, picture: bytes) -> requests.Response:
        return self.post({"file": ("p", picture, "application/octet-stream")})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = tmp_path_factory.mktemp("serving") / "home"
    home = Home.create(path, model_policy=ModelPolicy(first_model_min_map50=0.0))
    try:
        home.land("batch_a", 16, seed=3)
        assert all(o.success for o in home.tick(TINY, automation=True))
        service = DetectionService(path, path / "serve.log", args=["--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS)]).start()
        try:
            yield Served(service, encoded(noise("RGB", (256, 192), 4)))
        finally:
            service.stop()
    finally:
        home.close()


def bad_requests(served: Served) -> dict[str, tuple[int, requests.Response]]:
    """Kind -> (expected status, answer)."""
    good = served.good
    bomb = encoded(Image.new("L", (3000, 3000)), "PNG")  # 9 Mpx in a few kB
    return {
        "not_an_image": (400, served.detect(b"this is a text file, not a picture")),
        "zero_bytes": (400, served.detect(b"")),
        "truncated_jpeg": (400, served.detect(good[: len(good) // 2])),
        "decompression_bomb": (413, served.detect(bomb)),
        "body_over_cap": (413, served.detect(np.random.default_rng(5).bytes(MAX_BYTES + 1000))),
        "wrong_field": (422, served.post({"image": ("p.jpg", good, "image/jpeg")})),
        "json_body": (415, served.post(json={"image": "p.jpg"})),
        "raw_jpeg_body": (415, served.post(data=good, headers={"Content-Type": "image/jpeg"})),
        "not_multipart_form": (415, served.post(data={"file": "p.jpg"})),
    }


def test_every_bad_input_is_a_4xx_with_a_reason_and_the_next_request_is_answered(served: Served) -> None:
    for kind, (status, answer) in bad_requests(served).items():
        assert answer.status_code == status, (kind, answer.status_code, answer.text)
        reason = answer.json()["error"]
        assert reason and "\n" not in reason and len(reason) < 400, (kind, reason)
        assert served.detect(served.good).status_code == 200, kind
    metrics = requests.get(f"{served.service.url}/metrics", timeout=10).text
    assert 'reason="body_too_large"' in metrics and 'reason="image_too_large"' in metrics


@pytest.mark.parametrize(
    ("kind", "picture", "size"),
    [
        ("grayscale", lambda: encoded(noise("L", (200, 120), 6), "PNG"), (200, 120)),
        ("sixteen_bit", sixteen_bit, (180, 150)),
        ("cmyk", lambda: encoded(noise("CMYK", (160, 100), 7)), (160, 100)),
        ("exif_rotated", exif_rotated, (200, 320)),
    ],
)
def test_odd_but_valid_pictures_are_answered_in_their_own_pixels(served: Served, kind: str, picture: Any, size: tuple[int, int]) -> None:
    answer = served.detect(picture())
    assert answer.status_code == 200, (kind, answer.text)
    body = answer.json()
    assert (body["image"]["width"], body["image"]["height"]) == size
    assert body["route"] == "champion" and body["version"] == "1" and isinstance(body["detections"], list)
    for found in body["detections"]:
        assert 0 <= found["x1"] <= found["x2"] <= size[0] and 0 <= found["y1"] <= found["y2"] <= size[1]


def test_memory_stays_bounded_under_bad_input(served: Served) -> None:
    process = psutil.Process(served.service.pid)
    for _ in range(3):
        bad_requests(served)
    before = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    for _ in range(15):
        bad_requests(served)
    after = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    assert after - before < 64 * 1024 * 1024, (before, after)
    assert served.detect(served.good).status_code == 200
