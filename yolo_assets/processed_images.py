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
from yolo_assets.fileio import atomic_write_bytes, link_or_copy
from yolo_assets.batches import BLOBS, LABELED_BATCH, BatchVersion, labeled_batch, latest_batch_versions
from yolo_assets.checks import SPLIT_LEAKAGE, split_leakage_result
from yolo_assets.hashing import canonical_json, hash_json
from yolo_assets.parallel import parallel_starmap
from yolo_assets.preprocess import cached_image, cached_record, preprocess_namespace, preprocess_one
from yolo_assets.versioning import cache_key, latest_data_version, manifest_version

PROCESSED_IMAGES = "processed_images"
PROCESSED_IMAGES_CODE_VERSION = "1"
SPLITS = ("train", "val")
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
    store: ArtifactStore, batches: list[BatchVersion]
) -> tuple[list[str], dict[str, dict[str, Any]], int]:
    """Class names reconciled by name (ids in order of first appearance), items keyed by image hash.

    An image present in several batches keeps the labels of the batch that landed last.
    """
    classes: list[str] = []
    items: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for batch in batches:
        manifest = store.read_json(LABELED_BATCH, batch.data_version, "manifest.json")
        classes += [name for name in manifest["classes"] if name not in classes]
        for item in manifest["items"]:
            duplicates += item["image_sha"] in items
            items[item["image_sha"]] = {**item, "batch": batch.partition}
    return classes, items, duplicates


RECORD_FIELDS = ("width", "height", "file_sha", "pixel_sha")


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
    if previous_settings != config.preprocess_settings():
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
    missing = sorted(sha for sha, record in records.items() if record is None)
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
    classes: list[str], items: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]], config: ProcessedImagesConfig
) -> dict[str, Any]:
    class_id = {name: i for i, name in enumerate(classes)}
    rows = []
    for sha in sorted(items):
        item, record = items[sha], records[sha]
        rows.append(
            {
                "sha": sha,
                "split": split_of(sha, config.val_fraction),
                "file_sha": record["file_sha"],
                "pixel_sha": record["pixel_sha"],
                "width": record["width"],
                "height": record["height"],
                "labels": [[class_id[box[0]], *box[1:]] for box in item["boxes"]],
            }
        )
    return {"classes": classes, "settings": config.output_settings(), "items": rows}


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
            (staging / f"{split}.txt").write_text("".join(f"{path}\n" for path in paths))
        data_yaml = {
            # No `path:`: ultralytics resolves the lists next to this file.
            "train": "train.txt",
            "val": "val.txt",
            "nc": len(manifest["classes"]),
            "names": dict(enumerate(manifest["classes"])),
        }
        (staging / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
        atomic_write_bytes(staging / "manifest.json", canonical_json(manifest), durable=True)


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
    deps=[labeled_batch],
    code_version=PROCESSED_IMAGES_CODE_VERSION,
    check_specs=[SPLIT_LEAKAGE],
    group_name="data",
    kinds={"python"},
    description="Union of accepted batches: stable train/val split, preprocessed once per image, ultralytics-ready.",
)
def processed_images(
    context: dg.AssetExecutionContext, config: ProcessedImagesConfig, artifact_store: ArtifactStore
) -> dg.MaterializeResult:
    started = time.perf_counter()
    batches = latest_batch_versions(context.instance)
    included = [b for b in batches if b.label_validity_passed]
    excluded = [b.partition for b in batches if not b.label_validity_passed]
    if excluded:
        context.log.warning(f"left out batches whose label_validity failed: {excluded}")
    if not included:
        raise dg.Failure(description="no labeled batch has passed label_validity yet: nothing to build", allow_retries=False)
    inputs = {b.partition: b.data_version for b in included}
    key = cache_key(PROCESSED_IMAGES_CODE_VERSION, inputs, config.output_settings())
    version = artifact_store.lookup_cache_key(PROCESSED_IMAGES, key)
    cache_hit, num_processed = version is not None, 0
    union_metadata: dict[str, Any] = {}
    if version is not None:
        manifest = artifact_store.read_json(PROCESSED_IMAGES, version, "manifest.json")
    else:
        classes, items, duplicates = union_of_batches(artifact_store, included)
        union_metadata["duplicate_images"] = duplicates
        known = previous_records(context.instance, artifact_store, config)
        records, num_processed = preprocess_missing(artifact_store, items, config, known)
        manifest = build_manifest(classes, items, records, config)
        version = manifest_version(manifest)
        if not artifact_store.exists(PROCESSED_IMAGES, version):
            write_dataset(artifact_store, manifest, config, version)
        artifact_store.record_cache_key(PROCESSED_IMAGES, key, version)
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
        check_results=[split_leakage_result(manifest)],
    )
