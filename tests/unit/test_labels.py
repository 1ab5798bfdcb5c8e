"""YOLO label parsing and item inspection: every malformed line has its reason code."""

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from yolo_assets.data.labels import InspectionRules, image_problem, inspect_item, parse_label
from yolo_assets.data.quarantine import QuarantineReason, quarantine_entry, quarantine_table


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0 0.5 0.5 0.1\n", QuarantineReason.LABEL_MALFORMED),
        ("0 0.5 0.5 0.1 0.1 0.2\n", QuarantineReason.LABEL_MALFORMED),  # even field count: no box, no polygon
        ("zero 0.5 0.5 0.1 0.1\n", QuarantineReason.LABEL_MALFORMED),
        ("0 nan 0.5 0.1 0.1\n", QuarantineReason.LABEL_NOT_FINITE),
        ("3 0.5 0.5 0.1 0.1\n", QuarantineReason.CLASS_UNKNOWN),
        ("0 0.5 0.5 0 0.1\n", QuarantineReason.BOX_DEGENERATE),
        ("0 0.98 0.5 0.2 0.1\n", QuarantineReason.COORDS_OUT_OF_RANGE),
    ],
)
def test_a_bad_line_quarantines_the_label_with_its_reason(text: str, reason: QuarantineReason) -> None:
    boxes, found, detail, _ = parse_label("1 0.5 0.5 0.2 0.2\n" + text, num_classes=3, tolerance=0.01)
    assert (boxes, found) == ([], reason)
    assert detail.startswith("line 2:")


def test_fixable_labels_are_fixed_and_counted() -> None:
    text = (
        "0 0.5 0.5 0.2 0.2\r\n"
        "0 0.5 0.5 0.2 0.2\n"  # the same box twice
        "1 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n"  # a polygon: its bounding box
        "2 0.997 0.5 0.01 0.1\n"  # pokes out by 0.002, within the tolerance: clipped
        "\n"
    )
    boxes, reason, _, fixes = parse_label(text, num_classes=3, tolerance=0.01)
    assert reason is None
    assert boxes == [[0, 0.5, 0.5, 0.2, 0.2], [1, 0.2, 0.2, 0.2, 0.2], [2, 0.996, 0.5, 0.008, 0.1]]
    assert fixes == {"polygons_converted": 1, "coords_clipped": 1, "duplicate_boxes_removed": 1}


def test_an_empty_label_is_a_background_image() -> None:
    assert parse_label("", num_classes=3, tolerance=0.01)[:2] == ([], None)


def _jpeg(size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def test_broken_images_are_told_apart() -> None:
    jpeg = _jpeg((256, 192))  # noise: most of the file is image data, after the header
    assert image_problem(b"", 10**6)[1] == QuarantineReason.IMAGE_EMPTY
    assert image_problem(b"not an image at all", 10**6)[1] == QuarantineReason.IMAGE_NOT_AN_IMAGE
    assert image_problem(jpeg[: len(jpeg) // 2], 10**6)[1] == QuarantineReason.IMAGE_TRUNCATED
    assert image_problem(jpeg, 100)[1] == QuarantineReason.IMAGE_TOO_LARGE
    decoded, reason, _ = image_problem(jpeg, 10**6)
    assert reason is None and decoded is not None and decoded.size == (256, 192)


def test_an_accepted_item_is_copied_into_the_blobs_and_a_rejected_one_is_not(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    blobs = tmp_path / "blobs"
    rules = InspectionRules(num_classes=3, max_pixels=10**6, coordinate_tolerance=0.01, missing_label="background", blob_root=str(blobs))
    accepted = inspect_item(str(tmp_path), "a.jpg", "a.txt", None, rules)
    assert accepted["reason"] is None and (accepted["width"], accepted["height"]) == (32, 24)
    assert (blobs / accepted["image_sha"][:2] / accepted["image_sha"]).read_bytes() == (tmp_path / "a.jpg").read_bytes()
    orphan = inspect_item(str(tmp_path), None, "b.txt", None, replace(rules, blob_root=str(tmp_path / "none")))
    assert orphan["reason"] == QuarantineReason.IMAGE_MISSING and not (tmp_path / "none").exists()
    unlabeled = inspect_item(str(tmp_path), "a.jpg", None, None, replace(rules, missing_label="quarantine"))
    assert unlabeled["reason"] == QuarantineReason.LABEL_MISSING


def test_reason_codes_are_plain_strings_in_entries_and_tables() -> None:
    entry = quarantine_entry("images/a.jpg", None, QuarantineReason.IMAGE_EMPTY, "zero|byte")
    assert type(entry["reason"]) is str and entry["reason"] == "image_empty"
    table = quarantine_table([entry] * 3, limit=2)
    assert "`image_empty`" in table and "zero/byte" in table and "1 more in quarantine.json" in table
    assert quarantine_table([]) == "No quarantined items.\n"
