"""Which failed runs are attempted again, and when: a run that failed on a transient cause (a store,
database or tracking server that did not answer, a step process killed) is re-requested with backoff by
`transient_failure_retry` (sensors/retries.py); a deterministic failure (refused data, a failed blocking
check, a bad config) never is. Read from the run's events in the Dagster instance, for the sensor, the
failure alert and `yolo-assets status` alike.
"""

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from resources.run_recovery import RunRecovery
from yolo_assets.core.processes import alive

ATTEMPT_TAG = "yolo_assets/attempt"
RETRY_OF_TAG = "yolo_assets/retry_of"
FIRST_ATTEMPT_TAG = "yolo_assets/first_attempt"
RETRY_PLAN_TAG = "yolo_assets/retry"
# Dagster's own run retries (Helm values: for a run worker that crashed) mark the runs they will retry.
DAGSTER_WILL_RETRY_TAG = "dagster/will_retry"

# Raised on purpose by our code or Dagster for what another attempt cannot fix.
DETERMINISTIC_ERRORS = {
    "Failure", "DagsterAssetCheckFailedError", "DagsterInvalidConfigError", "DagsterTypeCheckDidNotPass",
    "DagsterInvalidDefinitionError", "DagsterInvalidInvocationError", "DagsterUnknownPartitionError",
}
TRANSIENT_ERRORS = {
    "ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError",
    "TimeoutError", "timeout", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ProxyConnectionError", "NewConnectionError", "MaxRetryError", "ProtocolError", "RemoteDisconnected", "ReadTimeout",
    "ConnectTimeout", "OperationalError", "InterfaceError", "DagsterExecutionInterruptedError",
}
TRANSIENT_MESSAGE = re.compile(
    r"connection refused|connection reset|connection aborted|timed out|max retries exceeded|temporarily unavailable"
    r"|service unavailable|slow ?down|throttl|too many requests|bad gateway|gateway time-?out|internal ?error"
    r"|server closed the connection|could not connect|broken pipe|status code 50[0234]|\b50[234]\b",
    re.IGNORECASE,
)


def _chain(error: Any) -> Iterator[Any]:
    seen = 0
    while error is not None and seen < 20:
        yield error
        error = getattr(error, "cause", None) or getattr(error, "context", None)
        seen += 1


def error_is_transient(error: Any) -> bool:
    """A step's error (Dagster's SerializableErrorInfo) whose cause another attempt may not meet."""
    chain = list(_chain(error))
    if any(e.cls_name in DETERMINISTIC_ERRORS for e in chain):
        return False
    return any(e.cls_name in TRANSIENT_ERRORS or TRANSIENT_MESSAGE.search(e.message or "") for e in chain)


@dataclass(frozen=True)
class FailureCause:
    transient: bool
    summary: str
    """One line: the innermost error of the first failed step, or why the run itself ended."""


def failure_cause(instance: dg.DagsterInstance, run_id: str) -> FailureCause:
    steps = [
        event.dagster_event.step_failure_data.error
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if event.dagster_event and event.dagster_event.step_failure_data
    ]
    if steps:
        innermost = list(_chain(steps[0]))[-1] if steps[0] is not None else None
        summary = " ".join(f"{innermost.cls_name}: {innermost.message}".split())[:300] if innermost else "a step failed"
        return FailureCause(all(error is not None and error_is_transient(error) for error in steps), summary)
    # No step failed: the run process died (killed, out of memory, a lost node) or could not start.
    failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    message = " ".join((failures[-1].message if failures else "").split())[:300]
    return FailureCause(True, message or "the run ended without a step failure (its process was killed or lost)")


@dataclass(frozen=True)
class RetryPlan:
    run: dg.DagsterRun
    cause: FailureCause
    attempt: int
    """Which attempt the failed run was (1 = the first run of this work)."""
    max_attempts: int
    next_at: float | None
    """When the next attempt may start; None when there is none (deterministic, or given up)."""

    @property
    def gave_up(self) -> bool:
        return self.cause.transient and self.attempt >= self.max_attempts

    def describe(self) -> str:
        if not self.cause.transient:
            return f"not retried (a deterministic failure): {self.cause.summary}"
        if self.gave_up or self.next_at is None:
            return f"gave up after {self.attempt} attempts: {self.cause.summary}"
        when = datetime.fromtimestamp(self.next_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"will retry at {when} (attempt {self.attempt + 1} of {self.max_attempts}, once its services answer): {self.cause.summary}"


def retry_plan(instance: dg.DagsterInstance, run: dg.DagsterRun, ended: float, recovery: RunRecovery) -> RetryPlan:
    cause = failure_cause(instance, run.run_id)
    attempt = int(run.tags.get(ATTEMPT_TAG, "1"))
    next_at = ended + recovery.delay_after(attempt) if cause.transient and attempt < recovery.max_attempts else None
    return RetryPlan(run, cause, attempt, recovery.max_attempts, next_at)


def retry_tags(run: dg.DagsterRun, attempt: int) -> dict[str, str]:
    """The next attempt's tags: the work's own tags (not Dagster's), and the chain of attempts."""
    own = {key: value for key, value in run.tags.items() if not key.startswith("dagster/") and key != RETRY_PLAN_TAG}
    return {**own, ATTEMPT_TAG: str(attempt + 1), RETRY_OF_TAG: run.run_id, FIRST_ATTEMPT_TAG: run.tags.get(FIRST_ATTEMPT_TAG, run.run_id)}


def retry_run_key(run_id: str) -> str:
    return f"retry@{run_id}"


def superseded(instance: dg.DagsterInstance, run: dg.DagsterRun, ended: float) -> bool:
    """Every asset the run was to materialise has been materialised since (a later run did the work)."""
    keys = list(run.asset_selection or ())
    partition = run.tags.get("dagster/partition")
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None, after_timestamp=ended), limit=1
        ).records
        if not records:
            return False
    return bool(keys)


SUPERSEDED = "not retried: a later run has done its work"


def pending_retries(
    instance: dg.DagsterInstance, recovery: RunRecovery, now: float | None = None,
    on_superseded: Callable[[dg.DagsterRun], None] | None = None,
) -> list[RetryPlan]:
    """Failed runs within the window that will be attempted again (oldest first): transient, attempts
    left, no attempt after them yet, and not superseded by a later run that did the work (those are
    handed to `on_superseded`)."""
    now = time.time() if now is None else now
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(now - recovery.window_s, UTC)),
        limit=200,
    )
    failed = [record for record in reversed(records)
              if record.dagster_run.tags.get(DAGSTER_WILL_RETRY_TAG) != "true" and record.dagster_run.asset_selection]
    # (Dagster retries the others itself, or they are not asset runs.) One query for the attempts made.
    ids = [record.dagster_run.run_id for record in failed]
    retried = {run.tags[RETRY_OF_TAG] for run in instance.get_runs(dg.RunsFilter(tags={RETRY_OF_TAG: ids}))} if ids else set()
    plans = []
    for record in failed:
        run, ended = record.dagster_run, record.end_time or record.update_timestamp.timestamp()
        if run.run_id in retried:
            continue
        plan = retry_plan(instance, run, ended, recovery)
        if plan.next_at is None:
            continue
        if not superseded(instance, run, ended):
            plans.append(plan)
        elif on_superseded is not None:
            on_superseded(run)
    return plans


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark runs whose process on this machine died (SIGKILL, OOM, reboot) as failed and free their
    concurrency-pool slots, so a re-run is not left waiting for a `gpu` slot nobody will release.

    What the daemon's run monitoring does for launchers that can check worker health, for the
    embedded default where runs execute in local processes.
    """
    recovered = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        start = next(
            (e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START) if e.dagster_event),
            None,
        )
        pid = start.dagster_event.pid if start and start.dagster_event else None
        if not pid or alive(pid):
            continue
        instance.report_run_failed(run)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered
