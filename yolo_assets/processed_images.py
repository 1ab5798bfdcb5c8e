"""`processed_images`: the union of accepted batches as one ultralytics-ready dataset version.

Split: an image's split is a pure function of its content hash and `val_fraction`, so it never moves
as the data grows. Preprocessing goes through the per-image cache, so adding k images decodes k.
"""


import os
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import numpy as np
import yaml

from resources.artifact_store import ArtifactStore
from resources.dataset_policy import DatasetPolicy
from yolo_assets.retries import TRANSIENT_RETRY
from yolo_assets.batches import BLOBS, LABEL_CONFLICT, LABELED_BATCH, BatchVersion, labeled_batch, latest_batch_versions, quarantine_table
from yolo_assets.checks import NEAR_DUPLICATES, SPLIT_LEAKAGE, near_duplicates_result, split_leakage_result
from yolo_assets.fileio import atomic_write_bytes, link_or_copy, object_relpath
from yolo_assets.formats import class_key
from yolo_assets.hashing import hash_json
from yolo_assets.parallel import parallel_starmap
from yolo_assets.preprocess import cached_image, cached_record, preprocess_namespace, preprocess_one
from yolo_assets.versioning import cache_key, encoded_manifest, latest_data_version

PROCESSED_IMAGES = "processed_images"
PROCESSED_IMAGES_CODE_VERSION = "2"
SPLITS = ("train", "val", "test")
DATASET_ITEMS = "dataset-items"


class ProcessedImagesConfig(dg.Config):
    max_side: int = 640
    """Long side of the stored images in pixels; smaller images are not upscaled."""
    val_fraction: float = 0.2
    """Share of images in the val split (by content hash: stable as the data grows)."""
    jpeg_quality: int = 95
    max_image_pixels: int = 50_000_000
    workers: int = 0
    """Preprocessing processes; 0 = one per core. Does not change the output."""

    def preprocess_settings(self) -> dict[str, Any]:
        return {"max_side": self.max_side, "jpeg_quality": self.jpeg_quality, "max_image_pixels": self.max_image_pixels}

    def output_settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"workers"})


def split_of(image_sha: str, val_fraction: float) -> str:
    return "val" if int(image_sha[:12], 16) / 16**12 < val_fraction else "train"


def union_of_batches(
    store: ArtifactStore, batches: list[BatchVersion], policy: DatasetPolicy
) -> tuple[list[str], dict[str, dict[str, Any]], int, list[dict[str, Any]]]:
    """Class names reconciled by name (ids in order of first appearance), items keyed by image hash.

    The same image in two batches with the same labels is kept once; with different labels it is a
    conflict: both copies leave the dataset (listed with the reason), or under `last_writer_wins`
    the batch that landed last wins. Returns (classes, items, duplicates, conflicts).
    """
    classes: list[str] = []
    keys: set[str] = set()
    items: dict[str, dict[str, Any]] = {}
    conflicted: dict[str, list[dict[str, Any]]] = {}
    duplicates = 0

    def canonical(boxes: list[list[Any]]) -> list[list[Any]]:
        return sorted([class_key(b[0], policy.case_sensitive_classes), *b[1:]] for b in boxes)

    for batch in batches:
        manifest = store.read_json(LABELED_BATCH, batch.data_version, "manifest.json")
        for name in manifest["classes"]:
            if class_key(name, policy.case_sensitive_classes) not in keys:
                keys.add(class_key(name, policy.case_sensitive_classes))
                classes.append(name)
        for item in manifest["items"]:
            sha, entry = item["image_sha"], {**item, "batch": batch.partition}
            if sha in conflicted:
                conflicted[sha].append(entry)
            elif sha not in items or policy.label_conflicts == "last_writer_wins":
                duplicates += sha in items
                items[sha] = entry
            elif canonical(items[sha]["boxes"]) == canonical(item["boxes"]):
                duplicates += 1
            else:
                conflicted[sha] = [items.pop(sha), entry]
    conflicts = [
        {"image": f"{c['batch']}/{c['source']}", "label": c.get("label_source"), "reason": LABEL_CONFLICT,
         "detail": "labeled differently in " + ", ".join(f"{x['batch']}/{x['source']}" for x in copies)}
        for copies in conflicted.values()
        for c in copies
    ]
    return classes, items, duplicates, conflicts


# Near-duplicates come in small groups (an image and its augmented copies); a hash band shared by
# more images than this carries no information (flat, textureless regions) and would make the
# lookup quadratic.
MAX_BUCKET = 16


def near_duplicate_pairs(records: dict[str, dict[str, Any]], max_distance: int) -> list[tuple[str, str, int]]:
    """Pairs of images whose perceptual hashes differ in at most `max_distance` bits, sorted.

    Band the 64-bit hash into max_distance + 1 chunks: two hashes that close agree exactly on at
    least one chunk (pigeonhole), so only images sharing a chunk value are compared: no N^2 scan.
    Vectorised: per band, sort the chunk values and pair each image with the next MAX_BUCKET - 1
    images of the same value, which costs a few milliseconds per thousand images.
    """
    shas = sorted(records)
    if len(shas) < 2:
        return []
    hashes = np.array([int(records[sha]["dhash"], 16) for sha in shas], dtype=np.uint64)
    bands = min(max_distance + 1, 64)
    width = -(-64 // bands)
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(2**64 - 1)
    firsts, seconds = [], []
    for band in range(bands):
        values = (hashes >> np.uint64(band * width)) & mask
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sizes = np.diff(np.r_[starts, len(ordered)])
        usable = np.repeat(sizes <= MAX_BUCKET, sizes)  # members of buckets that carry information
        for offset in range(1, min(MAX_BUCKET, len(ordered))):
            same = (ordered[offset:] == ordered[:-offset]) & usable[offset:]
            firsts.append(order[:-offset][same])
            seconds.append(order[offset:][same])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    low, high = np.minimum(first, second), np.maximum(first, second)
    candidates = np.unique(low.astype(np.int64) * len(shas) + high)
    low, high = candidates // len(shas), candidates % len(shas)
    distances = np.bitwise_count(hashes[low] ^ hashes[high])
    close = distances <= max_distance
    return [(shas[a], shas[b], int(d)) for a, b, d in zip(low[close], high[close], distances[close])]


def assign_splits(
    items: dict[str, dict[str, Any]], pairs: list[tuple[str, str, int]], config: "ProcessedImagesConfig", policy: DatasetPolicy
) -> dict[str, str]:
    """Our split: a pure function of the content hash, and near-duplicates follow the smallest hash
    of their group so augmented copies never straddle train and val. Or the export's own split."""
    if policy.honour_export_split:
        return {sha: item.get("split_hint") or split_of(sha, config.val_fraction) for sha, item in items.items()}
    parent = {sha: sha for sha in items}

    def find(sha: str) -> str:
        while parent[sha] != sha:
            parent[sha] = parent[parent[sha]]
            sha = parent[sha]
        return sha

    for a, b, _ in pairs:
        if a in parent and b in parent:
            low, high = sorted((find(a), find(b)))
            parent[high] = low
    return {sha: split_of(find(sha), config.val_fraction) for sha in items}


RECORD_FIELDS = ("width", "height", "file_sha", "pixel_sha", "dhash")


class StoredDataset(NamedTuple):
    version: str
    manifest: dict[str, Any]


def previous_dataset(instance: dg.DagsterInstance, store: ArtifactStore) -> StoredDataset | None:
    """The latest dataset version and its manifest, read once per build: the per-image records,
    the item folders and the diff all come from it."""
    version = latest_data_version(instance, PROCESSED_IMAGES)
    if not version or not store.exists(PROCESSED_IMAGES, version):
        return None
    return StoredDataset(version, store.read_json(PROCESSED_IMAGES, version, "manifest.json"))


def reusable_rows(previous: dict[str, Any] | None, config: ProcessedImagesConfig) -> dict[str, dict[str, Any]]:
    """Rows of the previous dataset, by image hash, when it was built with the same preprocessing.

    Their per-image records and item folders are reused as they are: an incremental build reads
    one manifest instead of one cache record per image, and checks no folder it already listed.
    """
    if not previous or not previous["items"]:
        return {}
    if ProcessedImagesConfig(**previous["settings"]).preprocess_settings() != config.preprocess_settings():
        return {}
    if any(field not in previous["items"][0] for field in (*RECORD_FIELDS, "pair")):
        return {}  # written by an older code version
    return {row["sha"]: row for row in previous["items"]}


def preprocess_missing(
    store: ArtifactStore,
    items: dict[str, dict[str, Any]],
    config: ProcessedImagesConfig,
    known: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Cache records for every item; decodes only the images not cached for these settings."""
    cache_root = store.object_root(preprocess_namespace(config.preprocess_settings()))
    known = known or {}
    records = {sha: known.get(sha) or cached_record(cache_root, sha) for sha in items}
    missing = sorted(sha for sha, record in records.items() if record is None or any(f not in record for f in RECORD_FIELDS))
    settings = config.preprocess_settings()
    fresh = parallel_starmap(
        preprocess_one,
        [
            (str(store.object_path(BLOBS, sha)), str(cache_root), sha, settings["max_side"], settings["jpeg_quality"], settings["max_image_pixels"])
            for sha in missing
        ],
        config.workers,
    )
    records.update(zip(missing, fresh))
    return records, len(missing)  # type: ignore[return-value]


def pair_key(namespace: str, sha: str, labels: list[list[Any]]) -> str:
    """Content address of an image/label pair: the preprocessed image and its label text."""
    return hash_json([namespace, sha, labels])


def build_manifest(
    classes: list[str],
    items: dict[str, dict[str, Any]],
    records: dict[str, dict[str, Any]],
    pairs: list[tuple[str, str, int]],
    config: ProcessedImagesConfig,
    policy: DatasetPolicy,
    reusable: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    splits = assign_splits(items, pairs, config, policy)
    namespace = preprocess_namespace(config.preprocess_settings())
    class_id = {class_key(name, policy.case_sensitive_classes): i for i, name in enumerate(classes)}
    rows = []
    for sha in sorted(items):
        item, record = items[sha], records[sha]
        labels = [[class_id[class_key(box[0], policy.case_sensitive_classes)], *box[1:]] for box in item["boxes"]]
        previous = reusable.get(sha)
        if previous and previous["labels"] == labels and previous["split"] == splits[sha]:
            rows.append(previous)  # same image, labels and split as in the previous version: same row
            continue
        rows.append(
            {
                "sha": sha,
                "split": splits[sha],
                "file_sha": record["file_sha"],
                "pixel_sha": record["pixel_sha"],
                "dhash": record["dhash"],
                "width": record["width"],
                "height": record["height"],
                "labels": labels,
                "pair": previous["pair"] if previous and previous["labels"] == labels else pair_key(namespace, sha, labels),
            }
        )
    return {
        "classes": classes,
        "settings": config.output_settings(),
        "policy": policy.model_dump(),
        "items": rows,
        "near_duplicates": [list(pair) for pair in pairs],
    }


def label_text(labels: list[list[float]]) -> str:
    return "".join(f"{int(l[0])} {l[1]:.6f} {l[2]:.6f} {l[3]:.6f} {l[4]:.6f}\n" for l in labels)


def ensure_item_folder(store: ArtifactStore, cache_root: Path, row: dict[str, Any]) -> None:
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


def write_dataset(
    store: ArtifactStore,
    manifest: dict[str, Any],
    encoded: bytes,
    version: str,
    listed: set[str],
) -> None:
    """The ultralytics-ready dataset: data.yaml naming train.txt / val.txt image lists, and the manifest.

    Pairs in `listed` belong to a committed earlier version, so they exist: only the others are
    checked and written.
    """
    cache_root = store.object_root(preprocess_namespace(ProcessedImagesConfig(**manifest["settings"]).preprocess_settings()))
    items_root = store.object_root(DATASET_ITEMS)
    lists: dict[str, list[str]] = {split: [] for split in SPLITS}
    for row in manifest["items"]:
        if row["pair"] not in listed:
            ensure_item_folder(store, cache_root, row)
        lists[row["split"]].append(f"{items_root}/{object_relpath(row['pair'])}/images/{row['sha']}.jpg")
    with store.write_artifact(PROCESSED_IMAGES, version) as staging:
        for split, paths in lists.items():
            if paths or split != "test":
                (staging / f"{split}.txt").write_text("".join(f"{path}\n" for path in paths))
        data_yaml: dict[str, Any] = {"train": "train.txt", "val": "val.txt"}  # resolved next to this file
        if lists["test"]:
            data_yaml["test"] = "test.txt"
        data_yaml.update({"nc": len(manifest["classes"]), "names": dict(enumerate(manifest["classes"]))})
        (staging / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
        atomic_write_bytes(staging / "manifest.json", encoded, durable=True)


def dataset_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Images added / removed / relabeled between two dataset manifests, and box counts per class."""

    def named(manifest: dict[str, Any], row: dict[str, Any]) -> list[list[Any]]:
        return sorted([manifest["classes"][int(l[0])], *l[1:]] for l in row["labels"])

    before = {row["sha"]: row for row in old["items"]}
    after = {row["sha"]: row for row in new["items"]}
    same_classes = old["classes"] == new["classes"]
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    relabeled = sorted(
        sha
        for sha in before.keys() & after.keys()
        if (not same_classes or before[sha]["labels"] != after[sha]["labels"])
        and named(old, before[sha]) != named(new, after[sha])
    )
    per_class: dict[str, dict[str, int]] = {}
    for shas, manifest, rows, field in ((added, new, after, "added"), (removed, old, before, "removed"), (relabeled, new, after, "relabeled")):
        for sha in shas:
            for name in {box[0] for box in named(manifest, rows[sha])} or {"(background)"}:
                per_class.setdefault(name, {"added": 0, "removed": 0, "relabeled": 0})[field] += 1
    return {
        "added": len(added),
        "removed": len(removed),
        "relabeled": len(relabeled),
        "images_per_class": per_class,
        "examples": {"added": added[:5], "removed": removed[:5], "relabeled": relabeled[:5]},
    }


def dataset_metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    splits = Counter(item["split"] for item in manifest["items"])
    boxes = Counter(manifest["classes"][int(l[0])] for item in manifest["items"] for l in item["labels"])
    return {
        "num_images": len(manifest["items"]),
        "splits": dg.MetadataValue.json({split: splits.get(split, 0) for split in SPLITS}),
        "classes": dg.MetadataValue.json(manifest["classes"]),
        "boxes_per_class": dg.MetadataValue.json(dict(boxes)),
    }


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    deps=[labeled_batch],
    code_version=PROCESSED_IMAGES_CODE_VERSION,
    check_specs=[SPLIT_LEAKAGE, NEAR_DUPLICATES],
    group_name="data",
    kinds={"python"},
    description="Union of accepted batches: stable train/val split, preprocessed once per image, ultralytics-ready.",
)
def processed_images(
    context: dg.AssetExecutionContext,
    config: ProcessedImagesConfig,
    artifact_store: ArtifactStore,
    dataset_policy: DatasetPolicy,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    batches = latest_batch_versions(context.instance)
    included = [b for b in batches if b.accepted]
    excluded = [b.partition for b in batches if not b.accepted]
    if excluded:
        context.log.warning(f"left out batches whose label_validity or class_registry check failed: {excluded}")
    if not included:
        raise dg.Failure(description="no labeled batch has passed its checks yet: nothing to build", allow_retries=False)
    inputs = {b.partition: b.data_version for b in included}
    previous = previous_dataset(context.instance, artifact_store)
    key = cache_key(
        PROCESSED_IMAGES_CODE_VERSION, inputs, {**config.output_settings(), "policy": dataset_policy.model_dump()}
    )
    version = artifact_store.lookup_cache_key(PROCESSED_IMAGES, key)
    cache_hit, num_processed = version is not None, 0
    union_metadata: dict[str, Any] = {}
    if version is not None:
        manifest = (
            previous.manifest if previous and previous.version == version
            else artifact_store.read_json(PROCESSED_IMAGES, version, "manifest.json")
        )
    else:
        classes, items, duplicates, conflicts = union_of_batches(artifact_store, included, dataset_policy)
        union_metadata["duplicate_images"] = duplicates
        union_metadata["label_conflicts"] = dg.MetadataValue.md(quarantine_table(conflicts))
        for conflict in conflicts:
            context.log.warning(f"left out {conflict['image']}: {conflict['reason']} ({conflict['detail']})")
        reusable = reusable_rows(previous.manifest if previous else None, config)
        records, num_processed = preprocess_missing(artifact_store, items, config, reusable)
        pairs = near_duplicate_pairs(records, dataset_policy.near_duplicate_distance)
        manifest = build_manifest(classes, items, records, pairs, config, dataset_policy, reusable)
        version, encoded = encoded_manifest(manifest)
        if not artifact_store.exists(PROCESSED_IMAGES, version):
            write_dataset(artifact_store, manifest, encoded, version, {row["pair"] for row in reusable.values()})
        artifact_store.record_cache_key(PROCESSED_IMAGES, key, version)
    if previous and previous.version != version:
        union_metadata["diff_base"] = previous.version
        union_metadata["diff"] = dg.MetadataValue.json(dataset_diff(previous.manifest, manifest))
    elapsed = time.perf_counter() - started
    context.log.info(
        f"dataset {version[:12]}: {len(manifest['items'])} images, {num_processed} decoded, cache_hit={cache_hit}, {elapsed:.2f}s"
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **dataset_metadata(manifest),
            "num_processed": num_processed,
            "cache_hit": cache_hit,
            "cache_key": key,
            "input_batches": dg.MetadataValue.json(inputs),
            "excluded_batches": dg.MetadataValue.json(excluded),
            **union_metadata,
            "seconds": round(elapsed, 3),
            "path": dg.MetadataValue.path(artifact_store.uri(PROCESSED_IMAGES, version)),
        },
        check_results=[
            split_leakage_result(manifest),
            near_duplicates_result(manifest, dataset_policy.near_duplicate_distance),
        ],
    )
