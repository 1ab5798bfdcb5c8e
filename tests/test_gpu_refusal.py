"""A step that asked for a GPU never trains on the CPU. Its own module: test_kubernetes.py's fixtures
put the cluster's ConfigMap (S3 settings) in the environment, which a home here must not see."""

import dagster as dg
import pytest
from helpers import Home

from resources.kubernetes import EXECUTOR_VARIABLE


def test_a_gpu_step_that_sees_no_gpu_fails_at_once_instead_of_training_on_the_cpu(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no GPU: the training step, run as in its GPU pod, refuses clearly and is not retried."""
    home.land("batch_a", 24, 71)  # enough images for a val split
    assert all(o.success for o in home.tick())
    monkeypatch.setenv(EXECUTOR_VARIABLE, "k8s")  # what the step pod's environment says (its executor was chosen at load)
    failed = home.materialize("trained_weights")
    assert not failed.success
    assert "asked for 1 GPU(s) in its pod but CUDA is not usable here" in failed.failure and "driver" in failed.failure, failed.failure
    assert home.instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert home.instance.get_latest_materialization_event(dg.AssetKey("trained_weights")) is None
    monkeypatch.setenv("YOLO_ASSETS_K8S_FRESH_BATCH_EVALUATION_GPUS", "1")  # an operator gave the scoring a GPU
    scoring = home.materialize("fresh_batch_evaluation", partition="batch_a")
    assert not scoring.success and "asked for 1 GPU(s) in its pod but CUDA is not usable here" in scoring.failure, scoring.failure
    monkeypatch.delenv(EXECUTOR_VARIABLE)
    config = {"ops": {"trained_weights": {"config": {"device": "0", "epochs": 1}}}}  # an explicit CUDA device: the same
    assert "asked for device '0' but CUDA is not usable" in home.materialize("trained_weights", run_config=config).failure

