"""Why did this run fail, and what made this model? Read from the Dagster instance's event log
(run, step-failure and materialisation records, provenance tags) and the MLflow registry."""

import json
import re
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from yolo_assets.assets.ingest import latest_batch_versions
from yolo_assets.assets.keys import LABELED_BATCH, PROCESSED_IMAGES, TRAINED_WEIGHTS
from yolo_assets.assets.materializations import (
    code_version_of,
    data_version_of,
    input_data_versions,
    metadata_to_json,
    metadata_value,
    tags_of,
)

OUR_CODE = re.compile(r'File "[^"]*/(yolo_assets|resources|sensors)/[^"]+"')
# The events a run's lineage is read from (not its log lines: a training logs every epoch).
LINEAGE_EVENTS = {
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    dg.DagsterEventType.STEP_FAILURE,
}


def _time(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else None


def innermost_error(error: Any) -> Any:
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def our_frames(error: Any, limit: int = 3) -> list[str]:
    """The innermost stack frames that are this project's code (not Dagster's or a library's)."""
    frames: list[str] = []
    while error is not None:
        frames += [
            " ".join(token for token in frame.split() if set(token) != {"^"})  # drop the ^^^ markers
            for frame in error.stack
            if OUR_CODE.search(frame)
        ]
        error = getattr(error, "cause", None)
    return frames[-limit:]


def _op_config(run: dg.DagsterRun | None, asset: str) -> dict[str, Any]:
    """The run config a run gave an asset (`ops: {asset: {config: ...}}`), or {}."""
    ops = run.run_config.get("ops") if run else None
    op = ops.get(asset) if isinstance(ops, dict) else None
    config = op.get("config") if isinstance(op, dict) else None
    return config if isinstance(config, dict) else {}


def _latest_before(instance: dg.DagsterInstance, asset: str, before: float | None, partition: str | None = None) -> dg.EventLogRecord | None:
    """The asset's latest materialisation before `before`; of `partition` only, when given."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), before_timestamp=before, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0] if records else None


def batches_since(instance: dg.DagsterInstance, after: float, before: float | None) -> list[dict[str, Any]]:
    """Batch versions that landed in the window, with their validation summaries."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LABELED_BATCH, after_timestamp=after, before_timestamp=before),
        limit=1000,
    ).records
    return [
        {
            "batch": record.asset_materialization.partition,
            "data_version": data_version_of(record.asset_materialization),
            "num_images": metadata_value(record.asset_materialization, "num_images"),
            "num_quarantined": metadata_value(record.asset_materialization, "num_quarantined"),
            "quarantine_reasons": metadata_value(record.asset_materialization, "quarantine_reasons", {}),
            "new_classes": metadata_value(record.asset_materialization, "new_classes", []),
        }
        for record in reversed(records)
        if record.asset_materialization
    ]


def diff_since_last_success(
    instance: dg.DagsterInstance,
    asset: str,
    run: dg.DagsterRun,
    run_start: float | None,
    run_end: float | None,
    code_version: str | None,
) -> dict[str, Any]:
    """What changed for `asset` between its last successful materialisation and this run (for a
    partitioned run: the same partition's)."""
    last = _latest_before(instance, asset, run_start, run.tags.get("dagster/partition"))
    if last is None or last.asset_materialization is None:
        return {"last_success": None, "note": "never materialised before this run"}
    tags = tags_of(last.asset_materialization)
    inputs_changed: dict[str, Any] = {}
    recorded_batches = metadata_value(last.asset_materialization, "input_batches")
    if recorded_batches is not None:  # a partitioned input: compare partition by partition
        current = {b.partition: b.data_version for b in latest_batch_versions(instance)}
        changed = sorted(p for p in set(recorded_batches) | set(current) if recorded_batches.get(p) != current.get(p))
        if changed:
            inputs_changed[LABELED_BATCH.to_user_string()] = {"changed_partitions": changed}
    for parent, old in input_data_versions(tags).items():
        if not (recorded_batches is not None and parent == LABELED_BATCH.to_user_string()):
            latest = _latest_before(instance, parent, run_end)
            new = data_version_of(latest.asset_materialization) if latest else None
            if new != old:
                inputs_changed[parent] = {"then": old, "now": new}
    old_config = _op_config(instance.get_run_by_id(last.run_id), asset)
    new_config = _op_config(run, asset)
    return {
        "last_success": {"run_id": last.run_id, "time": _time(last.timestamp), "data_version": data_version_of(last.asset_materialization)},
        "inputs_changed": inputs_changed,
        "code_version_changed": (
            None if code_version_of(last.asset_materialization) == code_version
            else {"then": code_version_of(last.asset_materialization), "now": code_version}
        ),
        "config_changed": {k: {"then": old_config.get(k), "now": new_config.get(k)} for k in sorted(set(old_config) | set(new_config)) if old_config.get(k) != new_config.get(k)},
        "new_batches": batches_since(instance, last.timestamp, run_end),
    }


def run_lineage(instance: dg.DagsterInstance, run_id: str, asset_graph: Any | None = None) -> dict[str, Any]:
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise LookupError(f"no run {run_id} in this instance")
    record = instance.get_run_record_by_id(run_id)
    planned: list[str] = []
    materialized: dict[str, dg.AssetMaterialization] = {}
    failed_steps: list[dict[str, Any]] = []
    failed_checks: list[dict[str, Any]] = []
    for log_entry in instance.all_logs(run_id, of_type=LINEAGE_EVENTS):
        event = log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED and event.asset_key:
            planned.append(event.asset_key.to_user_string())
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and event.asset_key:
            materialized[event.asset_key.to_user_string()] = event.step_materialization_data.materialization
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and not event.asset_check_evaluation_data.passed:
            evaluation = event.asset_check_evaluation_data
            failed_checks.append({
                "check": f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}",
                "severity": evaluation.severity.value,
                "metadata": metadata_to_json(dict(evaluation.metadata)),
            })
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data:
            error = event.step_failure_data.error
            inner = innermost_error(error) if error else None
            message = " ".join((inner.message if inner else "").split())
            if inner and message.startswith(f"{inner.cls_name}: "):
                message = message[len(inner.cls_name) + 2 :]
            if inner and message.startswith(f"dagster._core.errors.{inner.cls_name}: "):
                message = message[len(inner.cls_name) + 23 :]
            failed_steps.append({
                "step": event.step_key,
                "error_type": inner.cls_name if inner else None,
                "message": message[:500],
                "frames": our_frames(error) if error else [],
            })
    assets: list[dict[str, Any]] = []
    for asset in dict.fromkeys(planned):
        node_code = asset_graph.get(dg.AssetKey(asset)).code_version if asset_graph is not None else None
        done = materialized.get(asset)
        entry: dict[str, Any] = {"asset": asset, "materialized": done is not None}
        if done is not None:
            entry["data_version"] = data_version_of(done)
            entry["code_version"] = code_version_of(done)
            entry["inputs"] = input_data_versions(tags_of(done))
        else:
            entry["code_version"] = node_code
        # Not built, or built and then blocked by one of its checks: what changed since it last was built.
        if done is None or any(check["check"].startswith(f"{asset}:") for check in failed_checks):
            entry["since_last_success"] = diff_since_last_success(
                instance, asset, run, record.start_time if record else None, record.end_time if record else None, entry["code_version"]
            )
            # A batch refused by its checks landed in the window too, but the dataset left it out: say so.
            excluded = (metadata_value(done, "excluded_batches", {}) or {}) if done is not None else {}
            for batch in entry["since_last_success"].get("new_batches", []):
                if batch["batch"] in excluded:
                    batch["excluded"] = excluded[batch["batch"]]
        assets.append(entry)
    return {
        "run_id": run_id,
        "status": run.status.value,
        "partition": run.tags.get("dagster/partition"),
        "triggered_by": run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name") or "manual",
        "started": _time(record.start_time if record else None),
        "ended": _time(record.end_time if record else None),
        "failed_steps": failed_steps,
        "failed_checks": failed_checks,
        "assets": assets,
    }


def summary_lines(lineage: dict[str, Any]) -> list[str]:
    """The incident summary: what failed, why, and what changed since the last good run."""
    lines = [f"run {lineage['run_id']} {lineage['status']}" + (f" (partition {lineage['partition']})" if lineage["partition"] else "")
             + f", triggered by {lineage['triggered_by']}, {lineage['started']} -> {lineage['ended']}"]
    for step in lineage["failed_steps"]:
        lines.append(f"failed step {step['step']}: {step['error_type']}: {step['message']}")
        lines += [f"    at {frame}" for frame in step["frames"]]
    for check in lineage["failed_checks"]:
        details = ", ".join(f"{k}={json.dumps(v)}" for k, v in check["metadata"].items())[:300]
        lines.append(f"failed check {check['check']} ({check['severity']}): {details}")
    for asset in lineage["assets"]:
        if asset["materialized"]:
            inputs = ", ".join(f"{k}={v[:12]}" for k, v in asset["inputs"].items())
            lines.append(f"materialised {asset['asset']} {asset['data_version'][:12]} (code {asset['code_version']}{'; inputs ' + inputs if inputs else ''})")
        if "since_last_success" not in asset:
            continue
        diff = asset["since_last_success"]
        state = "blocked by its checks" if asset["materialized"] else "not materialised"
        if not diff["last_success"]:
            lines.append(f"{state} {asset['asset']}: {diff['note']}")
            continue
        last = diff["last_success"]
        lines.append(f"{state} {asset['asset']}; previous version {last['data_version'][:12]} in run {last['run_id'][:8]} at {last['time']}; since then:")
        for parent, change in diff["inputs_changed"].items():
            if "changed_partitions" in change:
                lines.append(f"    input {parent}: partitions {', '.join(change['changed_partitions'])} changed or new")
            else:
                lines.append(f"    input {parent}: {(change['then'] or '-')[:12]} -> {(change['now'] or '-')[:12]}")
        if diff["code_version_changed"]:
            lines.append(f"    code version: {diff['code_version_changed']['then']} -> {diff['code_version_changed']['now']}")
        for key, change in diff["config_changed"].items():
            lines.append(f"    config {key}: {change['then']} -> {change['now']}")
        for batch in diff["new_batches"]:
            extra = f", new classes {batch['new_classes']}" if batch["new_classes"] else ""
            reasons = f" {json.dumps(batch['quarantine_reasons'])}" if batch["quarantine_reasons"] else ""
            left_out = f"; left out of the dataset: {batch['excluded']}" if batch.get("excluded") else ""
            lines.append(f"    new batch {batch['batch']} {str(batch['data_version'])[:12]}: {batch['num_images']} images, "
                         f"{batch['num_quarantined']} quarantined{reasons}{extra}{left_out}")
        if not (diff["inputs_changed"] or diff["code_version_changed"] or diff["config_changed"] or diff["new_batches"]):
            lines.append("    nothing: same inputs, code and config (a transient fault?)")
    return lines


def asset_lineage(instance: dg.DagsterInstance, asset: str) -> dict[str, Any]:
    record = _latest_before(instance, asset, None)
    if record is None or record.asset_materialization is None:
        raise LookupError(f"{asset} has never been materialised")
    materialization = record.asset_materialization
    return {
        "asset": asset,
        "partition": materialization.partition,
        "run_id": record.run_id,
        "time": _time(record.timestamp),
        "data_version": data_version_of(materialization),
        "code_version": code_version_of(materialization),
        "inputs": input_data_versions(tags_of(materialization)),
        "metadata": {k: v for k, v in metadata_to_json(dict(materialization.metadata)).items() if k != "report"},
    }


# How far back to look for the dataset version a model was trained on (one record per dataset build).
DATASET_LOOKBACK = 500


def dataset_materialization(instance: dg.DagsterInstance, version: str | None) -> dg.AssetMaterialization | None:
    """The processed_images materialisation that produced `version` (the latest one, if rebuilt)."""
    if not version:
        return None
    records = instance.fetch_materializations(PROCESSED_IMAGES, limit=DATASET_LOOKBACK).records
    return next((r.asset_materialization for r in records if data_version_of(r.asset_materialization) == version), None)


def model_lineage(instance: dg.DagsterInstance, mlflow: Any, reference: str) -> dict[str, Any]:
    """NAME/VERSION or NAME@alias -> the Dagster runs, training config, dataset version and batches."""
    client = mlflow.client()
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in reference:
        name, number = reference.rsplit("/", 1)
        version = client.get_model_version(name, number)
    else:
        raise ValueError(f"expected NAME/VERSION or NAME@ALIAS, got {reference!r}")
    tags = version.tags
    training_run = instance.get_run_by_id(tags.get("training_dagster_run_id", ""))
    mlflow_run = client.get_run(version.run_id) if version.run_id else None
    batches = json.loads(tags.get("batches", "{}"))
    batch_details = []
    for batch, data_version in sorted(batches.items()):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=LABELED_BATCH, asset_partitions=[batch]), limit=100
        ).records
        match = next((r for r in records if data_version_of(r.asset_materialization) == data_version), None)
        batch_details.append({
            "batch": batch,
            "data_version": data_version,
            "num_images": metadata_value(match.asset_materialization, "num_images") if match else None,
            "num_quarantined": metadata_value(match.asset_materialization, "num_quarantined") if match else None,
            "ingest_run_id": match.run_id if match else None,
        })
    dataset = dataset_materialization(instance, tags.get("dataset_version"))
    return {
        "model": version.name,
        "version": int(version.version),
        "aliases": list(version.aliases),
        "weights_version": tags.get("weights_version"),
        "dataset_version": tags.get("dataset_version"),
        "training_dagster_run_id": tags.get("training_dagster_run_id"),
        "registered_by_dagster_run_id": tags.get("dagster_run_id"),
        "mlflow_run_id": version.run_id,
        "training_config": {**(mlflow_run.data.params if mlflow_run else {}), **_op_config(training_run, TRAINED_WEIGHTS.to_user_string())},
        "metrics": {"mAP50": tags.get("mAP50"), "mAP50-95": tags.get("mAP50-95")},
        "promotion_gate": tags.get("promotion_gate"),
        "promotion_reasons": tags.get("promotion_reasons"),
        "code_versions": json.loads(tags.get("code_versions", "{}")),
        "batches": batch_details,
        # What the dataset left out: batches a person retracted (reason, time) and batches refused.
        "retracted_batches": metadata_value(dataset, "retracted_batches", []),
        "excluded_batches": metadata_value(dataset, "excluded_batches", {}),
    }
