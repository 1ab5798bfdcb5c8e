"""`labeled_batch`: one dynamic partition per landed batch, validated item by item, and its checks.

Accepted image and label bytes are copied into the store's content-addressed blobs, so later
assets never read the (mutable) landing zone again; quarantined files are kept beside the manifest.
"""

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dagster as dg

from resources.artifact_store import ArtifactStore, Built
from resources.dataset_policy import DatasetPolicy
from resources.landing_zone import LandingZone
from yolo_assets.assets.keys import CODE_VERSIONS, LABELED_BATCH, PROCESSED_IMAGES, identity
from yolo_assets.assets.materializations import code_version_of, data_version_of, latest_materialization, metadata_value
from yolo_assets.core.fileio import object_relpath
from yolo_assets.core.parallel import parallel_starmap
from yolo_assets.core.versioning import MANIFEST, cache_key, manifest_version
from yolo_assets.data.batch_manifest import BatchItem, BatchManifest, write_batch_artifact
from yolo_assets.data.dataset_files import BLOBS
from yolo_assets.data.duplicates import resolve_duplicates
from yolo_assets.data.formats import BatchFormatError, class_key, read_batch
from yolo_assets.data.labels import InspectionRules, inspect_item
from yolo_assets.data.quarantine import QuarantineEntry, quarantine_entry, quarantine_table

REJECTED = "rejected"
MAX_REASON_CHARS = 500

BATCH_PARTITIONS = "batches"
batch_partitions = dg.DynamicPartitionsDefinition(name=BATCH_PARTITIONS)

LABEL_VALIDITY = dg.AssetCheckSpec(
    "label_validity",
    asset=LABELED_BATCH,
    blocking=True,
    description="Fails when the share of quarantined image/label pairs exceeds max_quarantined_fraction.",
)
CLASS_REGISTRY = dg.AssetCheckSpec(
    "class_registry",
    asset=LABELED_BATCH,
    blocking=True,
    description="Under new_class_policy=reject, fails when the batch names a class the dataset has never seen.",
)


def read_batch_manifest(store: ArtifactStore, version: str) -> BatchManifest:
    """The manifest of batch version `version` (written by `write_batch_artifact`)."""
    return cast(BatchManifest, store.read_json(LABELED_BATCH, version, MANIFEST))


class BatchChangedWhileRead(Exception):
    """The batch's content hash after reading differs from the one its version is keyed by: what was
    read may mix two uploads. Not a data error: the retry policy reads it again."""


class LabeledBatchConfig(dg.Config):
    max_quarantined_fraction: float = 0.2
    """label_validity fails (and blocks processed_images) above this share of quarantined pairs."""
    max_image_pixels: int = 50_000_000
    """Images with more pixels are quarantined as image_too_large (decompression-bomb guard)."""
    workers: int = 0
    """Processes that decode images; 0 = one per core. Does not change the output."""

    def output_settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"workers"})


def build_manifest(
    root: Path, config: LabeledBatchConfig, policy: DatasetPolicy, store: ArtifactStore, rejected_members: list[QuarantineEntry]
) -> BatchManifest:
    layout = read_batch(root, policy.read_limits())
    rules = InspectionRules(
        num_classes=len(layout.class_names), max_pixels=config.max_image_pixels, coordinate_tolerance=policy.coordinate_tolerance,
        missing_label=policy.missing_label, blob_root=str(store.object_root(BLOBS)),
        max_label_bytes=policy.max_label_bytes, max_label_boxes=policy.max_label_boxes,
    )
    results = parallel_starmap(
        inspect_item, [(str(root), item.image, item.label, item.label_text, rules) for item in layout.items], config.workers
    )
    accepted: list[BatchItem] = []
    quarantine = [*rejected_members, *layout.quarantine]
    fixes: Counter[str] = Counter()
    for item, result in zip(layout.items, results):
        if result["reason"]:
            quarantine.append(quarantine_entry(result["image"], result["label"], result["reason"], result["detail"]))
            continue
        fixes.update(result["fixes"])
        accepted.append(
            {
                "source": result["image"],
                "label_source": result["label"],
                "image_sha": result["image_sha"],
                "label_sha": result.get("label_sha"),
                "width": result["width"],
                "height": result["height"],
                "split_hint": item.split_hint,
                "boxes": [[layout.class_names[int(b[0])], *b[1:]] for b in result["boxes"]],
            }
        )
    items, duplicates = resolve_duplicates(accepted, policy.label_conflicts, policy.label_match_tolerance)
    return {
        "format": layout.format,
        "classes": layout.class_names,
        "items": items,
        "quarantine": quarantine + duplicates,
        "notes": {**layout.notes, **fixes},
    }


def quarantined_fraction(manifest: Mapping[str, Any]) -> float:
    total = len(manifest["items"]) + len(manifest["quarantine"])
    return len(manifest["quarantine"]) / total if total else 1.0


def label_validity_passed(manifest: Mapping[str, Any], max_quarantined_fraction: float) -> bool:
    """A batch with no usable item fails, whatever the threshold."""
    return bool(manifest["items"]) and quarantined_fraction(manifest) <= max_quarantined_fraction


def label_validity_result(manifest: Mapping[str, Any], max_quarantined_fraction: float) -> dg.AssetCheckResult:
    reasons = Counter(entry["reason"] for entry in manifest["quarantine"])
    passed = label_validity_passed(manifest, max_quarantined_fraction)
    top = ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common(3))
    return dg.AssetCheckResult(
        check_name=LABEL_VALIDITY.name,
        passed=passed,
        description=None if passed else (
            f"Refused: {len(manifest['quarantine'])} of {len(manifest['items']) + len(manifest['quarantine'])} image/label pairs "
            f"quarantined ({top or 'no usable item'}), more than max_quarantined_fraction {max_quarantined_fraction}. "
            "The batch stays out of the dataset: fix the export and land it again (the quarantine table is on the asset)."
        ),
        metadata={
            "quarantined_fraction": round(quarantined_fraction(manifest), 4),
            "max_quarantined_fraction": max_quarantined_fraction,
            "num_accepted": len(manifest["items"]),
            "num_quarantined": len(manifest["quarantine"]),
            "quarantine_reasons": dict(reasons),
        },
    )


def class_registry_result(new_classes: list[str], registry: list[str], policy: str) -> dg.AssetCheckResult:
    passed = not new_classes or policy == "extend"
    return dg.AssetCheckResult(
        check_name=CLASS_REGISTRY.name,
        passed=passed,
        description=None if passed else (
            f"Refused: classes {', '.join(new_classes)} are not in the dataset's registry ({', '.join(registry)}) and "
            "new_class_policy is reject. Relabel the batch with known classes and land it again, or set "
            "YOLO_ASSETS_NEW_CLASS_POLICY=extend to add them."
        ),
        metadata={
            "new_classes": dg.MetadataValue.json(new_classes),
            "registry": dg.MetadataValue.json(registry),
            "new_class_policy": policy,
        },
    )


def batch_metadata(manifest: BatchManifest, config: LabeledBatchConfig) -> dict[str, Any]:
    reasons = Counter(entry["reason"] for entry in manifest["quarantine"])
    boxes = Counter(box[0] for item in manifest["items"] for box in item["boxes"])
    return {
        "num_images": len(manifest["items"]),
        "num_quarantined": len(manifest["quarantine"]),
        "quarantine_reasons": dg.MetadataValue.json(dict(reasons)),
        "quarantined": dg.MetadataValue.md(quarantine_table(manifest["quarantine"])),
        "format": manifest["format"],
        "fixes": dg.MetadataValue.json({k: v for k, v in manifest["notes"].items() if isinstance(v, int)}),
        "num_backgrounds": sum(1 for item in manifest["items"] if not item["boxes"]),
        "boxes_per_class": dg.MetadataValue.json(dict(boxes)),
        "classes": dg.MetadataValue.json(manifest["classes"]),
        "label_validity_passed": label_validity_passed(manifest, config.max_quarantined_fraction),
    }


def class_registry(instance: dg.DagsterInstance) -> list[str]:
    """The class names of the current dataset, from the latest processed_images metadata (cheap:
    no manifest read, whatever the dataset's size)."""
    return list(metadata_value(latest_materialization(instance, PROCESSED_IMAGES), "classes", []) or [])


@contextmanager
def read_landed_batch(
    context: dg.AssetExecutionContext, content_hash: str, config: LabeledBatchConfig, landing_zone: LandingZone,
    artifact_store: ArtifactStore, policy: DatasetPolicy,
) -> Iterator[Built[BatchManifest]]:
    """The batch read from the landing zone into a manifest, its accepted files published as blobs. The
    batch stays open until its quarantined files are copied into the artifact."""
    batch = context.partition_key
    with landing_zone.open_batch(batch) as (root, rejected_members):
        try:
            manifest = build_manifest(root, config, policy, artifact_store, rejected_members)
        except BatchFormatError as error:
            reason = f"batch {batch!r} cannot be read: {str(error)[:MAX_REASON_CHARS]}"
            # Recorded on the partition, so processed_images lists the batch in excluded_batches with
            # this reason; a Failure that bypasses the retry policy: reading it again changes nothing.
            context.log_event(dg.AssetObservation(
                asset_key=LABELED_BATCH, partition=batch, metadata={REJECTED: reason, "content_hash": content_hash}
            ))
            raise dg.Failure(description=reason, allow_retries=False) from None
        if landing_zone.content_hash(batch) != content_hash:
            raise BatchChangedWhileRead(
                f"batch {batch!r} changed while it was being read (an upload into it is still going on?); "
                "retried, it is read again as it is then"
            )
        accepted = [sha for item in manifest["items"] for sha in (item["image_sha"], item["label_sha"]) if sha]
        artifact_store.publish_objects(BLOBS, [object_relpath(sha) for sha in accepted])
        yield Built(manifest_version(manifest), manifest, lambda staging: write_batch_artifact(staging, root, manifest))


def new_classes_check(registry: list[str], classes: list[str], policy: DatasetPolicy) -> tuple[list[str], dg.AssetCheckResult]:
    """The batch's classes the registry (the latest dataset's) lacks, and the class_registry check on them."""
    known = {class_key(name, policy.case_sensitive_classes) for name in registry}
    new_classes = [n for n in classes if class_key(n, policy.case_sensitive_classes) not in known]
    return new_classes, class_registry_result(new_classes if registry else [], registry, policy.new_class_policy)


@dg.asset(
    **identity(LABELED_BATCH),
    partitions_def=batch_partitions,
    check_specs=[LABEL_VALIDITY, CLASS_REGISTRY],
    description="One landed batch, normalised to a manifest; bad pairs quarantined with a reason.",
)
def labeled_batch(
    context: dg.AssetExecutionContext,
    config: LabeledBatchConfig,
    landing_zone: LandingZone,
    artifact_store: ArtifactStore,
    dataset_policy: DatasetPolicy,
) -> dg.MaterializeResult:
    batch = context.partition_key
    content_hash = landing_zone.content_hash(batch)
    key = cache_key(
        CODE_VERSIONS[LABELED_BATCH], content_hash, {**config.output_settings(), "policy": dataset_policy.model_dump()}
    )
    stored = artifact_store.cached(
        LABELED_BATCH, key, lambda: read_landed_batch(context, content_hash, config, landing_zone, artifact_store, dataset_policy),
        load=lambda version: read_batch_manifest(artifact_store, version),
    )
    manifest = stored.summary
    if stored.cache_hit:
        context.log.info(f"cache hit: batch {batch} content {content_hash[:12]} is already {stored.version[:12]}")
    for entry in manifest["quarantine"]:
        context.log.warning(f"quarantined {entry['image'] or entry['label']}: {entry['reason']} ({entry['detail']})")
    registry = class_registry(context.instance)
    new_classes, registry_check = new_classes_check(registry, manifest["classes"], dataset_policy)
    if not registry_check.passed:
        context.log.error(f"batch {batch} rejected: new classes {new_classes} not in the registry {registry} (new_class_policy=reject)")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(stored.version),
        metadata={
            **batch_metadata(manifest, config),
            **stored.metadata(),
            "content_hash": content_hash,
            "class_registry_passed": registry_check.passed,
            "new_classes": dg.MetadataValue.json(new_classes),
        },
        check_results=[label_validity_result(manifest, config.max_quarantined_fraction), registry_check],
    )


@dataclass(frozen=True)
class BatchVersion:
    partition: str
    data_version: str
    code_version: str | None
    accepted: bool
    """label_validity and class_registry both passed."""
    reason: str = ""
    """Why the batch is not accepted: a failed check, or metadata refused when it was read."""
    content_hash: str | None = None
    classes: tuple[str, ...] = ()


def exclusion_reason(metadata: Mapping[str, Any]) -> str:
    """Why a materialised batch version is left out of datasets ("" when it is not)."""
    def value(name: str) -> Any:
        return getattr(metadata.get(name), "value", None)

    reasons = []
    if not value("label_validity_passed"):
        reasons.append(f"label_validity failed ({value('num_quarantined')} quarantined, {value('num_images')} accepted)")
    if not value("class_registry_passed"):
        reasons.append(f"class_registry failed (new classes {value('new_classes')})")
    return "; ".join(reasons)


def latest_batch_versions(instance: dg.DagsterInstance) -> list[BatchVersion]:
    """Latest version of every batch partition, in the order the batches landed. A batch whose latest
    ingest was refused (a rejection observation newer than its last materialisation) is not accepted,
    with the refusal as its reason."""
    storage_ids = instance.get_latest_storage_id_by_partition(LABELED_BATCH, dg.DagsterEventType.ASSET_MATERIALIZATION)
    observed = instance.get_latest_storage_id_by_partition(LABELED_BATCH, dg.DagsterEventType.ASSET_OBSERVATION)
    rejected_ids = {p: i for p, i in observed.items() if i > storage_ids.get(p, -1)}
    by_partition = {}
    if storage_ids:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=LABELED_BATCH, storage_ids=list(storage_ids.values())), limit=len(storage_ids)
        ).records
        for record in records:
            materialization = record.asset_materialization
            assert materialization is not None and materialization.partition is not None
            reason = exclusion_reason(materialization.metadata)
            by_partition[materialization.partition] = BatchVersion(
                materialization.partition,
                data_version_of(materialization) or "",
                code_version_of(materialization),
                not reason,
                reason,
                metadata_value(materialization, "content_hash"),
                tuple(metadata_value(materialization, "classes", []) or []),
            )
    if rejected_ids:
        for record in instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=LABELED_BATCH, storage_ids=list(rejected_ids.values())), limit=len(rejected_ids)
        ).records:
            observation = record.asset_observation
            refusal = metadata_value(observation, REJECTED)
            if observation is not None and observation.partition is not None and refusal:
                by_partition[observation.partition] = BatchVersion(
                    observation.partition, "", None, False, str(refusal), metadata_value(observation, "content_hash")
                )
    order = instance.get_dynamic_partitions(BATCH_PARTITIONS)
    return [by_partition[p] for p in order if p in by_partition]
