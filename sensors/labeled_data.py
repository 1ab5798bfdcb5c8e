"""`labeled_data_sensor`: one dynamic partition and one `labeled_batch` run per complete batch in the
landing zone. The dataset (`processed_images`) is not in these runs: `dataset_sensor` builds it once
for every batch that is ready, so a burst of batches makes one dataset version.

The cursor remembers each batch's cheap fingerprint (its marker's or archive's stat), so a tick on a
landing zone of many thousands of files lists only the top level and hashes only batches that moved.
The run_key carries the batch content hash: an unchanged batch is never ingested twice, and a batch
re-uploaded with different content (marker rewritten) is ingested again as a new version.
"""

import json

import dagster as dg

from resources.landing_zone import LandingZone
from yolo_assets.assets.ingest import BATCH_PARTITIONS, batch_partitions
from yolo_assets.assets.keys import FRESH_BATCH_EVALUATION, LABELED_BATCH

CONTENT_HASH_TAG = "yolo_assets/batch_content_hash"
# The batch is scored by the live models in its own ingest run, before any dataset build can include it.
INGEST_ASSETS = [LABELED_BATCH, FRESH_BATCH_EVALUATION]


def ingest_run_key(batch: str, content_hash: str) -> str:
    return f"{batch}@{content_hash}"


@dg.sensor(
    name="labeled_data_sensor",
    target=INGEST_ASSETS,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ingests each complete batch that lands and scores it with the live models: one run per batch.",
)
def labeled_data_sensor(context: dg.SensorEvaluationContext, landing_zone: LandingZone) -> dg.SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known_partitions = set(context.instance.get_dynamic_partitions(BATCH_PARTITIONS))
    new_partitions: list[str] = []
    run_requests: list[dg.RunRequest] = []
    listing = landing_zone.list_complete_batches()
    for batch in listing:
        if seen.get(batch.name) == batch.fingerprint:
            continue
        content_hash = landing_zone.content_hash(batch.name)
        if batch.name not in known_partitions:
            new_partitions.append(batch.name)
        run_requests.append(
            dg.RunRequest(
                run_key=ingest_run_key(batch.name, content_hash),
                partition_key=batch.name,
                asset_selection=INGEST_ASSETS,
                tags={CONTENT_HASH_TAG: content_hash},
            )
        )
        seen[batch.name] = batch.fingerprint
    # Forget batches that left the landing zone so the cursor stays the size of the zone.
    present = {batch.name for batch in listing}
    seen = {name: fingerprint for name, fingerprint in seen.items() if name in present}
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[batch_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(seen, sort_keys=True),
    )
