"""`processed_images`: the union of accepted batches as one ultralytics-ready dataset version, and
the checks that guard training on it (split leakage, near-duplicates).

Split: an image's split is a pure function of its content hash and `val_fraction`, so it never moves
as the data grows. Preprocessing goes through the per-image cache, so adding k images decodes k.
The build itself (union, preprocessing, splits, manifest, files) is `build_dataset` in
data/dataset_build.py; this module selects its inputs, finds its cache key and records the result.
"""

import json
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple, cast

import dagster as dg

from resources.artifact_store import ArtifactStore, Built, Cached
from resources.dataset_policy import DatasetPolicy
from yolo_assets.assets.ingest import BatchVersion, labeled_batch, latest_batch_versions, read_batch_manifest
from yolo_assets.assets.keys import CODE_VERSIONS, PROCESSED_IMAGES, identity
from yolo_assets.assets.materializations import latest_data_version, metadata_value
from yolo_assets.assets.retractions import RETRACTIONS_VERSION, Retractions, current_retractions
from yolo_assets.core.versioning import MANIFEST, cache_key
from yolo_assets.data.dataset_build import (
    build_dataset,
    identical_images_across_splits,
    near_duplicates_across_splits,
)
from yolo_assets.data.dataset_files import SPLITS, local_lists
from yolo_assets.data.dataset_manifest import DatasetManifest, dataset_diff
from yolo_assets.data.duplicates import reconcile_classes
from yolo_assets.data.preprocess import PREPROCESS_FIELDS
from yolo_assets.data.quarantine import quarantine_table
from yolo_assets.data.retractions import retraction_of

SPLIT_LEAKAGE = dg.AssetCheckSpec(
    "split_leakage",
    asset=PROCESSED_IMAGES,
    blocking=True,
    description="Fails when the same image (byte-identical, or pixel-identical after decoding) is in two splits.",
)


NEAR_DUPLICATES = dg.AssetCheckSpec(
    "near_duplicates",
    asset=PROCESSED_IMAGES,
    blocking=False,
    description="Warns about near-duplicate images (perceptual hash within near_duplicate_distance bits) in different splits; lists all pairs.",
)


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
        return {name: getattr(self, name) for name in PREPROCESS_FIELDS}

    def output_settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"workers"})


class StoredDataset(NamedTuple):
    version: str
    manifest: DatasetManifest


def previous_dataset(instance: dg.DagsterInstance, store: ArtifactStore) -> StoredDataset | None:
    """The latest dataset version and its manifest, read once per build: the per-image records,
    the item folders and the diff all come from it."""
    version = latest_data_version(instance, PROCESSED_IMAGES)
    if not version or not store.exists(PROCESSED_IMAGES, version):
        return None
    return StoredDataset(version, read_dataset_manifest(store, version))


def read_dataset_manifest(store: ArtifactStore, version: str) -> DatasetManifest:
    """The manifest of dataset version `version` (written by `DatasetBuild.write`)."""
    return cast(DatasetManifest, store.read_json(PROCESSED_IMAGES, version, MANIFEST))


def local_dataset(store: ArtifactStore, version: str) -> Path:
    """data.yaml of a dataset version whose every image and label is on this machine."""
    folder = store.local_path(PROCESSED_IMAGES, version)
    return local_lists(store, folder, cast(DatasetManifest, json.loads((folder / MANIFEST).read_text())), version)


def dataset_metadata(manifest: DatasetManifest) -> dict[str, Any]:
    splits = Counter(item["split"] for item in manifest["items"])
    boxes = Counter(manifest["classes"][int(l[0])] for item in manifest["items"] for l in item["labels"])
    return {
        "num_images": len(manifest["items"]),
        "splits": dg.MetadataValue.json({split: splits.get(split, 0) for split in SPLITS}),
        "classes": dg.MetadataValue.json(manifest["classes"]),
        "boxes_per_class": dg.MetadataValue.json(dict(boxes)),
        # Kept in the list (their ids never move) though no included batch labels them any more.
        "classes_without_boxes": dg.MetadataValue.json([name for name in manifest["classes"] if not boxes.get(name)]),
    }


class BatchSelection(NamedTuple):
    included: list[BatchVersion]
    excluded: dict[str, str]
    """batch -> why its latest version is left out (a failed check, refused metadata)."""
    retracted: list[dict[str, Any]]
    """What `batch_retractions` keeps out: batch, data_version, reason, retracted_at (and retracted_as
    when the batch holds the content of another retracted batch)."""

    @property
    def retracted_versions(self) -> dict[str, str]:
        """batch -> the retracted data version left out."""
        return {record["batch"]: record["data_version"] for record in self.retracted}


def select_batches(batches: list[BatchVersion], retractions: Retractions) -> BatchSelection:
    included, excluded, retracted = [], {}, []
    for batch in batches:
        record = retraction_of(retractions.records, batch.partition, batch.data_version, batch.content_hash)
        if record is not None:
            retracted.append({
                "batch": batch.partition, "data_version": batch.data_version, "reason": record["reason"],
                "retracted_at": record["retracted_at"],
                **({"retracted_as": record["batch"]} if record["batch"] != batch.partition else {}),
            })
        elif batch.accepted:
            included.append(batch)
        else:
            excluded[batch.partition] = batch.reason
    return BatchSelection(included, excluded, retracted)


class WantedDataset(NamedTuple):
    inputs: dict[str, str]
    """batch -> data version of every batch the next build would include."""
    retractions: Retractions
    selection: BatchSelection


def wanted_dataset(instance: dg.DagsterInstance, store: ArtifactStore) -> WantedDataset:
    """What a processed_images build would hold now: accepted batches, less the retracted ones."""
    retractions = current_retractions(instance, store)
    selection = select_batches(latest_batch_versions(instance), retractions)
    return WantedDataset({batch.partition: batch.data_version for batch in selection.included}, retractions, selection)


def dataset_is_current(latest: dg.AssetMaterialization | None, wanted: WantedDataset) -> bool:
    """The latest processed_images was built from exactly these batch versions and retractions (what
    `dataset_sensor` acts on and `status` reports: the two never disagree)."""
    built_with_retractions = metadata_value(latest, RETRACTIONS_VERSION) or None  # "" when built with none
    return wanted.inputs == metadata_value(latest, "input_batches") and wanted.retractions.version == built_with_retractions


def split_leakage_result(manifest: DatasetManifest) -> dg.AssetCheckResult:
    leaks = identical_images_across_splits(manifest)
    return dg.AssetCheckResult(
        check_name=SPLIT_LEAKAGE.name,
        passed=not leaks,
        description=None if not leaks else (
            f"Blocked: {len(leaks)} group(s) of identical images (by {', '.join(sorted({leak['identical_by'] for leak in leaks}))}) "
            "sit in more than one split, so validation would score on training images. The run stops here, before training; "
            "the leaks are listed below."
        ),
        metadata={"num_leaks": len(leaks), "leaks": dg.MetadataValue.json(leaks[:50])},
    )


def near_duplicates_result(manifest: DatasetManifest, max_distance: int) -> dg.AssetCheckResult:
    """Near-duplicates are expected (augmented copies); across splits they leak, so that warns."""
    split_of = {item["sha"]: item["split"] for item in manifest["items"]}
    pairs, across = [tuple(pair) for pair in manifest["near_duplicates"]], near_duplicates_across_splits(manifest)
    return dg.AssetCheckResult(
        check_name=NEAR_DUPLICATES.name,
        passed=not across,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "num_pairs": len(pairs),
            "num_across_splits": len(across),
            "max_distance": max_distance,
            "pairs": dg.MetadataValue.json([{"a": a[:12], "b": b[:12], "distance": d, "splits": [split_of[a], split_of[b]]} for a, b, d in pairs[:50]]),
        },
    )


class BuiltDataset(NamedTuple):
    manifest: DatasetManifest
    num_processed: int
    union_metadata: dict[str, Any]


def built_dataset(store: ArtifactStore, wanted: WantedDataset, classes: list[str], previous: StoredDataset | None,
                  config: ProcessedImagesConfig, policy: DatasetPolicy, log: dg.DagsterLogManager) -> Built[BuiltDataset]:
    """`build_dataset` (data/dataset_build.py) on the selected batches' manifests, as the store's `cached` takes it."""
    batches = ((b.partition, read_batch_manifest(store, b.data_version)) for b in wanted.selection.included)
    build = build_dataset(store, batches, classes, previous.manifest if previous else None, config, policy,
                          wanted.selection.retracted_versions, log.warning)
    union_metadata = {"duplicate_images": build.duplicates, "label_conflicts": dg.MetadataValue.md(quarantine_table(build.conflicts))}
    return Built(build.version, BuiltDataset(build.manifest, build.num_processed, union_metadata), build.write)


def announce_selection(log: dg.DagsterLogManager, selection: BatchSelection) -> None:
    """Say which batches the version leaves out and why; refuse to build from none."""
    for batch, reason in selection.excluded.items():
        log.warning(f"left out batch {batch}: {reason}")
    for record in selection.retracted:
        log.warning(f"left out retracted batch {record['batch']}: {record['reason']} (retracted {record['retracted_at']})")
    if not selection.included:
        raise dg.Failure(
            description=f"no labeled batch has passed its checks and is not retracted: nothing to build ({len(selection.retracted)} retracted)",
            allow_retries=False,
        )


def dataset_recipe(
    wanted: WantedDataset, previous: StoredDataset | None, config: ProcessedImagesConfig, policy: DatasetPolicy,
) -> tuple[list[str], str]:
    """The version's class list and its cache key. Class ids never shift: the previous version's classes
    keep their order (and stay, without boxes, when only a retracted or excluded batch carried them), new
    ones are appended. Split anchors are not part of the key: they come from the previous version, and a
    version found by its key was built from these same inputs, its images already in the splits they first had."""
    registry = previous.manifest["classes"] if previous else []
    classes = reconcile_classes(registry, [b.classes for b in wanted.selection.included], policy.case_sensitive_classes)
    key = cache_key(
        CODE_VERSIONS[PROCESSED_IMAGES],
        {"batches": wanted.inputs, "retracted": wanted.selection.retracted_versions, "classes": classes},
        {**config.output_settings(), "policy": policy.model_dump()},
    )
    return classes, key


def version_metadata(wanted: WantedDataset, previous: StoredDataset | None, dataset: Cached[BuiltDataset], seconds: float) -> dict[str, Any]:
    """What a processed_images materialisation records: the manifest's summary, the inputs and what was
    left out, the union's duplicates and conflicts, and the difference from the previous version."""
    manifest = dataset.summary.manifest
    diff_metadata: dict[str, Any] = {}
    if previous and previous.version != dataset.version:
        diff_metadata = {"diff_base": previous.version, "diff": dg.MetadataValue.json(dataset_diff(previous.manifest, manifest))}
    return {
        **dataset_metadata(manifest),
        "num_processed": dataset.summary.num_processed,
        **dataset.metadata(),
        "input_batches": dg.MetadataValue.json(wanted.inputs),
        "excluded_batches": dg.MetadataValue.json(wanted.selection.excluded),
        "retracted_batches": dg.MetadataValue.json(wanted.selection.retracted),
        RETRACTIONS_VERSION: wanted.retractions.version or "",
        **dataset.summary.union_metadata,
        **diff_metadata,
        "seconds": round(seconds, 3),
    }


@dg.asset(
    **identity(PROCESSED_IMAGES),
    deps=[labeled_batch],
    check_specs=[SPLIT_LEAKAGE, NEAR_DUPLICATES],
    description="Union of accepted batches: stable train/val split, preprocessed once per image, ultralytics-ready.",
)
def processed_images(
    context: dg.AssetExecutionContext,
    config: ProcessedImagesConfig,
    artifact_store: ArtifactStore,
    dataset_policy: DatasetPolicy,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    wanted = wanted_dataset(context.instance, artifact_store)
    announce_selection(context.log, wanted.selection)
    previous = previous_dataset(context.instance, artifact_store)
    classes, key = dataset_recipe(wanted, previous, config, dataset_policy)

    def build() -> nullcontext[Built[BuiltDataset]]:
        return nullcontext(built_dataset(artifact_store, wanted, classes, previous, config, dataset_policy, context.log))

    def load(version: str) -> BuiltDataset:
        stored = previous.manifest if previous and previous.version == version else read_dataset_manifest(artifact_store, version)
        return BuiltDataset(stored, 0, {})

    dataset = artifact_store.cached(PROCESSED_IMAGES, key, build, load)
    manifest, elapsed = dataset.summary.manifest, time.perf_counter() - started
    context.log.info(
        f"dataset {dataset.version[:12]}: {len(manifest['items'])} images, {dataset.summary.num_processed} decoded, "
        f"cache_hit={dataset.cache_hit}, {elapsed:.2f}s"
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(dataset.version),
        metadata=version_metadata(wanted, previous, dataset, elapsed),
        check_results=[split_leakage_result(manifest), near_duplicates_result(manifest, dataset_policy.near_duplicate_distance)],
    )
