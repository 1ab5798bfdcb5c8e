"""The landing zone -> labeled_batch -> processed_images flow through the real Dagster instance."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import exports
from helpers import REPO, Home, subprocess_env

from resources.landing_zone import LocalLandingZone
from yolo_assets.core.home import hash_cache_path
from yolo_assets.data.landing_contract import SUCCESS_MARKER
from yolo_assets.data.splits import split_of


def test_sensor_ingests_each_complete_batch_once(home: Home, land_copy) -> None:
    land_copy("batch_a", 30, 1)
    land_copy("batch_b", 12, 2)
    outcomes = home.tick()
    # One labeled_batch run per batch, then one dataset version for both.
    assert [(o.description.split()[0], o.success) for o in outcomes] == [
        ("labeled_data_sensor", True), ("labeled_data_sensor", True), ("dataset_sensor", True)
    ]
    assert sorted(home.instance.get_dynamic_partitions("batches")) == ["batch_a", "batch_b"]
    meta = home.metadata("processed_images")
    assert meta["num_images"] == 42
    assert meta["input_batches"] == {
        "batch_a": home.data_version("labeled_batch", "batch_a"),
        "batch_b": home.data_version("labeled_batch", "batch_b"),
    }
    assert sum(meta["splits"].values()) == 42 and meta["splits"]["val"] > 0
    assert home.tick() == []  # a second tick requests nothing


def test_rematerialising_unchanged_inputs_is_a_cache_hit(home: Home, land_copy) -> None:
    land_copy("batch_a", 12, 1)
    home.tick()
    version = home.data_version("processed_images")
    assert home.materialize("processed_images").success
    meta = home.metadata("processed_images")
    assert (meta["cache_hit"], meta["num_processed"]) == (True, 0)
    assert home.data_version("processed_images") == version
    assert home.materialize("labeled_batch", "batch_a").success
    assert home.metadata("labeled_batch", "batch_a")["cache_hit"] is True


def test_new_batch_changes_version_and_processes_only_its_images(home: Home, land_copy) -> None:
    land_copy("batch_a", 30, 1)
    home.tick()
    first = home.manifest("processed_images")
    first_version = home.data_version("processed_images")
    land_copy("batch_b", 5, 7)
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    meta = home.metadata("processed_images")
    assert (meta["num_processed"], meta["num_images"], meta["cache_hit"]) == (5, 35, False)
    second = home.manifest("processed_images")
    assert home.data_version("processed_images") not in (meta["cache_key"], first_version)
    # An image never changes split as the data grows.
    before = {item["sha"]: item["split"] for item in first["items"]}
    after = {item["sha"]: item["split"] for item in second["items"]}
    assert all(after[sha] == split for sha, split in before.items())
    assert all(split_of(sha, 0.2) == split for sha, split in after.items())


def test_batch_without_marker_is_ignored_until_the_marker_lands(home: Home, land_copy) -> None:
    batch = land_copy("batch_a", 6, 1)
    (batch / SUCCESS_MARKER).unlink()
    assert home.tick() == []
    assert home.instance.get_dynamic_partitions("batches") == []
    (batch / SUCCESS_MARKER).write_text("")
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success and home.metadata("labeled_batch", "batch_a")["num_images"] == 6


def first_labeled(batch: Path) -> Path:
    """The batch's first label file that holds a box."""
    return next(p for p in sorted((batch / "labels").glob("*.txt")) if p.read_text().strip())


def change_first_class(label: Path) -> str:
    """Give the label's first box another class id (same byte size); returns the new text."""
    text = label.read_text()
    edited = ("1" if text[0] != "1" else "2") + text[1:]
    label.write_text(edited)
    return edited


def test_edited_label_of_the_same_size_changes_the_version(home: Home, land_copy) -> None:
    batch = land_copy("batch_a", 6, 1)
    home.tick()
    version = home.data_version("labeled_batch", "batch_a")
    label = first_labeled(batch)
    size = label.stat().st_size
    edited = change_first_class(label)
    assert label.stat().st_size == size
    assert home.materialize("labeled_batch", "batch_a").success
    assert home.data_version("labeled_batch", "batch_a") != version
    # The sensor sees a re-upload once the marker is rewritten, and ingests it under a new run key.
    os.utime(batch / SUCCESS_MARKER, ns=(0, 1))
    dataset_before = home.data_version("processed_images")
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    assert home.data_version("processed_images") != dataset_before
    # The new version reuses the unchanged image/label pairs, but ultralytics reads the edited label.
    edited_sha = next(i["image_sha"] for i in home.manifest("labeled_batch", "batch_a")["items"] if i["label_source"].endswith(label.name))
    labels_read = dataset_label_files(home)
    assert labels_read[edited_sha].split()[0] == edited.split()[0]
    assert len(labels_read) == home.metadata("processed_images")["num_images"]


def dataset_label_files(home: Home) -> dict[str, str]:
    """image hash -> the label text ultralytics reads for it (image path with /images/ -> /labels/)."""
    folder = Path(home.metadata("processed_images")["path"])
    texts = {}
    for split in ("train", "val"):
        for line in (folder / f"{split}.txt").read_text().split():
            image = Path(line)
            label = Path(line.replace("/images/", "/labels/")).with_suffix(".txt")
            texts[image.stem] = label.read_text()
    return texts


def test_reuploaded_batch_with_new_content_is_ingested_again(home: Home, land_copy, synthetic_batch_cache: Path) -> None:
    land_copy("batch_a", 6, 1)
    home.tick()
    first_version = home.data_version("labeled_batch", "batch_a")
    shutil.rmtree(home.landing / "batch_a")
    land_copy("batch_a", 6, 2)  # same name, different images
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    assert home.data_version("labeled_batch", "batch_a") != first_version
    assert home.metadata("processed_images")["num_images"] == 6


def test_bad_items_are_quarantined_and_good_ones_kept(home: Home, land_copy) -> None:
    batch = land_copy("batch_a", 12, 1)
    images = sorted((batch / "images").glob("*.jpg"))
    images[0].write_bytes(images[0].read_bytes()[: images[0].stat().st_size // 2])  # cut short
    (batch / "labels" / f"{images[1].stem}.txt").write_text("0 0.5 0.5 0.1\n")  # malformed label
    (batch / "labels" / f"{images[2].stem}.txt").write_text("9 0.5 0.5 0.1 0.1\n")  # unknown class
    (batch / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # label without image
    batch_run, dataset_run = home.tick(run_config={"ops": {"labeled_batch": {"config": {"max_quarantined_fraction": 0.5}}}})
    assert batch_run.success and dataset_run.success
    meta = home.metadata("labeled_batch", "batch_a")
    assert meta["num_images"] == 9 and meta["num_quarantined"] == 4
    assert meta["quarantine_reasons"] == {
        "image_truncated": 1,
        "label_malformed": 1,
        "class_unknown": 1,
        "image_missing": 1,
    }
    quarantine_dir = Path(meta["path"]) / "quarantine"
    assert (quarantine_dir / "images" / images[0].name).exists()
    assert (quarantine_dir / "labels" / "orphan.txt").exists()
    assert home.metadata("processed_images")["num_images"] == 9


def test_label_validity_blocks_a_mostly_broken_batch(home: Home, land_copy) -> None:
    land_copy("good", 8, 1)
    home.tick()
    good_version = home.data_version("processed_images")
    bad = land_copy("bad", 8, 2)
    for label in sorted((bad / "labels").glob("*.txt"))[:4]:
        label.write_text("0 1.7 0.5 0.1 0.1\n")
    [failed] = home.tick()  # no dataset run: the blocked batch brings nothing the dataset would include
    assert not failed.success
    status, metadata = home.check("labeled_batch", "label_validity")
    assert status == "FAILED" and metadata["quarantine_reasons"] == {"coords_out_of_range": 4}
    assert home.data_version("processed_images") == good_version
    # The next build of the dataset leaves the failed batch out, and says so.
    assert home.materialize("processed_images").success
    meta = home.metadata("processed_images")
    assert list(meta["excluded_batches"]) == ["bad"] and "label_validity failed" in meta["excluded_batches"]["bad"]
    assert meta["num_images"] == 8


def test_our_split_keeps_identical_pictures_together(home: Home) -> None:
    jpeg, png = exports.same_picture_twice()
    batch = home.land("batch_a", 6, 1)
    (batch / "images" / "copy_a.jpg").write_bytes(jpeg)
    (batch / "images" / "copy_b.png").write_bytes(png)
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    by_pixels: dict[str, set[str]] = {}
    for item in home.manifest("processed_images")["items"]:
        by_pixels.setdefault(item["pixel_sha"], set()).add(item["split"])
    assert all(len(splits) == 1 for splits in by_pixels.values())
    assert len(by_pixels) == 7  # 8 images, two of them the same picture
    assert home.check("processed_images", "split_leakage")[0] == "SUCCEEDED"
    status, metadata = home.check("processed_images", "near_duplicates")
    assert status == "SUCCEEDED" and metadata["num_pairs"] >= 1


def test_split_leakage_blocks_an_export_split_that_leaks(home: Home) -> None:
    from resources.dataset_policy import DatasetPolicy

    home.redefine(dataset_policy=DatasetPolicy(honour_export_split=True))
    jpeg, png = exports.same_picture_twice()
    batch = home.land("batch_a", 6, 1)
    for split, name, data in (("train", "copy_a.jpg", jpeg), ("val", "copy_b.png", png)):
        (batch / "images" / split).mkdir(exist_ok=True)
        (batch / "images" / split / name).write_bytes(data)
    batch_run, outcome = home.tick()
    assert batch_run.success and not outcome.success and "split_leakage" in outcome.failure
    status, metadata = home.check("processed_images", "split_leakage")
    assert status == "FAILED" and metadata["num_leaks"] == 1
    assert metadata["leaks"][0]["identical_by"] == "pixel_sha"


def test_archive_batch_is_complete_as_one_file(home: Home, land_copy, tmp_path: Path) -> None:
    source = land_copy("staging_only", 6, 3)
    (source / SUCCESS_MARKER).unlink()
    shutil.make_archive(str(home.landing / "batch_zip"), "zip", root_dir=source.parent, base_dir=source.name)
    shutil.rmtree(source)
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    assert home.metadata("labeled_batch", "batch_zip.zip")["num_images"] == 6
    assert home.tick() == []  # complete once: the same archive is not ingested again


def test_classes_are_reconciled_by_name_across_batches(home: Home) -> None:
    home.land("batch_a", 6, 1, classes=("scratch", "spot", "crack"))
    home.land("batch_b", 6, 2, classes=("crack", "dent"))
    outcomes = home.tick()
    assert len(outcomes) == 3 and all(o.success for o in outcomes)
    manifest = home.manifest("processed_images")
    assert manifest["classes"] == ["scratch", "spot", "crack", "dent"]
    batch_b = home.manifest("labeled_batch", "batch_b")
    ids = {item["image_sha"]: [box[0] for box in item["boxes"]] for item in batch_b["items"]}
    matched = [item for item in manifest["items"] if item["sha"] in ids]
    assert len(matched) == len(ids) == 6
    for item in matched:
        assert [manifest["classes"][label[0]] for label in item["labels"]] == ids[item["sha"]]


def test_dataset_is_ultralytics_ready_and_its_cache_files_do_not_change_the_version(home: Home, land_copy) -> None:
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    land_copy("batch_a", 30, 1)
    home.tick()
    version = home.data_version("processed_images")
    folder = Path(home.metadata("processed_images")["path"])
    data = check_det_dataset(str(folder / "data.yaml"))
    dataset = YOLODataset(img_path=data["train"], data=data, imgsz=128, augment=False)
    assert len(dataset) == home.metadata("processed_images")["splits"]["train"]
    assert sum(len(label["cls"]) for label in dataset.labels) > 0
    assert Path(dataset.label_files[0]).parent.with_suffix(".cache").exists()  # ultralytics wrote its cache
    # Rebuild from scratch (cache pointer removed): same manifest, same data version.
    shutil.rmtree(home.store / "processed_images" / "_cache_keys")
    assert home.materialize("processed_images").success
    assert home.data_version("processed_images") == version


class UploaderRewritesALabelMidRead(LocalLandingZone):
    """The real local landing zone, plus an uploader that rewrites one label of the batch after
    `labeled_batch` hashed it and before it reads it (the first time only)."""

    flag_dir: str

    @contextmanager
    def open_batch(self, name: str) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
        flag = Path(self.flag_dir) / f"rewritten-{name}"
        if not flag.exists():
            flag.touch()
            change_first_class(first_labeled(Path(self.root) / name))
        with super().open_batch(name) as opened:
            yield opened


def test_a_batch_rewritten_while_it_is_read_is_read_again(home: Home, land_copy, tmp_path: Path) -> None:
    batch = land_copy("batch_a", 6, 1)
    home.redefine(landing_zone=UploaderRewritesALabelMidRead(
        root=str(home.landing), hash_cache_path=str(hash_cache_path(home.path)), flag_dir=str(tmp_path)
    ))
    batch_run, dataset_run = home.tick()
    assert batch_run.success and dataset_run.success
    logs = home.instance.all_logs(batch_run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(logs) == 1 and "changed while it was being read" in str(logs[0].dagster_event.event_specific_data)
    # What is stored is the batch as it is now, keyed by its current content: one consistent upload.
    home.redefine()
    assert home.resource("landing_zone").content_hash("batch_a") == home.metadata("labeled_batch", "batch_a")["content_hash"]
    stored = {item["label_source"]: item["boxes"] for item in home.manifest("labeled_batch", "batch_a")["items"]}
    rewritten = first_labeled(batch)
    assert stored[f"labels/{rewritten.name}"][0][0] == home.manifest("labeled_batch", "batch_a")["classes"][int(rewritten.read_text()[0])]


def test_a_run_that_never_trains_or_scores_does_not_import_torch(home: Home, land_copy) -> None:
    """Every batch's ingest run (and the dataset build after it) in its own process, as the daemon
    launches them: torch and ultralytics take seconds of CPU to import, and none of these steps uses them."""
    land_copy("batch_a", 3, seed=1)
    script = ("import sys; from yolo_assets.ops.cli import main; code = main(['tick', '--no-automation']); "
              "print(code, sorted(m for m in ('torch', 'ultralytics', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(home.path), capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout[-2000:] + done.stderr[-2000:]
    assert home.instance.get_latest_materialization_event(dg.AssetKey("processed_images")) is not None
