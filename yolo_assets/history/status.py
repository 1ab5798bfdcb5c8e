"""Per-asset status from the instance: latest data version, code version, time, partitions, staleness."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from resources.artifact_store import ArtifactStore
from yolo_assets.assets.dataset import WantedDataset, dataset_is_current, wanted_dataset
from yolo_assets.assets.ingest import BATCH_PARTITIONS, BatchVersion, latest_batch_versions
from yolo_assets.assets.keys import LABELED_BATCH, PROCESSED_IMAGES
from yolo_assets.assets.materializations import code_version_of, data_version_of, input_data_versions, metadata_to_json, tags_of


def _stale(
    key: dg.AssetKey,
    code_version: str | None,
    materialization: dg.AssetMaterialization | None,
    latest_versions: dict[str, str | None],
    batches: list[BatchVersion],
    instance: dg.DagsterInstance,
    wanted: WantedDataset,
) -> bool:
    """Stale when never materialised, made by other code, or built from inputs that have moved since
    (Dagster's provenance tags name the version of every input it read); processed_images by the
    rule dataset_sensor builds on (accepted batches less the retracted ones, and the retractions)."""
    if materialization is None or code_version_of(materialization) != code_version:
        return True
    if key == LABELED_BATCH:
        partitions = instance.get_dynamic_partitions(BATCH_PARTITIONS)
        return len(batches) < len(partitions) or any(b.code_version != code_version for b in batches)
    if key == PROCESSED_IMAGES:
        return bool(wanted.inputs) and not dataset_is_current(materialization, wanted)
    return any(version != latest_versions.get(parent) for parent, version in input_data_versions(tags_of(materialization)).items())


def asset_status(defs: dg.Definitions, instance: dg.DagsterInstance, store: ArtifactStore) -> list[dict[str, Any]]:
    graph = defs.resolve_asset_graph()
    keys = sorted(graph.materializable_asset_keys)
    events = {key: instance.get_latest_materialization_event(key) for key in keys}
    materializations = {key: event.asset_materialization if event else None for key, event in events.items()}
    latest_versions = {
        key.to_user_string(): data_version_of(m) for key, m in materializations.items()
    }
    batches = latest_batch_versions(instance)
    wanted = wanted_dataset(instance, store)
    rows = []
    for key in keys:
        node, event, materialization = graph.get(key), events[key], materializations[key]
        partitions = None
        if node.partitions_def is not None:
            partitions = len(instance.get_materialized_partitions(key))
        rows.append(
            {
                "key": key.to_user_string(),
                "data_version": latest_versions[key.to_user_string()],
                "code_version": node.code_version,
                "time": datetime.fromtimestamp(event.timestamp, UTC).isoformat() if event else None,
                "partitions": partitions,
                "stale": _stale(key, node.code_version, materialization, latest_versions, batches, instance, wanted),
                "metadata": metadata_to_json(dict(materialization.metadata)) if materialization else {},
            }
        )
    return rows
