"""`rollout_sensor`: one `model_rollout` run when fresh batches have been scored by a canary, or (under
`retraction_policy: demote`) when a batch was retracted.

Registrations reach `model_rollout` in their own run (declarative automation, assets/rollout.py). The
evidence of fresh batches arrives in ingest runs, one per batch; this sensor looks at the scorings
since its cursor and requests a run only when one of them carries a canary verdict, so batches landing
while no canary is out cost no run. `model_rollout` itself reads all the evidence not yet counted, so a
run that covers several batches (a burst) counts each of them once. A retraction under `demote` takes
the models that learned from the batch out of service in that same kind of run.
"""

import dagster as dg

from resources.model_policy import DEMOTE, ModelPolicy
from yolo_assets.assets.keys import BATCH_RETRACTIONS, FRESH_BATCH_EVALUATION, MODEL_ROLLOUT
from yolo_assets.assets.materializations import metadata_value
from yolo_assets.assets.rollout import EVIDENCE_WINDOW


def new_records(context: dg.SensorEvaluationContext, asset: dg.AssetKey, after: int) -> list[dg.EventLogRecord]:
    return list(context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, after_storage_id=after), limit=EVIDENCE_WINDOW, ascending=True
    ).records)


@dg.sensor(
    name="rollout_sensor",
    target=[MODEL_ROLLOUT],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Moves the gray release when a fresh batch was scored by the champion and the canary, or a batch was retracted (retraction_policy demote).",
)
def rollout_sensor(context: dg.SensorEvaluationContext, model_policy: ModelPolicy) -> dg.SensorResult:
    after = int(context.cursor or 0)  # storage ids are global to the event log: one cursor for both assets
    scorings = new_records(context, FRESH_BATCH_EVALUATION, after)
    retractions = new_records(context, BATCH_RETRACTIONS, after) if model_policy.retraction_policy == DEMOTE else []
    triggers = [r.storage_id for r in scorings if metadata_value(r.asset_materialization, "canary_verdict")]
    triggers += [r.storage_id for r in retractions]
    cursor = str(max([after, *(r.storage_id for r in [*scorings, *retractions])]))
    requests = [dg.RunRequest(run_key=f"rollout@{max(triggers)}", asset_selection=[MODEL_ROLLOUT])] if triggers else []
    return dg.SensorResult(run_requests=requests, cursor=cursor)
