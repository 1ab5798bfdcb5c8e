"""`batch_retractions`: the batches a person took out of the dataset after ingestion, and why.

Materialised on request (`yolo-assets retract BATCH --reason TEXT`, `unretract`, or the launchpad:
Materialize `batch_retractions` with `{batch, reason}` or `{batch, unretract: true}`). Each
materialisation is the whole current state: a `retractions.json` in the artifact store (local folder
or S3) whose hash is the data version, and the same list in the metadata. Every machine reads it
through the Dagster instance (latest data version) and the store, never through a local file.
`processed_images` reads it when it builds (see dataset.py); `dataset_sensor` rebuilds
`processed_images` when the state changes without it.
"""

from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg

from resources.artifact_store import ArtifactStore, Built
from yolo_assets.assets.ingest import BATCH_PARTITIONS
from yolo_assets.assets.keys import BATCH_RETRACTIONS, CODE_VERSIONS, LABELED_BATCH, identity
from yolo_assets.assets.materializations import data_version_of, latest_data_version, metadata_value
from yolo_assets.core.versioning import cache_key, encoded_manifest
from yolo_assets.data.retractions import RetractionError, retract, unretract

RETRACTIONS_FILE = "retractions.json"
RETRACTIONS_POOL = "batch_retractions"
RETRACTIONS_VERSION = "retractions_version"  # processed_images metadata: the state it was built with


class BatchRetractionConfig(dg.Config):
    batch: str
    """The batch (a `labeled_batch` partition) to take out of the dataset, or to put back."""
    reason: str = ""
    """Why it is retracted (required unless unretracting): shown in processed_images and model lineage."""
    unretract: bool = False
    """Put a retracted batch back into the next dataset version."""


class Retractions(NamedTuple):
    version: str | None
    """The data version of the latest `batch_retractions` materialisation; None when never retracted."""
    records: list[dict[str, Any]]


def current_retractions(instance: dg.DagsterInstance, store: ArtifactStore) -> Retractions:
    version = latest_data_version(instance, BATCH_RETRACTIONS)
    if version is None:
        return Retractions(None, [])
    return Retractions(version, store.read_json(BATCH_RETRACTIONS, version, RETRACTIONS_FILE)["retractions"])


def latest_batch_content(instance: dg.DagsterInstance, batch: str) -> tuple[str | None, str | None]:
    """(data version, landing-zone content hash) of a batch's latest materialisation, if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LABELED_BATCH, asset_partitions=[batch]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    return data_version_of(materialization), metadata_value(materialization, "content_hash")


@dg.asset(
    **identity(BATCH_RETRACTIONS),
    # Each retraction reads the whole list and writes the next one: two at once would lose one. The
    # instance's pool limit (1) runs them one after the other.
    pool=RETRACTIONS_POOL,
    description="Batches taken out of the dataset after ingestion, with reason and time; run from the launchpad with {batch, reason}.",
)
def batch_retractions(
    context: dg.AssetExecutionContext, config: BatchRetractionConfig, artifact_store: ArtifactStore
) -> dg.MaterializeResult:
    batches = context.instance.get_dynamic_partitions(BATCH_PARTITIONS)
    if config.batch not in batches:
        raise dg.Failure(description=f"unknown batch {config.batch!r}: not a labeled_batch partition", allow_retries=False)
    previous = current_retractions(context.instance, artifact_store)
    try:
        if config.unretract:
            records = unretract(previous.records, config.batch)
        else:
            data_version, content_hash = latest_batch_content(context.instance, config.batch)
            now = datetime.now(UTC).isoformat(timespec="seconds")
            records = retract(previous.records, config.batch, config.reason, now, data_version, content_hash)
    except RetractionError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    version, encoded = encoded_manifest({"retractions": records})  # the file's hash is the data version

    def write(staging: Path) -> None:
        (staging / RETRACTIONS_FILE).write_bytes(encoded)

    stored = artifact_store.cached(
        BATCH_RETRACTIONS,
        cache_key(CODE_VERSIONS[BATCH_RETRACTIONS], version, {}),
        lambda: nullcontext(Built(version, records, write)),
        load=lambda _: records,
    )
    action = "unretracted" if config.unretract else "retracted"
    context.log.info(f"batch {config.batch} {action}; retracted now: {[r['batch'] for r in records] or 'none'}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(stored.version),
        metadata={
            "change": f"{action} {config.batch}",
            "num_retracted": len(records),
            "retracted_batches": dg.MetadataValue.json(records),
            **stored.metadata(),
        },
    )
