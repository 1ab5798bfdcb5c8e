"""`dataset_sensor`: one `processed_images` build for every batch that is ready, not one per batch.

The ingest runs (`labeled_data_sensor`) materialise `labeled_batch` partitions only. This sensor
compares the batches the dataset would include now (accepted, not retracted: the same selection
`processed_images` makes) and the current retractions with what its latest version was built from,
and requests one build when they differ and no ingest or training is queued or running. A burst of 50 batches is therefore one
dataset version (one retrain candidate), built once the burst is ingested.

The comparison is on state, not on "something changed since the last evaluation": a batch that
finishes while the dataset builds is never lost. The run_key is the fingerprint of the inputs and of the
latest build, so the same inputs are never requested twice after the same build (a build that failed
after its retries waits for a new batch, a retraction, or a manual run; it does not loop), while a
return to an earlier state (retract, then unretract) builds again.

That comparison reads every batch's latest materialisation (~0.2-0.4 s at 1,000 batches). The cursor
keeps a fingerprint of what the decision depends on, from storage ids alone (~15 ms at 1,000
batches): while nothing moved since an evaluation that found the dataset up to date, an idle tick
skips the comparison.
"""

import dagster as dg

from resources.artifact_store import ArtifactStore
from yolo_assets.assets.dataset import dataset_is_current, wanted_dataset
from yolo_assets.assets.ingest import BATCH_PARTITIONS
from yolo_assets.assets.keys import BATCH_RETRACTIONS, CODE_VERSIONS, LABELED_BATCH, PROCESSED_IMAGES, TRAINED_WEIGHTS
from yolo_assets.assets.materializations import latest_data_version
from yolo_assets.core.hashing import hash_json

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED
]


def dataset_run_key(inputs: dict[str, str], retractions_version: str | None, latest_build: int | None) -> str:
    """What the build makes and what it replaces (the latest build's storage id, a build counter): the
    same inputs are never requested twice in a row, and returning to an earlier state (an unretraction
    recorded with --no-rebuild) builds again."""
    return f"dataset@{hash_json({'batches': inputs, 'retractions': retractions_version, 'after': latest_build})[:16]}"


# A dataset version built while a training runs would be lost to automation: the training's own
# materialisation, when it ends, counts as having handled that new version. The build waits for it.
WAITS_FOR = {LABELED_BATCH, PROCESSED_IMAGES, TRAINED_WEIGHTS}


def build_waits(instance: dg.DagsterInstance) -> bool:
    """A run that will write a batch, the dataset or the weights is queued or running."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
    return any(WAITS_FOR & set(run.asset_selection or ()) for run in runs)


def state_fingerprint(instance: dg.DagsterInstance, dataset: dg.EventLogRecord | None) -> str:
    """What the sensor's decision depends on, without reading any batch's event: the latest event of
    every batch (materialisation or refusal), the batch list, the retractions' version, the dataset's
    latest materialisation (`dataset`) and the code version that builds it."""
    return hash_json({
        "materialized": instance.get_latest_storage_id_by_partition(LABELED_BATCH, dg.DagsterEventType.ASSET_MATERIALIZATION),
        "refused": instance.get_latest_storage_id_by_partition(LABELED_BATCH, dg.DagsterEventType.ASSET_OBSERVATION),
        "batches": instance.get_dynamic_partitions(BATCH_PARTITIONS),
        "retractions": latest_data_version(instance, BATCH_RETRACTIONS),
        "dataset": dataset.storage_id if dataset else None,
        "code": CODE_VERSIONS[PROCESSED_IMAGES],
    })


@dg.sensor(
    name="dataset_sensor",
    target=[PROCESSED_IMAGES],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Builds one processed_images version for all batches ingested (or retracted) since the last one, once no ingest is in progress.",
)
def dataset_sensor(context: dg.SensorEvaluationContext, artifact_store: ArtifactStore) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    if build_waits(instance):
        return dg.SkipReason("batches are being ingested or a model trains: the dataset waits for them (one build per burst)")
    dataset = next(iter(instance.fetch_materializations(PROCESSED_IMAGES, limit=1).records), None)
    fingerprint = state_fingerprint(instance, dataset)  # before reading: a batch landing meanwhile changes it
    if context.cursor == fingerprint:
        return dg.SkipReason("nothing moved since the dataset was found up to date")
    wanted = wanted_dataset(instance, artifact_store)
    latest = dataset.asset_materialization if dataset else None
    if not wanted.inputs or dataset_is_current(latest, wanted):
        context.update_cursor(fingerprint)  # only "nothing to do" is remembered: a requested build is not
        return dg.SkipReason(
            "no accepted batch yet" if not wanted.inputs
            else "the latest dataset version holds every accepted batch and the current retractions"
        )
    run_key = dataset_run_key(wanted.inputs, wanted.retractions.version, dataset.storage_id if dataset else None)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=run_key, asset_selection=[PROCESSED_IMAGES])])
