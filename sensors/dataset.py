"""`dataset_sensor`: one `processed_images` build for every batch that is ready, not one per batch.

The ingest runs (`labeled_data_sensor`) materialise `labeled_batch` partitions only. This sensor
compares the batches the dataset would include now (accepted, not retracted: the same selection
`processed_images` makes) and the current retractions with what its latest version was built from,
and requests one build when they differ and no ingest is queued or running. A burst of 50 batches is therefore one
dataset version (one retrain candidate), built once the burst is ingested.

The comparison is on state, not on "something changed since the last evaluation": a batch that
finishes while the dataset builds is never lost. The run_key is the fingerprint of the inputs, so the
same inputs are never requested twice (a build that failed after its retries waits for a new batch,
a retraction, or a manual run; it does not loop).
"""

import dagster as dg

from resources.artifact_store import ArtifactStore
from yolo_assets.assets.dataset import select_batches
from yolo_assets.assets.ingest import latest_batch_versions
from yolo_assets.assets.keys import LABELED_BATCH, PROCESSED_IMAGES
from yolo_assets.assets.materializations import latest_materialization, metadata_value
from yolo_assets.assets.retractions import RETRACTIONS_VERSION, current_retractions
from yolo_assets.core.hashing import hash_json

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED
]


def dataset_run_key(inputs: dict[str, str], retractions_version: str | None) -> str:
    return f"dataset@{hash_json({'batches': inputs, 'retractions': retractions_version})[:16]}"


def ingest_in_progress(instance: dg.DagsterInstance) -> bool:
    """A run that will write a batch or the dataset is queued or running."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    return any({LABELED_BATCH, PROCESSED_IMAGES} & set(run.asset_selection or ()) for run in runs)


@dg.sensor(
    name="dataset_sensor",
    target=[PROCESSED_IMAGES],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Builds one processed_images version for all batches ingested (or retracted) since the last one, once no ingest is in progress.",
)
def dataset_sensor(context: dg.SensorEvaluationContext, artifact_store: ArtifactStore) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    if ingest_in_progress(instance):
        return dg.SkipReason("batches are still being ingested: the dataset waits for the whole burst")
    retractions = current_retractions(instance, artifact_store)
    selection = select_batches(latest_batch_versions(instance), retractions)
    inputs = {batch.partition: batch.data_version for batch in selection.included}
    latest = latest_materialization(instance, PROCESSED_IMAGES)
    if not inputs:
        return dg.SkipReason("no accepted batch yet")
    built_with_retractions = metadata_value(latest, RETRACTIONS_VERSION) or None  # "" when built with none
    if inputs == metadata_value(latest, "input_batches") and retractions.version == built_with_retractions:
        return dg.SkipReason("the latest dataset version holds every accepted batch and the current retractions")
    run_key = dataset_run_key(inputs, retractions.version)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=run_key, asset_selection=[PROCESSED_IMAGES])])
