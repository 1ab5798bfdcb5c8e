"""In-process execution against the home's instance: what the daemon would do, for cron and CI users."""

import fcntl
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from yolo_assets.history.lineage import innermost_error
from yolo_assets.history.recovery import recover_dead_runs

# The daemon's own tags: runs launched here are deduplicated by run_key exactly like daemon runs.
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
LOG_LEVEL_VARIABLE = "YOLO_ASSETS_LOG_LEVEL"


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    description: str
    success: bool
    failure: str = ""


def print_outcomes(outcomes: Sequence[RunOutcome]) -> bool:
    """One line per run; True when every run succeeded."""
    for outcome in outcomes:
        state = "SUCCESS" if outcome.success else f"FAILURE ({outcome.failure})"
        print(f"run {outcome.run_id} {outcome.description}: {state}")
    return all(outcome.success for outcome in outcomes)


def with_console_logger(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config as this process launches it: console verbosity from YOLO_ASSETS_LOG_LEVEL (the
    run's full event log is in the instance either way)."""
    console = {"config": {"log_level": dg.EnvVar(LOG_LEVEL_VARIABLE).get_value("INFO")}}
    return {"loggers": {"console": console}, **run_config}


def execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    asset_keys: Sequence[dg.AssetKey],
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
    description: str = "",
) -> RunOutcome:
    """Materialise `asset_keys` (and their checks) in this process, recorded in `instance`."""
    job = defs.resolve_implicit_global_asset_job_def()
    config = with_console_logger(run_config or {})
    result = job.execute_in_process(
        run_config=config,
        instance=instance,
        partition_key=partition_key,
        tags=dict(tags or {}),
        asset_selection=list(asset_keys),
        raise_on_error=False,
    )
    failure = ""
    if not result.success:
        failure = "; ".join(
            f"{event.step_key}: {failure_text(event.step_failure_data.error)}"
            for event in result.all_events
            if event.is_step_failure and event.step_failure_data
        ) or "run failed"
        alert_failure(defs, instance, result.run_id)
    return RunOutcome(result.run_id, description, result.success, failure)


def failure_text(error: Any) -> str:
    """A step's error in one line, with its innermost cause when it was wrapped ("Exceeded max_retries")."""
    if error is None:
        return "failed"
    text = " ".join(error.message.split())
    inner = innermost_error(error)
    if inner is not error:
        cause = " ".join(inner.message.split())
        # Long causes (a URL, a chained message) end with the root of the matter: keep both ends.
        text += f" (cause: {cause if len(cause) <= 400 else cause[:200] + ' ... ' + cause[-200:]})"
    return text


@contextmanager
def resolved_resource(defs: dg.Definitions, key: str) -> Iterator[Any]:
    """A resource for use outside a run (CLI, tests), its EnvVar settings resolved and its nested
    resources (S3) set up as Dagster does when a run starts, and torn down afterwards."""
    resource = (defs.resources or {})[key]
    assert isinstance(resource, dg.ConfigurableResource), f"{key} is not a configurable resource"
    with resource.process_config_and_initialize_cm() as value:
        yield value


def alert_failure(defs: dg.Definitions, instance: dg.DagsterInstance, run_id: str) -> None:
    """What run_failure_alert does under the daemon, for runs executed in this process."""
    from sensors.failure_alerts import send_failure_alert

    if "alert_notifier" in (defs.resources or {}):
        with resolved_resource(defs, "alert_notifier") as notifier, resolved_resource(defs, "run_recovery") as recovery:
            send_failure_alert(instance, run_id, defs.resolve_asset_graph(), notifier, logging.getLogger("yolo_assets.alerts"), recovery)


# The daemon writes a heartbeat every 30 s; older than two intervals, it is gone.
DAEMON_LIVE_SECONDS = 60
SENSOR_DAEMON = "SENSOR"


def live_daemon_heartbeat_age(instance: dg.DagsterInstance) -> float | None:
    """Seconds since a dagster-daemon evaluating this instance's sensors last reported, None when none is alive."""
    heartbeat = instance.get_daemon_heartbeats().get(SENSOR_DAEMON)
    if heartbeat is None:
        return None
    age = time.time() - heartbeat.timestamp
    return age if age <= DAEMON_LIVE_SECONDS else None


class DaemonIsScheduling(Exception):
    """A dagster-daemon evaluates this instance's sensors: it alone decides which runs they start."""

    def __init__(self, age: float) -> None:
        super().__init__(
            f"a dagster-daemon is running on this instance (last heartbeat {age:.0f} s ago): sensors and "
            "automation are its job, so tick starts nothing; stop the daemon to tick by hand"
        )


@contextmanager
def tick_lock(home: Path) -> Iterator[None]:
    """One tick at a time per home: two ticks evaluating the same sensors would both start a run for the
    same batch between one's run_key check and its run being recorded."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "tick.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_no_live_daemon(instance: dg.DagsterInstance) -> None:
    age = live_daemon_heartbeat_age(instance)
    if age is not None:
        raise DaemonIsScheduling(age)


def _cursor_file(home: Path, sensor_name: str) -> Path:
    return home / "sensor-cursors" / f"{sensor_name}.json"


def run_key_used(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}))
    return any(run.tags.get(SENSOR_NAME_TAG) == sensor_name for run in runs)


# Each round can only request assets whose upstream changed in the round before; the chain is short.
MAX_AUTOMATION_ROUNDS = 4


def evaluate_automation(
    defs: dg.Definitions, instance: dg.DagsterInstance, home: Path, sensor: dg.AutomationConditionSensorDefinition
) -> list[dg.AssetKey]:
    """One evaluation of the AutomationConditions of `sensor`'s assets (what that sensor does under the
    daemon), its cursor kept in the home."""
    cursor_file = _cursor_file(home, sensor.name)
    # The cursor class is not exported by Dagster; `result.cursor` is what it wrote last time.
    cursor: Any = dg.deserialize_value(cursor_file.read_text()) if cursor_file.exists() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # raised inside Dagster's own evaluator
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=sensor.asset_selection, cursor=cursor)
    cursor_file.parent.mkdir(parents=True, exist_ok=True)
    cursor_file.write_text(dg.serialize_value(result.cursor))
    return sorted(key for key in defs.resolve_asset_graph().get_all_asset_keys() if result.get_num_requested(key))


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    home: Path,
    run_config: Mapping[str, Any] | None = None,
    automation: bool = True,
) -> list[RunOutcome]:
    """Evaluate every sensor once and execute the runs it requests, then let declarative automation
    request what the new versions call for (retrain, evaluate, register), as the daemon would.

    One scheduler per instance: ticks wait for each other (a lock in the home), and a tick refuses to
    start anything while a dagster-daemon is alive on the instance (checked again before each run, so
    a daemon started mid-tick takes over), raising `DaemonIsScheduling`.
    """
    with tick_lock(home):
        return _tick(defs, instance, home, run_config, automation)


def _tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    home: Path,
    run_config: Mapping[str, Any] | None,
    automation: bool,
) -> list[RunOutcome]:
    outcomes: list[RunOutcome] = []
    ensure_no_live_daemon(instance)
    recover_dead_runs(instance)
    for sensor in defs.sensors or []:
        if isinstance(sensor, (dg.AutomationConditionSensorDefinition, dg.RunStatusSensorDefinition)):
            continue  # automation runs below; failure alerts are sent as runs finish
        cursor_file = _cursor_file(home, sensor.name)
        cursor = json.loads(cursor_file.read_text())["cursor"] if cursor_file.exists() else None
        # The instance_ref lets Dagster validate partitions added in this same tick; the instance
        # itself spares it opening a second one (~0.1 s of storage set-up per tick).
        with dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, sensor_name=sensor.name, resources=defs.resources
        ) as context:
            data = sensor.evaluate_tick(context)
        for partitions_request in data.dynamic_partitions_requests or []:
            if isinstance(partitions_request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(partitions_request.partitions_def_name, list(partitions_request.partition_keys))
        for request in data.run_requests or []:
            ensure_no_live_daemon(instance)
            if request.run_key and run_key_used(instance, sensor.name, request.run_key):
                continue
            if not request.asset_selection:
                raise ValueError(f"sensor {sensor.name} must name the assets of each run it requests")
            tags = {**request.tags, SENSOR_NAME_TAG: sensor.name}
            if request.run_key:
                tags[RUN_KEY_TAG] = request.run_key
            outcomes.append(
                execute(
                    defs,
                    instance,
                    request.asset_selection,
                    partition_key=request.partition_key,
                    tags=tags,
                    run_config=request.run_config or run_config,  # a retry carries the failed run's own config
                    description=sensor.name + (f" partition={request.partition_key}" if request.partition_key else ""),
                )
            )
        cursor_file.parent.mkdir(parents=True, exist_ok=True)
        cursor_file.write_text(json.dumps({"cursor": data.cursor}))
    automation_sensors = [sensor for sensor in defs.sensors or [] if isinstance(sensor, dg.AutomationConditionSensorDefinition)]
    for _ in range(MAX_AUTOMATION_ROUNDS if automation else 0):
        round_outcomes = []
        for sensor in automation_sensors:
            ensure_no_live_daemon(instance)
            requested = evaluate_automation(defs, instance, home, sensor)
            if requested:
                names = ", ".join(key.to_user_string() for key in requested)
                round_outcomes.append(
                    execute(defs, instance, requested, tags={SENSOR_NAME_TAG: sensor.name}, run_config=run_config,
                            description=f"{sensor.name}: {names}")
                )
        if not round_outcomes:
            break
        outcomes.extend(round_outcomes)
    return outcomes
