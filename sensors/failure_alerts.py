"""`run_failure_alert`: a failed run posts what failed and what changed since the last good run."""

from typing import Any

import dagster as dg

from resources.alerts import AlertNotifier
from resources.run_recovery import RunRecovery
from yolo_assets.history.lineage import run_lineage, summary_lines
from yolo_assets.history.recovery import retry_plan


def alert_payload(lineage: dict[str, Any], link: str, retry: str = "") -> dict[str, Any]:
    lines = summary_lines(lineage)
    headline = next((line for line in lines if line.startswith(("failed step", "failed check"))), lines[0])
    return {
        "text": f":rotating_light: Dagster run {lineage['run_id'][:8]} failed: {headline}\n{retry + chr(10) if retry else ''}<{link}|Open the run>",
        "retry": retry,
        "run_id": lineage["run_id"],
        "status": lineage["status"],
        "partition": lineage["partition"],
        "failed_steps": [f"{s['step']}: {s['error_type']}: {s['message']}" for s in lineage["failed_steps"]],
        "failed_checks": [c["check"] for c in lineage["failed_checks"]],
        "lineage_summary": lines[1:],
        "run_url": link,
    }


def retry_line(instance: dg.DagsterInstance, run_id: str, recovery: RunRecovery) -> str:
    """"will retry at ...", "gave up after N attempts: ..." or "not retried ...": what happens next."""
    record = instance.get_run_record_by_id(run_id)
    if record is None or not record.dagster_run.asset_selection:
        return ""
    ended = record.end_time or record.update_timestamp.timestamp()
    return retry_plan(instance, record.dagster_run, ended, recovery).describe()


INCIDENT_HEADING = "Incident summary"


def record_incident(instance: dg.DagsterInstance, run_id: str, lineage: dict[str, Any], retry: str) -> None:
    """The incident summary (what `yolo-assets lineage RUN` prints) as an event of the failed run itself,
    so the run's page in the UI explains it where a user looks first."""
    run = instance.get_run_by_id(run_id)
    if run is not None:
        lines = summary_lines(lineage) + ([retry] if retry else [])
        instance.report_engine_event(f"{INCIDENT_HEADING} (yolo-assets lineage {run_id[:8]}):\n" + "\n".join(lines), run)


def send_failure_alert(
    instance: dg.DagsterInstance, run_id: str, asset_graph: Any, notifier: AlertNotifier, log: Any, recovery: RunRecovery
) -> None:
    """Lineage of the failed run and what happens next -> the run's own event log, and payload -> webhook;
    an alert goes out even when lineage cannot be read."""
    try:
        lineage = run_lineage(instance, run_id, asset_graph)
    except Exception as error:
        log.warning(f"lineage of run {run_id} unavailable: {type(error).__name__}: {error}")
        lineage = {"run_id": run_id, "status": "FAILURE", "partition": None, "triggered_by": "", "started": None,
                   "ended": None, "failed_steps": [], "failed_checks": [], "assets": []}
    try:
        retry = retry_line(instance, run_id, recovery)
    except Exception as error:
        log.warning(f"retry plan of run {run_id} unavailable: {type(error).__name__}: {error}")
        retry = ""
    if lineage["failed_steps"] or lineage["failed_checks"] or lineage["assets"]:
        try:
            record_incident(instance, run_id, lineage, retry)
        except Exception as error:  # the alert matters more than the note on the run
            log.warning(f"incident summary of run {run_id} not recorded: {type(error).__name__}: {error}")
    notifier.send(alert_payload(lineage, notifier.run_link(run_id), retry), log)


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts a failed run's cause and its lineage diff to the alert webhook (or logs it).",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alert_notifier: AlertNotifier, run_recovery: RunRecovery) -> None:
    graph = context.repository_def.asset_graph if context.repository_def else None
    send_failure_alert(context.instance, context.dagster_run.run_id, graph, alert_notifier, context.log, run_recovery)
