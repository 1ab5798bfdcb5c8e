"""`transient_failure_retry`: a run that failed on a transient cause is attempted again by itself.

A step already retries a few times inside its run (waits of ~5, 10, 20 s: assets/retries.py). An
outage longer than that fails the run, and the sensor that started it will not start it again (its
run key is spent). This sensor re-requests such a run, with its assets, partition, config and tags,
once its backoff has passed (`RunRecovery`: 1, 2, 4, 8, 16 minutes by default) and the services it
talks to answer again; each attempt's tags name the one before and the first. Deterministic failures
(refused data, a failed blocking check, a bad config) are never repeated, nor is work a later run has
done since. A retried ingest, build or training whose work in fact completed is a cache hit; a
training resumes from its last checkpoint.
"""

import time
from urllib.parse import urlparse

import dagster as dg

from resources.artifact_store import ArtifactStore
from resources.landing_zone import LandingZone
from resources.mlflow_tracking import MLflowResource
from resources.run_recovery import RunRecovery
from yolo_assets.core.processes import tcp_answers
from yolo_assets.history.recovery import RETRY_PLAN_TAG, SUPERSEDED, pending_retries, recover_dead_runs, retry_run_key, retry_tags

PROBE_TIMEOUT_S = 2.0


def answers(url: str) -> bool:
    """A TCP connection to the URL's host and port opens (the server is up, whatever it says)."""
    parsed = urlparse(url)
    return tcp_answers(parsed.hostname or "127.0.0.1", parsed.port or (443 if parsed.scheme == "https" else 80), PROBE_TIMEOUT_S)


def service_urls(landing_zone: LandingZone, artifact_store: ArtifactStore, mlflow: MLflowResource) -> dict[str, str]:
    """The network services the runs depend on (the instance's database is probed by reading the runs)."""
    urls = {}
    for name, resource in (("landing zone", landing_zone), ("artifact store", artifact_store)):
        endpoint = getattr(getattr(resource, "s3", None), "endpoint_url", None)
        if endpoint:
            urls[name] = str(endpoint)
    if mlflow.tracking_uri.startswith(("http://", "https://")):
        urls["MLflow server"] = mlflow.tracking_uri
    return urls


@dg.sensor(
    name="transient_failure_retry",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Attempts a run that failed on a transient cause again, with backoff, once its services answer.",
)
def transient_failure_retry(
    context: dg.SensorEvaluationContext,
    run_recovery: RunRecovery,
    landing_zone: LandingZone,
    artifact_store: ArtifactStore,
    mlflow: MLflowResource,
) -> dg.SensorResult | dg.SkipReason:
    now = time.time()
    if run_recovery.local_run_workers and isinstance(context.instance.run_launcher, dg.DefaultRunLauncher):
        # Runs in local processes: one killed (or left behind by a lost database) would stay STARTED
        # for ever; it becomes a failed run to attempt again. Pods are watched by run monitoring instead.
        for run_id in recover_dead_runs(context.instance):
            context.log.warning(f"run {run_id}: its process is gone; marked failed")

    def no_longer_needed(run: dg.DagsterRun) -> None:  # its page said "will retry at ...": say why not
        if run.tags.get(RETRY_PLAN_TAG, SUPERSEDED) != SUPERSEDED:
            context.instance.add_run_tags(run.run_id, {RETRY_PLAN_TAG: SUPERSEDED})

    plans = pending_retries(context.instance, run_recovery, now, on_superseded=no_longer_needed)
    for plan in plans:  # shown on the failed run's page in the UI
        if plan.run.tags.get(RETRY_PLAN_TAG) != plan.describe():
            context.instance.add_run_tags(plan.run.run_id, {RETRY_PLAN_TAG: plan.describe()})
    due = [plan for plan in plans if plan.next_at is not None and plan.next_at <= now]
    if not due:
        return dg.SkipReason(f"{len(plans)} failed run(s) waiting for their backoff" if plans else "no failed run to attempt again")
    silent = sorted(name for name, url in service_urls(landing_zone, artifact_store, mlflow).items() if not answers(url))
    if silent:
        return dg.SkipReason(f"{len(due)} failed run(s) wait for {', '.join(silent)} to answer")
    return dg.SensorResult(run_requests=[
        dg.RunRequest(
            run_key=retry_run_key(plan.run.run_id),
            asset_selection=list(plan.run.asset_selection or ()),
            partition_key=plan.run.tags.get("dagster/partition"),
            run_config=dict(plan.run.run_config),
            tags=retry_tags(plan.run, plan.attempt),
        )
        for plan in due
    ])
