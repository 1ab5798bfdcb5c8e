"""`rollout_sensor`: one `model_rollout` run when fresh batches have been scored by a canary.

Registrations reach `model_rollout` in their own run (declarative automation, assets/rollout.py). The
evidence of fresh batches arrives in ingest runs, one per batch; this sensor looks at the scorings
since its cursor and requests a run only when one of them carries a canary verdict, so batches landing
while no canary is out cost no run. `model_rollout` itself reads all the evidence not yet counted, so a
run that covers several batches (a burst) counts each of them once.
"""

import dagster as dg

from yolo_assets.assets.keys import FRESH_BATCH_EVALUATION, MODEL_ROLLOUT
from yolo_assets.assets.materializations import metadata_value
from yolo_assets.assets.rollout import EVIDENCE_WINDOW


@dg.sensor(
    name="rollout_sensor",
    target=[MODEL_ROLLOUT],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Moves the gray release when a fresh batch was scored by the champion and the canary.",
)
def rollout_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = int(context.cursor or 0)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=FRESH_BATCH_EVALUATION, after_storage_id=after), limit=EVIDENCE_WINDOW, ascending=True
    ).records
    with_verdict = [r.storage_id for r in records if metadata_value(r.asset_materialization, "canary_verdict")]
    cursor = str(max([after, *(r.storage_id for r in records)]))
    requests = [dg.RunRequest(run_key=f"rollout@{with_verdict[-1]}", asset_selection=[MODEL_ROLLOUT])] if with_verdict else []
    return dg.SensorResult(run_requests=requests, cursor=cursor)
