"""Self-healing on the embedded instance: what is not attempted again, and the alert that says so
(the outage that is attempted again runs on real servers: tests/test_model_path_faults.py)."""

import uuid

import dagster as dg
from helpers import Home

from resources.run_recovery import RunRecovery
from sensors.failure_alerts import retry_line
from yolo_assets.history.recovery import RETRY_PLAN_TAG, SUPERSEDED, failure_cause, pending_retries


def test_a_deterministic_failure_is_never_attempted_again(home: Home) -> None:
    home.land("batch_a", 4, 61)
    assert all(o.success for o in home.tick())
    home.redefine(run_recovery=RunRecovery(first_delay_s=0))
    config = {"ops": {"batch_retractions": {"config": {"batch": "batch_a", "reason": "   "}}}}  # no reason: refused
    failed = home.materialize("batch_retractions", run_config=config)
    assert not failed.success
    cause = failure_cause(home.instance, failed.run_id)
    assert not cause.transient and "needs a reason" in cause.summary
    assert pending_retries(home.instance, RunRecovery(first_delay_s=0)) == []
    assert retry_line(home.instance, failed.run_id, RunRecovery()).startswith("not retried (a deterministic failure): Failure:")
    runs = len(home.instance.get_runs())
    assert not [o for o in home.tick() if "transient_failure_retry" in o.description]
    assert len(home.instance.get_runs()) == runs


def test_a_failed_run_whose_work_a_later_run_did_is_not_attempted_again_and_its_page_says_so(home: Home) -> None:
    home.land("batch_a", 4, 62)
    assert all(o.success for o in home.tick())
    # A dataset build whose process died (no step failed): a transient cause, attempted again after its backoff.
    lost = home.instance.add_run(dg.DagsterRun(
        job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), asset_selection=frozenset({dg.AssetKey("processed_images")}),
        status=dg.DagsterRunStatus.STARTED,
    ))
    home.instance.report_run_failed(lost)
    [plan] = pending_retries(home.instance, RunRecovery())
    assert plan.run.run_id == lost.run_id and plan.cause.transient
    home.tick()
    assert home.instance.get_run_by_id(lost.run_id).tags[RETRY_PLAN_TAG].startswith("will retry at")
    home.land("batch_b", 4, 63)  # the next build does the lost run's work
    assert all(o.success for o in home.tick())
    assert pending_retries(home.instance, RunRecovery(first_delay_s=0)) == []
    assert not [o for o in home.tick() if "transient_failure_retry" in o.description]
    assert home.instance.get_run_by_id(lost.run_id).tags[RETRY_PLAN_TAG] == SUPERSEDED
