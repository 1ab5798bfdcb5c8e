"""The dataset build without Dagster: a folder as the object store, hand-written batch manifests."""

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from yolo_assets.core.fileio import object_file
from yolo_assets.core.hashing import canonical_json
from yolo_assets.core.versioning import MANIFEST
from yolo_assets.data.batch_manifest import BatchItem, BatchManifest
from yolo_assets.data.dataset_build import build_dataset, identical_images_across_splits, near_duplicates_across_splits
from yolo_assets.data.dataset_files import BLOBS


class FolderStore:
    """The smallest `ObjectStore`: objects in a local folder, nothing remote to publish or fetch."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def object_root(self, namespace: str) -> Path:
        return self.root / namespace

    def object_path(self, namespace: str, key: str) -> Path:
        return object_file(self.object_root(namespace), key)

    def publish_objects(self, namespace: str, names: Iterable[str], replace: bool = False) -> int:
        return 0

    def fetch_objects(self, namespace: str, names: Iterable[str]) -> int:
        return 0


@dataclass
class Settings:
    max_side: int = 64
    val_fraction: float = 0.3
    jpeg_quality: int = 90
    max_image_pixels: int = 1_000_000
    workers: int = 1

    def preprocess_settings(self) -> dict[str, Any]:
        return {"max_side": self.max_side, "jpeg_quality": self.jpeg_quality, "max_image_pixels": self.max_image_pixels}

    def output_settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "workers"}


@dataclass
class Rules:
    case_sensitive_classes: bool = True
    label_conflicts: str = "quarantine"
    label_match_tolerance: float = 1e-4
    honour_export_split: bool = False
    near_duplicate_distance: int = 4

    def model_dump(self) -> dict[str, Any]:
        return asdict(self)


def blob(store: FolderStore, seed: int) -> str:
    """A distinct 80x60 image in the store's blobs; returns its sha256."""
    image = Image.effect_noise((80, 60), 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    path = store.object_path(BLOBS, sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return sha


def item(sha: str, name: str, box: list[Any]) -> BatchItem:
    return {"source": f"images/{name}.png", "label_source": f"labels/{name}.txt", "image_sha": sha, "label_sha": None,
            "width": 80, "height": 60, "split_hint": None, "boxes": [box]}


def batch(classes: list[str], items: list[BatchItem]) -> BatchManifest:
    return {"format": "yolo", "classes": classes, "items": items, "quarantine": [], "notes": {}}


def test_a_build_unions_batches_quarantines_conflicts_writes_an_ultralytics_dataset_and_reuses_its_images(tmp_path: Path) -> None:
    store, warnings = FolderStore(tmp_path / "store"), list[str]()
    shas = [blob(store, seed) for seed in range(8)]
    a = batch(["scratch"], [item(sha, f"a{i}", ["scratch", 0.5, 0.5, 0.2, 0.2]) for i, sha in enumerate(shas[:5])])
    b = batch(["scratch", "dent"], [
        item(shas[0], "copy", ["scratch", 0.5, 0.5, 0.2, 0.2]),  # the same image, labeled the same: a duplicate
        item(shas[1], "moved", ["scratch", 0.1, 0.1, 0.2, 0.2]),  # the same image, labeled differently: a conflict
        *[item(sha, f"b{i}", ["dent", 0.4, 0.4, 0.3, 0.3]) for i, sha in enumerate(shas[5:7])],
    ])
    first = build_dataset(store, [("a", a), ("b", b)], [], None, Settings(), Rules(), {}, warnings.append)

    assert first.manifest["classes"] == ["scratch", "dent"]
    assert sorted(row["sha"] for row in first.manifest["items"]) == sorted(shas[0:1] + shas[2:7])  # shas[1] quarantined
    assert (first.num_processed, first.duplicates, len(first.conflicts)) == (6, 1, 2)
    assert len(warnings) == 2 and all("labeled differently" in w for w in warnings)
    assert first.version == hashlib.sha256(canonical_json(first.manifest)).hexdigest()
    assert {row["labels"][0][0] for row in first.manifest["items"]} == {0, 1}
    assert identical_images_across_splits(first.manifest) == [] and near_duplicates_across_splits(first.manifest) == []

    staging = tmp_path / "version"
    staging.mkdir()
    first.write(staging)
    assert json.loads((staging / MANIFEST).read_bytes()) == first.manifest
    data = yaml.safe_load((staging / "data.yaml").read_text())
    assert data["names"] == {0: "scratch", 1: "dent"}
    listed = [line for split in ("train", "val") for line in (staging / f"{split}.txt").read_text().split()]
    assert len(listed) == 6 and all(Path(image).is_file() for image in listed)
    assert all(Path(image.replace("/images/", "/labels/")).with_suffix(".txt").read_text().strip() for image in listed)

    # The same inputs again, on top of the first version: nothing decoded, the same version.
    again = build_dataset(store, [("a", a), ("b", b)], first.manifest["classes"], first.manifest, Settings(), Rules(), {}, warnings.append)
    assert (again.version, again.num_processed) == (first.version, 0)
    # One more batch: only its image is decoded, and every earlier image keeps its split.
    c = batch(["dent"], [item(shas[7], "c0", ["dent", 0.5, 0.5, 0.1, 0.1])])
    grown = build_dataset(store, [("a", a), ("b", b), ("c", c)], first.manifest["classes"], first.manifest, Settings(), Rules(), {}, warnings.append)
    assert grown.num_processed == 1 and grown.version != first.version
    before = {row["sha"]: row["split"] for row in first.manifest["items"]}
    assert {row["sha"]: row["split"] for row in grown.manifest["items"] if row["sha"] in before} == before


def test_identical_images_in_two_splits_are_found_by_bytes_and_by_pixels() -> None:
    rows = [
        {"sha": "a" * 64, "pixel_sha": "p1", "split": "train"},
        {"sha": "b" * 64, "pixel_sha": "p1", "split": "val"},  # another encoding of the same pixels
        {"sha": "c" * 64, "pixel_sha": "p2", "split": "train"},
    ]
    manifest: Any = {"items": rows, "near_duplicates": [["a" * 64, "c" * 64, 3]]}
    assert identical_images_across_splits(manifest) == [{"identical_by": "pixel_sha", "splits": ["train", "val"], "images": ["a" * 12, "b" * 12]}]
    assert near_duplicates_across_splits(manifest) == []
    manifest["near_duplicates"] = [["b" * 64, "c" * 64, 2]]
    assert near_duplicates_across_splits(manifest) == [("b" * 64, "c" * 64, 2)]
