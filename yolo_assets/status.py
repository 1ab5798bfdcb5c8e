"""Per-asset status from the instance: latest data version, code version, time, partitions, staleness."""

from datetime import datetime, timezone
from typing import Any

import dagster as dg

from yolo_assets.batches import LABELED_BATCH, batch_partitions, latest_batch_versions
from yolo_assets.processed_images import PROCESSED_IMAGES
from yolo_assets.versioning import latest_data_version, metadata_to_json

# Model assets name the upstream version they were built from in their metadata.
BUILT_FROM = {
    "trained_weights": (PROCESSED_IMAGES, "dataset_version"),
    "evaluation_report": ("trained_weights", "weights_version"),
    "registered_model": ("evaluation_report", "evaluation_version"),
}


def _stale(key: dg.AssetKey, code_version: str | None, materialization: dg.AssetMaterialization | None, instance: dg.DagsterInstance) -> bool:
    """Stale when never materialised, made by other code, or built from inputs that have moved since."""
    if materialization is None or materialization.tags.get("dagster/code_version") != code_version:
        return True
    if key.to_user_string() == LABELED_BATCH:
        batches = latest_batch_versions(instance)
        partitions = instance.get_dynamic_partitions(batch_partitions.name)
        return len(batches) < len(partitions) or any(b.code_version != code_version for b in batches)
    if key.to_user_string() == PROCESSED_IMAGES:
        recorded = getattr(materialization.metadata.get("input_batches"), "value", None)
        current = {b.partition: b.data_version for b in latest_batch_versions(instance) if b.accepted}
        return recorded != current
    if key.to_user_string() in BUILT_FROM:
        upstream, field = BUILT_FROM[key.to_user_string()]
        recorded = getattr(materialization.metadata.get(field), "value", None)
        return recorded != latest_data_version(instance, upstream)
    return False


def asset_status(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    graph = defs.resolve_asset_graph()
    rows = []
    for key in sorted(graph.materializable_asset_keys):
        node = graph.get(key)
        event = instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event else None
        partitions = None
        if node.partitions_def is not None:
            partitions = len(instance.get_materialized_partitions(key))
        rows.append(
            {
                "key": key.to_user_string(),
                "data_version": materialization.tags.get("dagster/data_version") if materialization else None,
                "code_version": node.code_version,
                "time": datetime.fromtimestamp(event.timestamp, timezone.utc).isoformat() if event else None,
                "partitions": partitions,
                "stale": _stale(key, node.code_version, materialization, instance),
                "metadata": metadata_to_json(dict(materialization.metadata)) if materialization else {},
            }
        )
    return rows
