"""One dataset version from the accepted batches, Dagster-free: the union of their manifests (classes
reconciled, duplicates kept once, label conflicts set aside), each image preprocessed unless an earlier
version already holds it, near-duplicates found, splits assigned (anchored on the previous version),
the manifest encoded (its hash is the version), and how to write the version's files.

`processed_images` (assets/dataset.py) hands in its artifact store, run config and dataset policy, which
meet `ObjectStore`, `DatasetSettings` and `DatasetRules`; a test can hand in a folder and plain objects.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from yolo_assets.core.fileio import atomic_write_bytes
from yolo_assets.core.versioning import MANIFEST, encoded_manifest
from yolo_assets.data.batch_manifest import BatchManifest
from yolo_assets.data.dataset_files import RECORD_FIELDS, ObjectStore, pair_key, preprocess_missing, write_lists, write_pairs
from yolo_assets.data.dataset_manifest import DatasetManifest, DatasetRow
from yolo_assets.data.duplicates import union_of_batches
from yolo_assets.data.formats import class_key
from yolo_assets.data.preprocess import PREPROCESS_FIELDS, preprocess_namespace
from yolo_assets.data.quarantine import QuarantineEntry
from yolo_assets.data.splits import assign_splits, near_duplicate_pairs


class DatasetSettings(Protocol):
    """How images are stored (`ProcessedImagesConfig`): part of the version."""

    val_fraction: float
    workers: int

    def preprocess_settings(self) -> dict[str, Any]: ...

    def output_settings(self) -> dict[str, Any]: ...


class DatasetRules(Protocol):
    """How labels are reconciled (`DatasetPolicy`): part of the version."""

    case_sensitive_classes: bool
    label_conflicts: str
    label_match_tolerance: float
    honour_export_split: bool
    near_duplicate_distance: int

    def model_dump(self) -> dict[str, Any]: ...


def reusable_rows(previous: DatasetManifest | None, settings: DatasetSettings) -> dict[str, DatasetRow]:
    """Rows of the previous dataset, by image hash, when it was built with the same preprocessing.

    Their per-image records and item folders are reused as they are: an incremental build reads
    one manifest instead of one cache record per image, and checks no folder it already listed.
    """
    if not previous or not previous["items"]:
        return {}
    if {name: previous["settings"][name] for name in PREPROCESS_FIELDS} != settings.preprocess_settings():
        return {}
    if any(field not in previous["items"][0] for field in (*RECORD_FIELDS, "pair")):
        return {}  # written by an older code version
    return {row["sha"]: row for row in previous["items"]}


def split_anchors(previous: DatasetManifest | None, settings: DatasetSettings, rules: DatasetRules) -> dict[str, str]:
    """The split every image had in the previous dataset version, when that version split the same
    way (our hash split, same val_fraction): images keep it, near-duplicates join it."""
    if not previous or rules.honour_export_split or previous.get("policy", {}).get("honour_export_split"):
        return {}
    if previous["settings"].get("val_fraction") != settings.val_fraction:
        return {}
    return {row["sha"]: row["split"] for row in previous["items"]}


def build_manifest(
    classes: list[str],
    items: dict[str, dict[str, Any]],
    records: Mapping[str, Mapping[str, Any]],
    pairs: list[tuple[str, str, int]],
    settings: DatasetSettings,
    rules: DatasetRules,
    reusable: dict[str, DatasetRow],
    anchors: dict[str, str] | None = None,
    retracted: dict[str, str] | None = None,
) -> DatasetManifest:
    splits = assign_splits(items, pairs, settings.val_fraction, rules.honour_export_split, anchors)
    namespace = preprocess_namespace(settings.preprocess_settings())
    class_id = {class_key(name, rules.case_sensitive_classes): i for i, name in enumerate(classes)}
    rows: list[DatasetRow] = []
    for sha in sorted(items):
        item, record = items[sha], records[sha]
        labels = [[class_id[class_key(box[0], rules.case_sensitive_classes)], *box[1:]] for box in item["boxes"]]
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
        "settings": settings.output_settings(),
        "policy": rules.model_dump(),
        "items": rows,
        "near_duplicates": [list(pair) for pair in pairs],
        # Provenance: the batch versions a person retracted (reasons and times are in the metadata).
        "retracted_batches": dict(sorted((retracted or {}).items())),
    }


@dataclass(frozen=True)
class DatasetBuild:
    """A computed dataset version, not yet written: `write` fills its folder (only when the store does
    not hold this version yet)."""

    version: str
    manifest: DatasetManifest
    num_processed: int
    """Images decoded by this build (the others came from the preprocessing cache)."""
    duplicates: int
    """Images labeled identically in more than one batch, kept once."""
    conflicts: list[QuarantineEntry]
    """Images left out because batches label them differently."""
    store: ObjectStore
    encoded: bytes
    listed: frozenset[str]
    """Pairs an earlier committed version already wrote."""

    def write(self, staging: Path) -> None:
        """The ultralytics-ready dataset: its new pairs made durable first, then data.yaml naming the
        train.txt / val.txt image lists, and the manifest (the bytes the version is the hash of)."""
        write_lists(staging, self.manifest, write_pairs(self.store, self.manifest, set(self.listed)))
        atomic_write_bytes(staging / MANIFEST, self.encoded, durable=True)


def build_dataset(
    store: ObjectStore,
    batches: Iterable[tuple[str, BatchManifest]],
    classes: list[str],
    previous: DatasetManifest | None,
    settings: DatasetSettings,
    rules: DatasetRules,
    retracted_versions: dict[str, str],
    warn: Callable[[str], Any],
) -> DatasetBuild:
    """The dataset version of `batches` ((partition, batch manifest) in landing order) with the class
    list `classes` (the previous version's order, new names appended)."""
    union_classes, items, duplicates, conflicts = union_of_batches(
        batches, rules.case_sensitive_classes, rules.label_conflicts, rules.label_match_tolerance, registry=classes,
    )
    for conflict in conflicts:
        warn(f"left out {conflict['image']}: {conflict['reason']} ({conflict['detail']})")
    reusable = reusable_rows(previous, settings)
    records, num_processed = preprocess_missing(store, items, settings.preprocess_settings(), settings.workers, reusable)
    pairs = near_duplicate_pairs(records, rules.near_duplicate_distance)
    anchors = split_anchors(previous, settings, rules)
    manifest = build_manifest(union_classes, items, records, pairs, settings, rules, reusable, anchors, retracted_versions)
    version, encoded = encoded_manifest(manifest)
    listed = frozenset(row["pair"] for row in reusable.values())
    return DatasetBuild(version, manifest, num_processed, duplicates, conflicts, store, encoded, listed)


def identical_images_across_splits(manifest: DatasetManifest) -> list[dict[str, Any]]:
    """Groups of identical images (byte-identical by `sha`, pixel-identical by `pixel_sha`) that sit in
    more than one split: validation would score on training images."""
    leaks: list[dict[str, Any]] = []
    for field in ("sha", "pixel_sha"):
        first_split: dict[str, str] = {}
        leaked: set[str] = set()
        for item in manifest["items"]:
            if first_split.setdefault(item[field], item["split"]) != item["split"]:
                leaked.add(item[field])
        members: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for item in manifest["items"] if leaked else ():
            if item[field] in leaked:
                members[item[field]].append(item)
        leaks += [
            {"identical_by": field, "splits": sorted({m["split"] for m in group}), "images": [m["sha"][:12] for m in group]}
            for group in members.values()
        ]
    return leaks


def near_duplicates_across_splits(manifest: DatasetManifest) -> list[tuple[str, str, int]]:
    """The near-duplicate pairs (the ones the split assignment used, listed in the manifest) whose two
    images ended up in different splits."""
    split_of = {item["sha"]: item["split"] for item in manifest["items"]}
    return [(a, b, d) for a, b, d in (tuple(pair) for pair in manifest["near_duplicates"]) if split_of[a] != split_of[b]]
