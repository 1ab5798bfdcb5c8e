"""A failed run explains itself in the Dagster UI: the incident summary that `yolo-assets lineage RUN`
prints is an event of the failed run (its page), and a failed blocking check says why on the asset's
page. Read back through a real dagster-webserver's GraphQL API, as the UI reads it."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import exports
import pytest
import requests
from helpers import REPO, Home

from resources.dataset_policy import DatasetPolicy
from sensors.failure_alerts import INCIDENT_HEADING
from yolo_assets.ops.services import BIN, free_ports, http_status, spawn, stop_group, wait_until

RUN_EVENTS = """
query RunEvents($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}"""
CHECK_EXECUTIONS = """
query CheckExecutions($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 5) {
    runId
    evaluation { success description }
  }
}"""


class Webserver:
    """dagster-webserver on the home's instance, on a free 127.0.0.1 port."""

    def __init__(self, home: Home, log: Path) -> None:
        self.port = free_ports(1)[0]
        command = [str(BIN / "dagster-webserver"), "-m", "yolo_assets.definitions", "-h", "127.0.0.1", "-p", str(self.port)]
        self.pid = spawn(command, log, dict(os.environ), REPO)  # the home's DAGSTER_HOME and settings
        wait_until(lambda: http_status(f"http://127.0.0.1:{self.port}/server_info") == 200, self.pid, 180, "dagster-webserver", log)

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        response = requests.post(f"http://127.0.0.1:{self.port}/graphql", json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def incident(self, run_id: str) -> str:
        connection = self.query(RUN_EVENTS, runId=run_id)["logsForRun"]
        assert connection["__typename"] == "EventConnection", connection
        [message] = [e["message"] for e in connection["events"] if e["__typename"] == "EngineEvent" and e["message"].startswith(INCIDENT_HEADING)]
        return message

    def check_description(self, asset: str, check: str, run_id: str) -> str:
        executions = self.query(CHECK_EXECUTIONS, assetKey={"path": [asset]}, checkName=check)["assetCheckExecutions"]
        [evaluation] = [e["evaluation"] for e in executions if e["runId"] == run_id]
        assert evaluation["success"] is False
        return evaluation["description"]


@pytest.fixture
def webserver(home: Home, tmp_path: Path) -> Iterator[Any]:
    started: list[Webserver] = []

    def start() -> Webserver:
        started.append(Webserver(home, tmp_path / "webserver.log"))
        return started[-1]

    yield start
    for server in started:
        stop_group(server.pid)


def test_a_refused_batch_a_leaking_dataset_and_a_training_error_explain_themselves_on_their_run_pages(
    home: Home, webserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refused batch: a class the dataset has never seen, under new_class_policy=reject.
    home.land("batch_good", 6, 1)
    assert all(o.success for o in home.tick())
    home.redefine(dataset_policy=DatasetPolicy(new_class_policy="reject"))
    home.land("batch_dents", 4, 42, classes=("scratch", "dent"))
    [refused] = home.tick()
    assert not refused.success
    # A dataset blocked by split_leakage: the same picture in the export's train and val splits.
    home.redefine(dataset_policy=DatasetPolicy(honour_export_split=True))
    leaking = home.land("batch_leak", 6, 2)
    jpeg, png = exports.same_picture_twice()
    for split, name, data in (("train", "copy_a.jpg", jpeg), ("val", "copy_b.png", png)):
        (leaking / "images" / split).mkdir()
        (leaking / "images" / split / name).write_bytes(data)
    outcomes = home.tick()
    [leaked] = [o for o in outcomes if not o.success]
    # A training error: a model that does not exist.
    broken = home.materialize("trained_weights", run_config={"ops": {"trained_weights": {"config": {"model": "yolov8q.yaml"}}}})
    assert not broken.success

    ui = webserver()
    incident = ui.incident(refused.run_id)
    assert f"run {refused.run_id} FAILURE (partition batch_dents)" in incident
    assert "failed check labeled_batch:class_registry" in incident and 'new_classes=["dent"]' in incident
    assert "not retried (a deterministic failure)" in incident
    description = ui.check_description("labeled_batch", "class_registry", refused.run_id)
    assert "dent" in description and "new_class_policy is reject" in description and "YOLO_ASSETS_NEW_CLASS_POLICY=extend" in description

    incident = ui.incident(leaked.run_id)
    assert "failed check processed_images:split_leakage" in incident
    # What changed since the last good dataset: two new batches, the refused one left out.
    assert "input labeled_batch: partitions batch_dents, batch_leak changed or new" in incident
    assert "new batch batch_leak" in incident
    assert "new classes ['dent']; left out of the dataset: class_registry failed" in incident
    assert "sit in more than one split" in ui.check_description("processed_images", "split_leakage", leaked.run_id)

    incident = ui.incident(broken.run_id)
    assert "failed step trained_weights:" in incident and "yolov8q.yaml" in incident
    assert "yolo_assets/assets/training.py" in incident  # the frame of our code that raised
