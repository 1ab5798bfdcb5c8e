"""Every supported export, normalised through the real labeled_batch / processed_images assets."""

import json
import os
import shutil
import tarfile
from pathlib import Path

import exports
import pytest
import yaml
from helpers import Home

from yolo_assets.data.splits import split_of

FORMATS = {
    "yolo_split_folders": (exports.yolo_split_folders, "yolo"),
    "yolo_file_lists": (exports.yolo_file_lists, "yolo"),
    "roboflow": (exports.roboflow, "yolo"),
    "cvat_yolo": (exports.cvat_yolo, "cvat"),
    "label_studio": (exports.label_studio, "label_studio"),
    "coco": (exports.coco, "coco"),
}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_each_export_is_ingested_with_every_item(home: Home, kind: str) -> None:
    write, detected = FORMATS[kind]
    exports.mark_complete(write(home.landing / "batch_x", 6, seed=11))
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success, (batch_run.failure, dataset_run.failure)
    meta = home.metadata("labeled_batch", "batch_x")
    assert (meta["format"], meta["num_images"], meta["num_quarantined"]) == (detected, 6, 0)
    assert meta["classes"] == list(exports.CLASSES)
    manifest = home.manifest("labeled_batch", "batch_x")
    expected = {stem: lines for stem, _, lines, _ in exports.samples(6, 11)}
    assert sorted(Path(item["source"]).stem for item in manifest["items"]) == sorted(expected)
    for item in manifest["items"]:
        stem = Path(item["source"]).stem
        got = sorted(f"{exports.CLASSES.index(b[0])} {b[1]:.3f} {b[2]:.3f} {b[3]:.3f} {b[4]:.3f}" for b in item["boxes"])
        want = [] if kind == "coco" and stem.endswith("005") else sorted(
            f"{l.split()[0]} " + " ".join(f"{float(v):.3f}" for v in l.split()[1:]) for l in expected[stem]
        )
        assert got == want, (kind, stem)
    assert home.metadata("processed_images")["num_images"] == 6


def test_coco_maps_sparse_category_ids_by_name_and_counts_crowds(home: Home) -> None:
    root = exports.coco(home.landing / "batch_coco", 4, seed=12)
    annotations = root / "annotations" / "instances_default.json"
    document = json.loads(annotations.read_text())
    orphans = [{"id": 900, "image_id": 999, "category_id": document["categories"][0]["id"], "bbox": [0, 0, 5, 5], "iscrowd": 0},
               {"id": 901, "image_id": document["images"][0]["id"], "category_id": 999, "bbox": [0, 0, 5, 5], "iscrowd": 0}]
    document["annotations"] += orphans  # an unknown image, an unknown category
    annotations.write_text(json.dumps(document))
    exports.mark_complete(root)
    home.tick()
    manifest = home.manifest("labeled_batch", "batch_coco")
    orphaned = [entry for entry in manifest["quarantine"] if entry["reason"] == "annotation_orphan"]
    assert [entry["detail"].split()[1] for entry in orphaned] == ["900", "901"]
    assert all(entry["label"] == "annotations/instances_default.json" for entry in orphaned)
    assert manifest["classes"] == list(exports.CLASSES)
    assert manifest["notes"]["iscrowd_excluded"] == 1
    backgrounds = {Path(item["source"]).stem for item in manifest["items"] if not item["boxes"]}
    unannotated = {stem for stem, _, lines, _ in exports.samples(4, 12) if not lines}
    assert backgrounds == unannotated | {"img_12_003"}  # the last image has no annotation at all


def test_archives_are_batches(home: Home, tmp_path: Path) -> None:
    source = exports.roboflow(tmp_path / "export", 6, seed=13)
    shutil.make_archive(str(home.landing / "batch_zip"), "zip", root_dir=source)
    with tarfile.open(home.landing / "batch_tar.tar.gz", "w:gz") as archive:
        archive.add(source, arcname="export")
    outcomes = home.tick()
    assert [o.success for o in outcomes] == [True, True, True]  # two batches, one dataset version
    for name in ("batch_tar.tar.gz", "batch_zip.zip"):
        assert home.metadata("labeled_batch", name)["num_images"] == 6


def test_a_format_file_forces_the_reader(home: Home) -> None:
    root = exports.label_studio(home.landing / "batch_forced", 3, seed=14)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["wrong"]}))  # would be read as YOLO
    (root / "yolo-assets.yaml").write_text("format: label_studio\n")
    exports.mark_complete(root)
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    assert home.metadata("labeled_batch", "batch_forced")["format"] == "label_studio"


def test_an_unrecognised_batch_fails_with_a_clear_reason(home: Home) -> None:
    root = home.landing / "batch_unknown"
    (root / "pictures").mkdir(parents=True)
    (root / "pictures" / "a.jpg").write_bytes(b"not relevant")
    exports.mark_complete(root)
    [outcome] = home.tick()
    assert not outcome.success and "unrecognised export" in outcome.failure


def test_export_split_is_ignored_by_default_and_honoured_by_policy(home: Home) -> None:
    exports.mark_complete(exports.roboflow(home.landing / "batch_rf", 9, seed=15))
    home.tick()
    manifest = home.manifest("labeled_batch", "batch_rf")
    assert {item["split_hint"] for item in manifest["items"]} == {"train", "val", "test"}
    ours = {item["sha"]: item["split"] for item in home.manifest("processed_images")["items"]}
    assert all(split == split_of(sha, 0.2) for sha, split in ours.items())  # our hash split, not theirs

    from resources.dataset_policy import DatasetPolicy

    home.redefine(dataset_policy=DatasetPolicy(honour_export_split=True))
    assert home.materialize("labeled_batch", "batch_rf").success
    assert home.materialize("processed_images").success
    theirs = {item["sha"]: item["split"] for item in home.manifest("processed_images")["items"]}
    hints = {item["image_sha"]: item["split_hint"] for item in manifest["items"]}
    assert theirs == hints
    assert (Path(home.metadata("processed_images")["path"]) / "test.txt").read_text().count("\n") == 3


def test_dataset_diff_in_metadata_and_cli(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    from yolo_assets.ops.cli import main

    root = exports.mark_complete(exports.label_studio(home.landing / "batch_a", 4, seed=16))
    home.tick()
    first = home.data_version("processed_images")
    relabeled = sorted((root / "labels").glob("*.txt"))[0]
    relabeled.write_text("2 0.5 0.5 0.3 0.3\n")
    os.utime(root / "_SUCCESS")
    exports.mark_complete(exports.label_studio(home.landing / "batch_b", 2, seed=17))
    outcomes = home.tick()
    assert outcomes and all(o.success for o in outcomes)
    # One new dataset version for both: batch_a again (one image relabeled) and batch_b (two images added).
    diff = home.metadata("processed_images")["diff"]
    assert (diff["added"], diff["removed"], diff["relabeled"]) == (2, 0, 1)
    assert main(["diff", first[:10], home.data_version("processed_images")[:10], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["added"], printed["removed"], printed["relabeled"]) == (2, 0, 1)
    assert printed["images_per_class"]["crack"]["relabeled"] == 1
    assert main(["diff", "ffff", first]) == 2
