"""The bad-input catalogue: each kind ingested through the real assets ends quarantined with its own
reason code (or, for valid oddities, converted and kept) while every good item of the batch survives."""

import io
import os
import zipfile
from pathlib import Path

import exports
import numpy as np
import pytest
from helpers import Home
from PIL import Image

from resources.dataset_policy import DatasetPolicy

LENIENT = {"ops": {"labeled_batch": {"config": {"max_quarantined_fraction": 0.95}}}}
GOOD = 6


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def item(root: Path, stem: str, image: bytes | None, label: str | bytes | None, suffix: str = ".jpg") -> None:
    if image is not None:
        (root / "images" / f"{stem}{suffix}").write_bytes(image)
    if label is not None:
        (root / "labels" / f"{stem}.txt").write_bytes(label.encode() if isinstance(label, str) else label)


@pytest.fixture
def catalogue_batch(home: Home) -> Path:
    """GOOD good items plus one item of every per-item kind, in one YOLO batch."""
    root = exports.label_studio(home.landing / "batch_bad", GOOD, seed=21)
    (root / "classes.txt").unlink()
    (root / "notes.json").unlink()
    (root / "data.yaml").write_text("names: [scratch, spot, crack]\n")
    picture, boxes = exports.samples(1, 22)[0][1], "0 0.5 0.5 0.2 0.2\n"
    jpeg = jpeg_bytes(picture)
    corrupt = bytearray(jpeg)
    corrupt[400:2000] = bytes(1600)
    item(root, "corrupt", bytes(corrupt), boxes)
    item(root, "truncated", jpeg[: len(jpeg) // 2], boxes)
    item(root, "zero_bytes", b"", boxes)
    item(root, "not_an_image", b"%PDF-1.4 this is a document", boxes)
    item(root, "bomb", png_bytes(Image.new("1", (12000, 12000))), boxes, ".png")
    gray16 = Image.fromarray(np.full((64, 96), 32768, dtype=np.uint16))
    item(root, "png16", png_bytes(gray16), boxes, ".png")
    item(root, "palette", png_bytes(picture.convert("P")), boxes, ".png")
    item(root, "rgba", png_bytes(picture.convert("RGBA")), boxes, ".png")
    item(root, "grayscale", png_bytes(picture.convert("L")), boxes, ".png")
    variants = {
        "clip_small": "0 0.5 0.5 0.2 1.006\n",  # 0.003 outside: clipped
        "coords_far": "0 0.5 0.5 0.2 1.6\n",
        "nan": "0 nan 0.5 0.2 0.2\n",
        "inf": "1 0.5 0.5 inf 0.2\n",
        "zero_width": "0 0.5 0.5 0 0.2\n",
        "negative_height": "0 0.5 0.5 0.2 -0.1\n",
        "unknown_class": "7 0.5 0.5 0.2 0.2\n",
        "wrong_columns": "0 0.5 0.5 0.2\n",
        "polygon": "2 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3\n",
        "duplicate_lines": "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        "empty_label": "",
        "crlf_bom": "\ufeff0 0.5 0.5 0.2 0.2\r\n1 0.3 0.3 0.1 0.1",
    }
    for index, (stem, label) in enumerate(variants.items()):
        item(root, stem, jpeg_bytes(exports.samples(1, 30 + index)[0][1]), label)
    item(root, "no_label", jpeg_bytes(exports.samples(1, 50)[0][1]), None)
    item(root, "not_text", jpeg_bytes(exports.samples(1, 53)[0][1]), b"0 0.5 0.5 0.2 0.2\n\x80\x81\n")  # not UTF-8
    item(root, "label_only", None, boxes)
    item(root, "twin_a", jpeg, boxes)  # the same image twice with the same labels
    item(root, "twin_b", jpeg, boxes)
    conflict = jpeg_bytes(exports.samples(1, 51)[0][1])
    item(root, "conflict_a", conflict, "0 0.5 0.5 0.2 0.2\n")  # the same image twice, labeled differently
    item(root, "conflict_b", conflict, "1 0.5 0.5 0.2 0.2\n")
    outside = home.path / "secret.jpg"
    outside.write_bytes(jpeg_bytes(exports.samples(1, 52)[0][1]))
    os.symlink(outside, root / "images" / "escape.jpg")
    return exports.mark_complete(root)


EXPECTED_QUARANTINE = {
    "corrupt.jpg": "image_undecodable",
    "truncated.jpg": "image_truncated",
    "zero_bytes.jpg": "image_empty",
    "not_an_image.jpg": "image_not_an_image",
    "bomb.png": "image_too_large",
    "coords_far.jpg": "coords_out_of_range",
    "nan.jpg": "label_not_finite",
    "inf.jpg": "label_not_finite",
    "zero_width.jpg": "box_degenerate",
    "negative_height.jpg": "box_degenerate",
    "unknown_class.jpg": "class_unknown",
    "wrong_columns.jpg": "label_malformed",
    "not_text.jpg": "label_not_text",
    "label_only.txt": "image_missing",
    "twin_b.jpg": "duplicate_image",
    "conflict_a.jpg": "label_conflict",
    "conflict_b.jpg": "label_conflict",
    "escape.jpg": "symlink_outside_batch",
}
KEPT_ODDITIES = {"png16", "palette", "rgba", "grayscale", "clip_small", "polygon", "duplicate_lines", "empty_label", "crlf_bom", "no_label", "twin_a"}


def test_every_bad_kind_is_quarantined_with_its_reason_and_good_items_survive(home: Home, catalogue_batch: Path) -> None:
    batch_run, dataset_run = home.tick(run_config=LENIENT)
    assert batch_run.success and dataset_run.success, (batch_run.failure, dataset_run.failure)
    manifest = home.manifest("labeled_batch", "batch_bad")
    got = {Path(entry["image"] or entry["label"]).name: entry["reason"] for entry in manifest["quarantine"]}
    assert got == EXPECTED_QUARANTINE
    kept = {Path(i["source"]).stem for i in manifest["items"]}
    assert kept == KEPT_ODDITIES | {stem for stem, *_ in exports.samples(GOOD, 21)}
    meta = home.metadata("labeled_batch", "batch_bad")
    assert meta["num_quarantined"] == len(EXPECTED_QUARANTINE) and "| `label_conflict` |" in meta["quarantined"]
    assert meta["fixes"] == {"coords_clipped": 1, "polygons_converted": 1, "duplicate_boxes_removed": 1}
    report = Path(meta["path"])
    assert "symlink_outside_batch" in (report / "quarantine.md").read_text()
    assert (report / "quarantine" / "images" / "corrupt.jpg").exists()
    assert not (report / "quarantine" / "images" / "escape.jpg").exists()  # the link was never followed
    boxes = {Path(i["source"]).stem: i["boxes"] for i in manifest["items"]}
    assert boxes["polygon"] == [["crack", 0.25, 0.2, 0.3, 0.2]]
    assert boxes["clip_small"] == [["scratch", 0.5, 0.5, 0.2, 1.0]]
    assert boxes["empty_label"] == boxes["no_label"] == []
    assert len(boxes["crlf_bom"]) == 2 and len(boxes["duplicate_lines"]) == 1
    assert home.metadata("processed_images")["num_images"] == len(kept)


def test_unusual_pngs_are_converted_not_rejected(home: Home, catalogue_batch: Path) -> None:
    home.tick(run_config=LENIENT)
    manifest = home.manifest("processed_images")
    by_source = {i["source"]: i["image_sha"] for i in home.manifest("labeled_batch", "batch_bad")["items"]}
    dataset = Path(home.metadata("processed_images")["path"])
    paths = {Path(p).stem: p for split in ("train", "val") for p in (dataset / f"{split}.txt").read_text().split()}
    png16 = Image.open(paths[by_source["images/png16.png"]])
    assert png16.mode == "RGB" and all(abs(v - 128) <= 2 for v in png16.getpixel((10, 10)))  # scaled, not clipped
    for stem in ("palette", "rgba", "grayscale"):
        assert Image.open(paths[by_source[f"images/{stem}.png"]]).mode == "RGB"
    assert len(paths) == len(manifest["items"])  # every item is in a split list ultralytics reads


def test_exif_rotated_jpeg_keeps_its_boxes_on_the_defect(home: Home) -> None:
    # The labeler saw the upright picture (EXIF applied); the file stores it rotated with orientation 6.
    upright = Image.new("RGB", (200, 100), (200, 200, 200))
    upright.paste((10, 10, 10), (20, 10, 60, 40))  # a dark defect in the top-left of the upright view
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote: 100 x 200
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    root = home.landing / "batch_exif"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "rotated.jpg").write_bytes(buffer.getvalue())
    (root / "labels" / "rotated.txt").write_text("0 0.2 0.25 0.2 0.3\n")  # x 20..60 of 200, y 10..40 of 100
    (root / "data.yaml").write_text("names: [spot]\n")
    exports.mark_complete(root)
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    item = home.manifest("labeled_batch", "batch_exif")["items"][0]
    assert (item["width"], item["height"]) == (200, 100)
    dataset = Path(home.metadata("processed_images")["path"])
    path = next(p for split in ("train", "val") for p in (dataset / f"{split}.txt").read_text().split())
    processed = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert processed.shape == (100, 200)
    inside, outside = processed[15:35, 25:55].mean(), processed[60:90, 120:180].mean()
    assert inside < 60 < 150 < outside


def test_zip_slip_members_are_rejected_and_never_written(home: Home, tmp_path: Path) -> None:
    source = exports.roboflow(tmp_path / "export", 3, seed=23)
    archive = home.landing / "batch_slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(source).as_posix())
        zf.writestr("../../escaped.txt", "pwned")
        zf.writestr("/tmp/absolute_escape.txt", "pwned")
    batch_run, dataset_run = home.tick(run_config=LENIENT)
    assert batch_run.success and dataset_run.success, (batch_run.failure, dataset_run.failure)
    meta = home.metadata("labeled_batch", "batch_slip.zip")
    assert meta["num_images"] == 3 and meta["quarantine_reasons"] == {"archive_member_unsafe": 2}
    assert not (home.landing.parent / "escaped.txt").exists() and not Path("/tmp/absolute_escape.txt").exists()


def test_same_image_in_two_batches_with_different_labels(home: Home) -> None:
    shared = exports.samples(1, 24)[0]
    for name, label in (("batch_one", "0 0.5 0.5 0.2 0.2\n"), ("batch_two", "1 0.5 0.5 0.2 0.2\n")):
        root = exports.label_studio(home.landing / name, 3, seed=25 if name == "batch_one" else 26)
        item(root, "shared", jpeg_bytes(shared[1]), label)
        exports.mark_complete(root)
    outcomes = home.tick()
    assert outcomes and all(o.success for o in outcomes)
    meta = home.metadata("processed_images")
    assert meta["num_images"] == 6  # both copies of the conflicting image are left out, with the reason
    assert meta["label_conflicts"].count("`label_conflict`") == 2
    home.redefine(dataset_policy=DatasetPolicy(label_conflicts="last_writer_wins"))
    assert home.materialize("processed_images").success
    manifest = home.manifest("processed_images")
    assert len(manifest["items"]) == 7
    shared_item = next(i for i in manifest["items"] if len(i["labels"]) == 1 and i["labels"][0][1:] == [0.5, 0.5, 0.2, 0.2])
    assert manifest["classes"][shared_item["labels"][0][0]] == "spot"  # batch_two landed last


def test_new_class_policy_reject_fails_the_batch_with_a_reason(home: Home) -> None:
    home.redefine(dataset_policy=DatasetPolicy(new_class_policy="reject"))
    exports.mark_complete(exports.label_studio(home.landing / "batch_first", 4, seed=27))
    outcomes = home.tick()
    assert outcomes and all(o.success for o in outcomes)
    root = home.land("batch_new_class", 4, 28, classes=("scratch", "dent"))
    [failed] = home.tick()  # no dataset run: the refused batch brings nothing the dataset would include
    assert not failed.success and "class_registry" in failed.failure
    status, metadata = home.check("labeled_batch", "class_registry")
    assert status == "FAILED" and metadata["new_classes"] == ["dent"]
    assert home.materialize("processed_images").success
    excluded = home.metadata("processed_images")["excluded_batches"]
    assert list(excluded) == ["batch_new_class"] and "class_registry failed" in excluded["batch_new_class"]
    assert root.exists()  # the landing zone is never touched


def test_class_names_are_trimmed_and_optionally_case_insensitive(home: Home) -> None:
    exports.mark_complete(exports.label_studio(home.landing / "batch_a", 3, seed=29))
    root = exports.label_studio(home.landing / "batch_b", 3, seed=30)
    (root / "classes.txt").write_text(" Scratch \nSPOT\ncrack\n")
    exports.mark_complete(root)
    home.tick()
    assert home.manifest("processed_images")["classes"] == ["scratch", "spot", "crack", "Scratch", "SPOT"]
    home.redefine(dataset_policy=DatasetPolicy(case_sensitive_classes=False))
    assert home.materialize("processed_images").success
    assert home.manifest("processed_images")["classes"] == ["scratch", "spot", "crack"]
