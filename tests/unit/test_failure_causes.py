"""Which failures are attempted again: the classification of a step's error and the backoff."""

import pytest
from dagster._utils.error import SerializableErrorInfo

from resources.run_recovery import RunRecovery
from yolo_assets.history.recovery import error_is_transient


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
