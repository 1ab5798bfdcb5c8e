"""Which failures are attempted again: the classification of a step's error and the backoff."""

import dagster as dg
import pytest
from dagster._utils.error import SerializableErrorInfo

from resources.run_recovery import RunRecovery
from yolo_assets.history.recovery import FailureCause, RetryPlan, error_is_transient


def error(cls_name: str, message: str, cause: SerializableErrorInfo | None = None) -> SerializableErrorInfo:
    return SerializableErrorInfo(message=message, stack=[], cls_name=cls_name, cause=cause)


RETRIES_EXCEEDED = "dagster._core.errors.DagsterExecutionStepExecutionError: Exceeded max_retries of 3"


@pytest.mark.parametrize("inner", [
    error("EndpointConnectionError", 'Could not connect to the endpoint URL: "http://127.0.0.1:8333/bucket"'),
    error("MlflowException", "API request to http://127.0.0.1:5000/api/2.0/mlflow/registered-models/get failed with exception "
                             "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url"),
    error("OperationalError", "(psycopg2.OperationalError) server closed the connection unexpectedly"),
    error("ClientError", "An error occurred (SlowDown) when calling the PutObject operation: Please reduce your request rate."),
    error("ClientError", "An error occurred (503) when calling the HeadObject operation: Service Unavailable"),
    error("ReadTimeoutError", 'Read timeout on endpoint URL: "http://127.0.0.1:8333/"'),
])
def test_an_outage_is_transient_however_deep_its_cause(inner: SerializableErrorInfo) -> None:
    assert error_is_transient(error("DagsterExecutionStepExecutionError", RETRIES_EXCEEDED, cause=inner))


@pytest.mark.parametrize("failure", [
    error("Failure", "batch line_a rejected: new classes ['rust'] not in the registry"),
    error("DagsterAssetCheckFailedError", "1 blocking check failed: split_leakage"),
    error("DagsterInvalidConfigError", "Error in config for op processed_images"),
    # A deliberate refusal stays deterministic even when its text mentions a timeout.
    error("Failure", "the labeling tool timed out on this batch: relabel it", cause=error("TimeoutError", "timed out")),
    error("ValueError", "could not convert string to float: 'big'"),
    error("KeyError", "'dataset_version'"),
])
def test_a_refusal_or_a_bug_is_not_transient(failure: SerializableErrorInfo) -> None:
    assert not error_is_transient(failure)


def test_the_backoff_doubles_up_to_its_ceiling() -> None:
    recovery = RunRecovery(first_delay_s=60, max_delay_s=600)
    assert [recovery.delay_after(attempt) for attempt in range(1, 7)] == [60, 120, 240, 480, 600, 600]


def test_the_alert_says_when_it_will_retry_that_it_gave_up_or_that_it_will_not_retry() -> None:
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id="0f1e2d3c-0000-4000-8000-000000000000")
    outage = FailureCause(transient=True, summary="EndpointConnectionError: Could not connect")
    waiting = RetryPlan(run, outage, attempt=1, max_attempts=3, next_at=90.0)
    assert not waiting.gave_up
    assert waiting.describe() == ("will retry at 1970-01-01 00:01:30 UTC (attempt 2 of 3, once its services answer): "
                                  "EndpointConnectionError: Could not connect")
    last = RetryPlan(run, outage, attempt=3, max_attempts=3, next_at=None)
    assert last.gave_up and last.describe() == "gave up after 3 attempts: EndpointConnectionError: Could not connect"
    refused = RetryPlan(run, FailureCause(transient=False, summary="Failure: batch refused"), attempt=1, max_attempts=3, next_at=None)
    assert not refused.gave_up and refused.describe() == "not retried (a deterministic failure): Failure: batch refused"
