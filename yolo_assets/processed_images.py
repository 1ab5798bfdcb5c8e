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
from typing import Any

import dagster as dg
import yaml

from resources.artifact_store import ArtifactStore
from resources.dataset_policy import DatasetPolicy
from yolo_assets.retries import TRANSIENT_RETRY
from yolo_assets.batches import BLOBS, LABELED_BATCH, BatchVersion, labeled_batch, latest_batch_versions, quarantine_table
from yolo_assets.checks import NEAR_DUPLICATES, SPLIT_LEAKAGE, near_duplicates_result, split_leakage_result
from yolo_assets.fileio import atomic_write_bytes, link_or_copy
from yolo_assets.formats import class_key
from yolo_assets.hashing import canonical_json, hash_json
from yolo_assets.parallel import parallel_starmap
from yolo_assets.preprocess import cached_image, cached_record, preprocess_namespace, preprocess_one
from yolo_assets.versioning import cache_key, latest_data_version, manifest_version

PROCESSED_IMAGES = "processed_images"
PROCESSED_IMAGES_CODE_VERSION = "1"
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


LABEL_CONFLICT = "label_conflict"


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
    """Pairs of images whose perceptual hashes differ in at most `max_distance` bits.

    Band the 64-bit hash into max_distance + 1 chunks: two hashes that close agree exactly on at
    least one chunk (pigeonhole), so only images sharing a chunk are compared: no N^2 scan.
    """
    bands = max_distance + 1
    width = -(-64 // bands)
    buckets: dict[tuple[int, int], list[str]] = {}
    for sha, record in records.items():
        value = int(record["dhash"], 16)
        for band in range(bands):
            buckets.setdefault((band, (value >> (band * width)) & ((1 << width) - 1)), []).append(sha)
    pairs: dict[tuple[str, str], int] = {}
    for members in buckets.values():
        if len(members) > MAX_BUCKET:
            continue  # a band value shared by that many images is a flat region, not a near-duplicate signal
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                pair = (min(a, b), max(a, b))
                if pair not in pairs:
                    distance = bin(int(records[a]["dhash"], 16) ^ int(records[b]["dhash"], 16)).count("1")
                    if distance <= max_distance:
                        pairs[pair] = distance
    return sorted((a, b, d) for (a, b), d in pairs.items())


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


def previous_records(
    instance: dg.DagsterInstance, store: ArtifactStore, config: ProcessedImagesConfig
) -> dict[str, dict[str, Any]]:
    """Per-image cache records already listed in the latest dataset built with the same settings.

    Reading one manifest instead of one cache record per image keeps an incremental build O(k).
    """
    version = latest_data_version(instance, PROCESSED_IMAGES)
    if not version or not store.exists(PROCESSED_IMAGES, version):
        return {}
    manifest = store.read_json(PROCESSED_IMAGES, version, "manifest.json")
    previous_settings = ProcessedImagesConfig(**manifest["settings"]).preprocess_settings()
    if previous_settings != config.preprocess_settings() or any(f not in manifest["items"][0] for f in RECORD_FIELDS if manifest["items"]):
        return {}
    return {item["sha"]: {field: item[field] for field in RECORD_FIELDS} for item in manifest["items"]}


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


def build_manifest(
    classes: list[str],
    items: dict[str, dict[str, Any]],
    records: dict[str, dict[str, Any]],
    splits: dict[str, str],
    config: ProcessedImagesConfig,
    policy: DatasetPolicy,
) -> dict[str, Any]:
    class_id = {class_key(name, policy.case_sensitive_classes): i for i, name in enumerate(classes)}
    rows = []
    for sha in sorted(items):
        item, record = items[sha], records[sha]
        rows.append(
            {
                "sha": sha,
                "split": splits[sha],
                "file_sha": record["file_sha"],
                "pixel_sha": record["pixel_sha"],
                "dhash": record["dhash"],
                "width": record["width"],
                "height": record["height"],
                "labels": [[class_id[class_key(box[0], policy.case_sensitive_classes)], *box[1:]] for box in item["boxes"]],
            }
        )
    return {"classes": classes, "settings": config.output_settings(), "policy": policy.model_dump(), "items": rows}


def label_text(labels: list[list[float]]) -> str:
    return "".join(f"{int(l[0])} {l[1]:.6f} {l[2]:.6f} {l[3]:.6f} {l[4]:.6f}\n" for l in labels)


def ensure_item_folder(store: ArtifactStore, cache_root: Path, namespace: str, item: dict[str, Any]) -> str:
    """A content-addressed `<key>/images/<sha>.jpg` + `<key>/labels/<sha>.txt` pair; returns the image path.

    Ultralytics finds a label by swapping the last `/images/` of the image path for `/labels/`, so
    dataset versions can list these shared pairs instead of re-linking every image: a new version
    costs O(new items) file operations plus two list files.
    """
    sha = item["sha"]
    folder = store.object_path(DATASET_ITEMS, hash_json([namespace, sha, item["labels"]]))
    image = f"{folder}/images/{sha}.jpg"
    if os.path.exists(image):
        return image
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    os.makedirs(f"{staging}/images")
    os.mkdir(f"{staging}/labels")
    with open(f"{staging}/labels/{sha}.txt", "w") as label_file:
        label_file.write(label_text(item["labels"]))
    link_or_copy(cached_image(cache_root, sha), f"{staging}/images/{sha}.jpg")
    try:
        os.rename(staging, folder)  # atomic: the pair appears complete or not at all
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # a concurrent writer committed the same pair
    return image


def write_dataset(store: ArtifactStore, manifest: dict[str, Any], config: ProcessedImagesConfig, version: str) -> None:
    """The ultralytics-ready dataset: data.yaml naming train.txt / val.txt image lists, and the manifest."""
    namespace = preprocess_namespace(config.preprocess_settings())
    cache_root = store.object_root(namespace)
    lists: dict[str, list[str]] = {split: [] for split in SPLITS}
    for item in manifest["items"]:
        lists[item["split"]].append(ensure_item_folder(store, cache_root, namespace, item))
    with store.write_artifact(PROCESSED_IMAGES, version) as staging:
        for split, paths in lists.items():
            if paths or split != "test":
                (staging / f"{split}.txt").write_text("".join(f"{path}\n" for path in paths))
        data_yaml: dict[str, Any] = {"train": "train.txt", "val": "val.txt"}  # resolved next to this file
        if lists["test"]:
            data_yaml["test"] = "test.txt"
        data_yaml.update({"nc": len(manifest["classes"]), "names": dict(enumerate(manifest["classes"]))})
        (staging / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
        atomic_write_bytes(staging / "manifest.json", canonical_json(manifest), durable=True)


def dataset_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Images added / removed / relabeled between two dataset manifests, and box counts per class."""

    def labels(manifest: dict[str, Any]) -> dict[str, list[list[Any]]]:
        return {
            item["sha"]: sorted([manifest["classes"][int(l[0])], *l[1:]] for l in item["labels"]) for item in manifest["items"]
        }

    before, after = labels(old), labels(new)
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    relabeled = sorted(sha for sha in set(before) & set(after) if before[sha] != after[sha])
    per_class: dict[str, dict[str, int]] = {}
    for shas, side, field in ((added, after, "added"), (removed, before, "removed"), (relabeled, after, "relabeled")):
        for sha in shas:
            for name in {box[0] for box in side[sha]} or {"(background)"}:
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
    previous_version = latest_data_version(context.instance, PROCESSED_IMAGES)
    key = cache_key(
        PROCESSED_IMAGES_CODE_VERSION, inputs, {**config.output_settings(), "policy": dataset_policy.model_dump()}
    )
    version = artifact_store.lookup_cache_key(PROCESSED_IMAGES, key)
    cache_hit, num_processed = version is not None, 0
    union_metadata: dict[str, Any] = {}
    if version is not None:
        manifest = artifact_store.read_json(PROCESSED_IMAGES, version, "manifest.json")
    else:
        classes, items, duplicates, conflicts = union_of_batches(artifact_store, included, dataset_policy)
        union_metadata["duplicate_images"] = duplicates
        union_metadata["label_conflicts"] = dg.MetadataValue.md(quarantine_table(conflicts))
        for conflict in conflicts:
            context.log.warning(f"left out {conflict['image']}: {conflict['reason']} ({conflict['detail']})")
        known = previous_records(context.instance, artifact_store, config)
        records, num_processed = preprocess_missing(artifact_store, items, config, known)
        pairs = near_duplicate_pairs(records, dataset_policy.near_duplicate_distance)
        manifest = build_manifest(classes, items, records, assign_splits(items, pairs, config, dataset_policy), config, dataset_policy)
        version = manifest_version(manifest)
        if not artifact_store.exists(PROCESSED_IMAGES, version):
            write_dataset(artifact_store, manifest, config, version)
        artifact_store.record_cache_key(PROCESSED_IMAGES, key, version)
    if previous_version and previous_version != version and artifact_store.exists(PROCESSED_IMAGES, previous_version):
        previous = artifact_store.read_json(PROCESSED_IMAGES, previous_version, "manifest.json")
        union_metadata["diff_base"] = previous_version
        union_metadata["diff"] = dg.MetadataValue.json(dataset_diff(previous, manifest))
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
