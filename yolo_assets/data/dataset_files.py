"""The files of a dataset build, on any object store: the per-image preprocessing cache, the
content-addressed image/label pairs ultralytics reads, and the image lists naming them. Dagster-free:
`processed_images` (assets/dataset.py) and the fresh-batch scoring hand in their artifact store, which
meets `ObjectStore`; a test can hand in a folder.

One image's way: its blob (`blobs/<sha>`, written by the batch ingest) -> the cache of its settings
(`preprocessed/<settings>/<sha>.jpg` + record) -> a pair `dataset-items/<pair>/{images,labels}/<sha>`
-> a line of `train.txt` or `val.txt`.
"""

import os
import shutil
import uuid
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from yolo_assets.core.fileio import link_or_copy, object_relpath
from yolo_assets.core.hashing import hash_json
from yolo_assets.core.parallel import parallel_starmap
from yolo_assets.data.dataset_manifest import DatasetManifest, DatasetRow, label_text, pair_files
from yolo_assets.data.preprocess import (
    PREPROCESS_FIELDS,
    cache_entry_names,
    cached_image,
    cached_record,
    preprocess_namespace,
    preprocess_one,
)

BLOBS = "blobs"
DATASET_ITEMS = "dataset-items"
DATASET_LISTS = "dataset-lists"
SPLITS = ("train", "val", "test")
RECORD_FIELDS = ("width", "height", "file_sha", "pixel_sha", "dhash")


class ObjectStore(Protocol):
    """Content-addressed objects by namespace, mirrored in a local folder (resources/artifact_store.py)."""

    def object_root(self, namespace: str) -> Path: ...

    def object_path(self, namespace: str, key: str) -> Path: ...

    def publish_objects(self, namespace: str, names: Iterable[str], replace: bool = False) -> int: ...

    def fetch_objects(self, namespace: str, names: Iterable[str]) -> int: ...


def preprocess_missing(
    store: ObjectStore,
    items: Collection[str],
    settings: Mapping[str, Any],
    workers: int = 0,
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Mapping[str, Any]], int]:
    """Cache records for every item (by image sha256) under the preprocess `settings`; decodes only the
    images not cached for them (on any machine: a remote store is asked for the records this one lacks).
    `known` records (the previous dataset's rows) are taken as they are. Returns the records and how
    many images were decoded."""
    namespace = preprocess_namespace(dict(settings))
    cache_root = store.object_root(namespace)
    known = known or {}
    store.fetch_objects(namespace, [cache_entry_names(sha)[1] for sha in items if sha not in known])
    records = {sha: known.get(sha) or cached_record(cache_root, sha) for sha in items}
    missing = sorted(sha for sha, record in records.items() if record is None or any(f not in record for f in RECORD_FIELDS))
    store.fetch_objects(BLOBS, [object_relpath(sha) for sha in missing])
    fresh = parallel_starmap(
        preprocess_one,
        [
            (str(store.object_path(BLOBS, sha)), str(cache_root), sha, settings["max_side"], settings["jpeg_quality"], settings["max_image_pixels"])
            for sha in missing
        ],
        workers,
    )
    store.publish_objects(namespace, [name for sha in missing for name in cache_entry_names(sha)])
    complete: dict[str, Mapping[str, Any]] = {**{sha: r for sha, r in records.items() if r is not None}, **dict(zip(missing, fresh))}
    return complete, len(missing)


def pair_key(namespace: str, sha: str, labels: list[list[Any]]) -> str:
    """Content address of an image/label pair: the preprocessed image and its label text."""
    return hash_json([namespace, sha, labels])


def ensure_item_folder(store: ObjectStore, cache_root: Path, row: DatasetRow) -> None:
    """Write the content-addressed pair `<pair>/images/<sha>.jpg` + `<pair>/labels/<sha>.txt` unless
    it is there.

    Ultralytics finds a label by swapping the last `/images/` of the image path for `/labels/`, so
    dataset versions can list these shared pairs instead of re-linking every image: a new version
    costs O(new items) file operations plus two list files.
    """
    sha, folder = row["sha"], store.object_path(DATASET_ITEMS, row["pair"])
    if os.path.exists(f"{folder}/images/{sha}.jpg"):
        return
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    os.makedirs(f"{staging}/images")
    os.mkdir(f"{staging}/labels")
    with open(f"{staging}/labels/{sha}.txt", "w") as label_file:
        label_file.write(label_text(row["labels"]))
    link_or_copy(cached_image(cache_root, sha), f"{staging}/images/{sha}.jpg")
    try:
        os.rename(staging, folder)  # atomic: the pair appears complete or not at all
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # a concurrent writer committed the same pair


def write_pairs(store: ObjectStore, manifest: DatasetManifest, listed: set[str]) -> Path:
    """Make every pair of `manifest` durable in the store; returns the local dataset-items root.

    Pairs in `listed` belong to a committed earlier version, so they exist: only the others are
    checked and written, from the preprocessing cache of the manifest's settings.
    """
    namespace = preprocess_namespace({name: manifest["settings"][name] for name in PREPROCESS_FIELDS})
    cache_root = store.object_root(namespace)
    new_pairs = [row for row in manifest["items"] if row["pair"] not in listed]
    store.fetch_objects(namespace, [cache_entry_names(row["sha"])[0] for row in new_pairs])
    for row in new_pairs:
        ensure_item_folder(store, cache_root, row)
    store.publish_objects(DATASET_ITEMS, [name for row in new_pairs for name in pair_files(row)])
    return store.object_root(DATASET_ITEMS)


def write_lists(folder: Path, manifest: DatasetManifest, items_root: Path) -> Path:
    """data.yaml and the train/val(/test) image lists ultralytics reads, naming the pairs under
    `items_root`; returns data.yaml."""
    lists: dict[str, list[str]] = {split: [] for split in SPLITS}
    for row in manifest["items"]:
        lists[row["split"]].append(f"{items_root}/{pair_files(row)[0]}")
    for split, paths in lists.items():
        if paths or split != "test":
            (folder / f"{split}.txt").write_text("".join(f"{path}\n" for path in paths))
    data_yaml: dict[str, Any] = {"train": "train.txt", "val": "val.txt"}  # resolved next to this file
    if lists["test"]:
        data_yaml["test"] = "test.txt"
    data_yaml.update({"nc": len(manifest["classes"]), "names": dict(enumerate(manifest["classes"]))})
    (folder / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    return folder / "data.yaml"


def local_lists(store: ObjectStore, folder: Path, manifest: DatasetManifest, version: str) -> Path:
    """data.yaml of dataset version `version` (stored in `folder`) with every image and label on this
    machine: what a remote store lacks here is fetched (once per machine, not once per training). The
    stored lists name the dataset-items root of the machine that built the version; where this
    machine's root differs, lists of its own are written beside its object mirror."""
    store.fetch_objects(DATASET_ITEMS, [name for row in manifest["items"] for name in pair_files(row)])
    items_root = store.object_root(DATASET_ITEMS)
    with open(folder / "train.txt") as train, open(folder / "val.txt") as val:
        first = train.readline() or val.readline()  # one path tells where the lists are rooted
    if first.startswith(f"{items_root}/"):
        return folder / "data.yaml"
    rerooted = store.object_root(DATASET_LISTS) / version
    if not (rerooted / "data.yaml").exists():
        staging = rerooted.with_name(f".{version}.{uuid.uuid4().hex}")
        staging.mkdir(parents=True)
        write_lists(staging, manifest, items_root)
        try:
            os.rename(staging, rerooted)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process wrote the same lists first
    return rerooted / "data.yaml"
