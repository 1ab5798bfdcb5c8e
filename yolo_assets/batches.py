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
from yolo_assets.fileio import atomic_write_bytes
from resources.landing_zone import LandingZone
from yolo_assets.checks import LABEL_VALIDITY, label_validity_passed, label_validity_result
from yolo_assets.hashing import canonical_json
from yolo_assets.parallel import parallel_starmap
from yolo_assets.versioning import (
    cache_key,
    manifest_version,
    materialization_code_version,
    materialization_data_version,
)
from yolo_assets.yolo_format import BatchFormatError, inspect_pair, read_yolo_layout

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


def build_manifest(root: Path, config: LabeledBatchConfig, store: ArtifactStore) -> dict[str, Any]:
    layout = read_yolo_layout(root)
    results = parallel_starmap(
        inspect_pair,
        [
            (str(root), pair.image, pair.label, len(layout.class_names), config.max_image_pixels, str(store.object_root(BLOBS)))
            for pair in layout.pairs
        ],
        config.workers,
    )
    items, quarantine = [], []
    for result in results:
        if result["reason"]:
            quarantine.append({k: result[k] for k in ("image", "label", "reason", "detail")})
            continue
        items.append(
            {
                "source": result["image"],
                "image_sha": result["image_sha"],
                "label_sha": result.get("label_sha"),
                "width": result["width"],
                "height": result["height"],
                "boxes": [[layout.class_names[int(b[0])], *b[1:]] for b in result["boxes"]],
            }
        )
    return {"format": "yolo", "classes": layout.class_names, "items": items, "quarantine": quarantine}


def write_batch_artifact(store: ArtifactStore, root: Path, manifest: dict[str, Any], version: str) -> None:
    with store.write_artifact(LABELED_BATCH, version) as staging:
        atomic_write_bytes(staging / "manifest.json", canonical_json(manifest), durable=True)
        (staging / "quarantine.json").write_text(json.dumps(manifest["quarantine"], indent=1))
        for entry in manifest["quarantine"]:  # keep the bad files themselves: nothing is lost
            for relative in (entry["image"], entry["label"]):
                if relative and (root / relative).is_file():
                    target = staging / "quarantine" / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(root / relative, target)


def batch_metadata(manifest: dict[str, Any], config: LabeledBatchConfig) -> dict[str, Any]:
    reasons = Counter(entry["reason"] for entry in manifest["quarantine"])
    boxes = Counter(box[0] for item in manifest["items"] for box in item["boxes"])
    return {
        "num_images": len(manifest["items"]),
        "num_quarantined": len(manifest["quarantine"]),
        "quarantine_reasons": dg.MetadataValue.json(dict(reasons)),
        "quarantined": dg.MetadataValue.json(manifest["quarantine"][:100]),
        "num_backgrounds": sum(1 for item in manifest["items"] if not item["boxes"]),
        "boxes_per_class": dg.MetadataValue.json(dict(boxes)),
        "classes": dg.MetadataValue.json(manifest["classes"]),
        "label_validity_passed": label_validity_passed(manifest, config.max_quarantined_fraction),
    }


@dg.asset(
    partitions_def=batch_partitions,
    code_version=LABELED_BATCH_CODE_VERSION,
    check_specs=[LABEL_VALIDITY],
    group_name="data",
    kinds={"python"},
    description="One landed batch, normalised to a manifest; bad pairs quarantined with a reason.",
)
def labeled_batch(
    context: dg.AssetExecutionContext,
    config: LabeledBatchConfig,
    landing_zone: LandingZone,
    artifact_store: ArtifactStore,
) -> dg.MaterializeResult:
    batch = context.partition_key
    content_hash = landing_zone.content_hash(batch)
    key = cache_key(LABELED_BATCH_CODE_VERSION, content_hash, config.output_settings())
    version = artifact_store.lookup_cache_key(LABELED_BATCH, key)
    cache_hit = version is not None
    if version is not None:
        manifest = artifact_store.read_json(LABELED_BATCH, version, "manifest.json")
        context.log.info(f"cache hit: batch {batch} content {content_hash[:12]} is already {version[:12]}")
    else:
        with landing_zone.open_batch(batch) as root:
            try:
                manifest = build_manifest(root, config, artifact_store)
            except BatchFormatError as error:
                raise dg.Failure(description=f"batch {batch!r} cannot be read: {error}", allow_retries=False) from error
            version = manifest_version(manifest)
            if not artifact_store.exists(LABELED_BATCH, version):
                write_batch_artifact(artifact_store, root, manifest, version)
        artifact_store.record_cache_key(LABELED_BATCH, key, version)
    for entry in manifest["quarantine"]:
        context.log.warning(f"quarantined {entry['image'] or entry['label']}: {entry['reason']} ({entry['detail']})")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **batch_metadata(manifest, config),
            "cache_hit": cache_hit,
            "cache_key": key,
            "content_hash": content_hash,
            "path": dg.MetadataValue.path(artifact_store.uri(LABELED_BATCH, version)),
        },
        check_results=[label_validity_result(manifest, config.max_quarantined_fraction)],
    )


@dataclass(frozen=True)
class BatchVersion:
    partition: str
    data_version: str
    code_version: str | None
    label_validity_passed: bool


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
        passed = materialization.metadata.get("label_validity_passed")
        by_partition[materialization.partition] = BatchVersion(
            materialization.partition,
            materialization_data_version(record) or "",
            materialization_code_version(record),
            bool(passed.value) if passed is not None else False,
        )
    order = instance.get_dynamic_partitions(batch_partitions.name)
    return [by_partition[p] for p in order if p in by_partition]
