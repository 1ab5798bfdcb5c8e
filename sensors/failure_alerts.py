"""`run_failure_alert`: a failed run posts what failed and what changed since the last good run."""

from typing import Any

import dagster as dg

from resources.alerts import AlertNotifier
from yolo_assets.history.lineage import run_lineage, summary_lines


def alert_payload(lineage: dict[str, Any], link: str) -> dict[str, Any]:
    lines = summary_lines(lineage)
    headline = next((line for line in lines if line.startswith(("failed step", "failed check"))), lines[0])
    return {
        "text": f":rotating_light: Dagster run {lineage['run_id'][:8]} failed: {headline}\n<{link}|Open the run>",
        "run_id": lineage["run_id"],
        "status": lineage["status"],
        "partition": lineage["partition"],
        "failed_steps": [f"{s['step']}: {s['error_type']}: {s['message']}" for s in lineage["failed_steps"]],
        "failed_checks": [c["check"] for c in lineage["failed_checks"]],
        "lineage_summary": lines[1:],
        "run_url": link,
    }


def send_failure_alert(instance: dg.DagsterInstance, run_id: str, asset_graph: Any, notifier: AlertNotifier, log: Any) -> None:
    """Lineage of the failed run -> payload -> webhook; an alert goes out even when lineage cannot be read."""
    try:
        lineage = run_lineage(instance, run_id, asset_graph)
    except Exception as error:
        log.warning(f"lineage of run {run_id} unavailable: {type(error).__name__}: {error}")
        lineage = {"run_id": run_id, "status": "FAILURE", "partition": None, "triggered_by": "", "started": None,
                   "ended": None, "failed_steps": [], "failed_checks": [], "assets": []}
    notifier.send(alert_payload(lineage, notifier.run_link(run_id)), log)


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts a failed run's cause and its lineage diff to the alert webhook (or logs it).",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alert_notifier: AlertNotifier) -> None:
    graph = context.repository_def.asset_graph if context.repository_def else None
    send_failure_alert(context.instance, context.dagster_run.run_id, graph, alert_notifier, context.log)
