"""`labeled_batch`: one dynamic partition per landed batch, validated item by item.

Accepted image and label bytes are copied into the store's content-addressed blobs, so later
assets never read the (mutable) landing zone again; quarantined files are kept beside the manifest.
"""


import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from resources.artifact_store import ArtifactStore
from yolo_assets.retries import TRANSIENT_RETRY
from yolo_assets.fileio import atomic_write_bytes
from resources.landing_zone import LandingZone
from yolo_assets.checks import (
    CLASS_REGISTRY,
    LABEL_VALIDITY,
    class_registry_result,
    label_validity_passed,
    label_validity_result,
)
from yolo_assets.hashing import canonical_json
from yolo_assets.parallel import parallel_starmap
from yolo_assets.versioning import (
    cache_key,
    manifest_version,
    latest_materialization,
    materialization_code_version,
    materialization_data_version,
    metadata_value,
)
from resources.dataset_policy import DatasetPolicy
from yolo_assets.formats import BatchFormatError, class_key, read_batch
from yolo_assets.yolo_format import inspect_item

LABELED_BATCH = "labeled_batch"
LABELED_BATCH_CODE_VERSION = "1"
BLOBS = "blobs"

batch_partitions = dg.DynamicPartitionsDefinition(name="batches")


class LabeledBatchConfig(dg.Config):
    max_quarantined_fraction: float = 0.2
    """label_validity fails (and blocks processed_images) above this share of quarantined pairs."""
    max_image_pixels: int = 50_000_000
    """Images with more pixels are quarantined as image_too_large (decompression-bomb guard)."""
    workers: int = 0
    """Processes that decode images; 0 = one per core. Does not change the output."""

    def output_settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"workers"})


DUPLICATE_IMAGE = "duplicate_image"
LABEL_CONFLICT = "label_conflict"


def resolve_duplicates(items: list[dict[str, Any]], policy: DatasetPolicy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The same image twice in one batch: identical labels keep one copy; different labels are a
    conflict (quarantined, or the last copy wins under `last_writer_wins`)."""
    by_sha: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_sha.setdefault(item["image_sha"], []).append(item)
    kept, quarantine = [], []
    for copies in by_sha.values():
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        agree = all(copy["boxes"] == copies[0]["boxes"] for copy in copies)
        if agree or policy.label_conflicts == "last_writer_wins":
            winner = copies[0] if agree else copies[-1]
            kept.append(winner)
            quarantine += [
                {"image": c["source"], "label": c.get("label_source"), "reason": DUPLICATE_IMAGE,
                 "detail": f"same image as {winner['source']}" + ("" if agree else " (labels differ; last copy kept)")}
                for c in copies if c is not winner
            ]
        else:
            quarantine += [
                {"image": c["source"], "label": c.get("label_source"), "reason": LABEL_CONFLICT,
                 "detail": f"the same image is labeled differently in {', '.join(x['source'] for x in copies)}"}
                for c in copies
            ]
    return kept, quarantine


def build_manifest(
    root: Path, config: LabeledBatchConfig, policy: DatasetPolicy, store: ArtifactStore, rejected_members: list[dict[str, Any]]
) -> dict[str, Any]:
    layout = read_batch(root)
    results = parallel_starmap(
        inspect_item,
        [
            (str(root), item.image, item.label, item.label_text, len(layout.class_names), config.max_image_pixels,
             policy.coordinate_tolerance, policy.missing_label, str(store.object_root(BLOBS)))
            for item in layout.items
        ],
        config.workers,
    )
    accepted, quarantine = [], [*rejected_members, *layout.quarantine]
    fixes: Counter[str] = Counter()
    for item, result in zip(layout.items, results):
        if result["reason"]:
            quarantine.append({k: result[k] for k in ("image", "label", "reason", "detail")})
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
    items, duplicates = resolve_duplicates(accepted, policy)
    return {
        "format": layout.format,
        "classes": layout.class_names,
        "items": items,
        "quarantine": quarantine + duplicates,
        "notes": {**layout.notes, **fixes},
    }


def write_batch_artifact(store: ArtifactStore, root: Path, manifest: dict[str, Any], version: str) -> None:
    with store.write_artifact(LABELED_BATCH, version) as staging:
        atomic_write_bytes(staging / "manifest.json", canonical_json(manifest), durable=True)
        (staging / "quarantine.json").write_text(json.dumps(manifest["quarantine"], indent=1))
        (staging / "quarantine.md").write_text(quarantine_table(manifest["quarantine"], limit=None))
        for entry in manifest["quarantine"]:  # keep the bad files themselves: nothing is lost
            for relative in (entry["image"], entry["label"]):
                source = root / relative if relative else None
                # Never follow a link (it may point outside the batch); never copy a folder.
                if source and not source.is_symlink() and source.is_file() and source.resolve().is_relative_to(root.resolve()):
                    target = staging / "quarantine" / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(root / relative, target)


def quarantine_table(entries: list[dict[str, Any]], limit: int | None = 50) -> str:
    """Markdown table of quarantine entries (the metadata shows the first `limit`)."""
    if not entries:
        return "No quarantined items.\n"
    rows = ["| item | reason | detail |", "|---|---|---|"]
    for entry in entries[:limit]:
        detail = str(entry["detail"]).replace("|", "/")
        rows.append(f"| {entry['image'] or entry['label']} | `{entry['reason']}` | {detail} |")
    if limit is not None and len(entries) > limit:
        rows.append(f"| ... | {len(entries) - limit} more in quarantine.json | |")
    return "\n".join(rows) + "\n"


def batch_metadata(manifest: dict[str, Any], config: LabeledBatchConfig) -> dict[str, Any]:
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


@dg.asset(
    retry_policy=TRANSIENT_RETRY,
    partitions_def=batch_partitions,
    code_version=LABELED_BATCH_CODE_VERSION,
    check_specs=[LABEL_VALIDITY, CLASS_REGISTRY],
    group_name="data",
    kinds={"python"},
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
        LABELED_BATCH_CODE_VERSION, content_hash, {**config.output_settings(), "policy": dataset_policy.model_dump()}
    )
    version = artifact_store.lookup_cache_key(LABELED_BATCH, key)
    cache_hit = version is not None
    if version is not None:
        manifest = artifact_store.read_json(LABELED_BATCH, version, "manifest.json")
        context.log.info(f"cache hit: batch {batch} content {content_hash[:12]} is already {version[:12]}")
    else:
        with landing_zone.open_batch(batch) as (root, rejected_members):
            try:
                manifest = build_manifest(root, config, dataset_policy, artifact_store, rejected_members)
            except BatchFormatError as error:
                raise dg.Failure(description=f"batch {batch!r} cannot be read: {error}", allow_retries=False) from error
            version = manifest_version(manifest)
            if not artifact_store.exists(LABELED_BATCH, version):
                write_batch_artifact(artifact_store, root, manifest, version)
        artifact_store.record_cache_key(LABELED_BATCH, key, version)
    for entry in manifest["quarantine"]:
        context.log.warning(f"quarantined {entry['image'] or entry['label']}: {entry['reason']} ({entry['detail']})")
    registry = class_registry(context.instance)
    known = {class_key(name, dataset_policy.case_sensitive_classes) for name in registry}
    new_classes = [n for n in manifest["classes"] if class_key(n, dataset_policy.case_sensitive_classes) not in known]
    registry_check = class_registry_result(new_classes if registry else [], registry, dataset_policy.new_class_policy)
    if not registry_check.passed:
        context.log.error(f"batch {batch} rejected: new classes {new_classes} not in the registry {registry} (new_class_policy=reject)")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **batch_metadata(manifest, config),
            "cache_hit": cache_hit,
            "cache_key": key,
            "content_hash": content_hash,
            "path": dg.MetadataValue.path(artifact_store.uri(LABELED_BATCH, version)),
            "class_registry_passed": registry_check.passed,
            "new_classes": dg.MetadataValue.json(new_classes),
        },
        check_results=[label_validity_result(manifest, config.max_quarantined_fraction), registry_check],
    )


def class_registry(instance: dg.DagsterInstance) -> list[str]:
    """The class names of the current dataset, from the latest processed_images metadata (cheap:
    no manifest read, whatever the dataset's size)."""
    return list(metadata_value(latest_materialization(instance, "processed_images"), "classes", []) or [])


@dataclass(frozen=True)
class BatchVersion:
    partition: str
    data_version: str
    code_version: str | None
    accepted: bool
    """label_validity and class_registry both passed."""


def latest_batch_versions(instance: dg.DagsterInstance) -> list[BatchVersion]:
    """Latest materialisation of every batch partition, in the order the batches landed."""
    asset_key = dg.AssetKey(LABELED_BATCH)
    storage_ids = instance.get_latest_storage_id_by_partition(asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION)
    if not storage_ids:
        return []
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(storage_ids.values())), limit=len(storage_ids)
    ).records
    by_partition = {}
    for record in records:
        materialization = record.asset_materialization
        assert materialization is not None and materialization.partition is not None
        checks = [materialization.metadata.get(name) for name in ("label_validity_passed", "class_registry_passed")]
        by_partition[materialization.partition] = BatchVersion(
            materialization.partition,
            materialization_data_version(record) or "",
            materialization_code_version(record),
            all(bool(check.value) if check is not None else False for check in checks),
        )
    order = instance.get_dynamic_partitions(batch_partitions.name)
    return [by_partition[p] for p in order if p in by_partition]
