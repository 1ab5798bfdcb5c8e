"""Failed runs explain themselves: lineage from the event log, and an alert to a real webhook."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import dagster as dg
import exports
import pytest
from helpers import Home

from sensors.failure_alerts import run_failure_alert
from yolo_assets.ops.cli import main

SECRET_TOKEN = "T0KEN-s3cr3t-hook-9f2c"
FAKE_AWS_SECRET = "fake-aws-secret-6b1d0e"


class Receiver:
    """A real HTTP webhook receiver on 127.0.0.1 that refuses the first `fail_first` posts."""

    def __init__(self, fail_first: int = 1) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.attempts <= fail_first:
                    self.send_response(503)
                else:
                    receiver.payloads.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{SECRET_TOKEN}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()


@pytest.fixture
def failing_home(home: Home, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A good batch, then a batch with an unknown class under new_class_policy=reject: its run fails."""
    monkeypatch.setenv("YOLO_ASSETS_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_AWS_SECRET)
    monkeypatch.setenv("YOLO_ASSETS_NEW_CLASS_POLICY", "reject")
    home.redefine()
    exports.mark_complete(exports.label_studio(home.landing / "batch_good", 4, seed=41))
    outcomes = home.tick()
    assert outcomes and all(o.success for o in outcomes)
    home.land("batch_dents", 4, 42, classes=("scratch", "dent"))
    [failed] = home.tick()  # the dataset stays as it is: nothing new was accepted
    assert not failed.success
    home.outcomes["failed"] = [failed]
    return home


def failed_run_id(home: Home) -> str:
    return home.outcomes["failed"][0].run_id


def test_lineage_of_a_failed_run_names_the_cause_and_what_changed(failing_home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = failed_run_id(failing_home)
    assert main(["lineage", run_id, "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert lineage["status"] == "FAILURE" and lineage["partition"] == "batch_dents"
    assert lineage["failed_checks"][0]["check"] == "labeled_batch:class_registry"
    assert lineage["failed_checks"][0]["metadata"]["new_classes"] == ["dent"]
    assert [s["step"] for s in lineage["failed_steps"]] == ["labeled_batch"]
    assert lineage["failed_steps"][0]["error_type"] == "DagsterAssetCheckFailedError"
    # The batch's run holds only its partition (the dataset is built by the next run, without it); the
    # refused batch is never scored by the live models.
    assert [(a["asset"], a["materialized"]) for a in lineage["assets"]] == [("fresh_batch_evaluation", False), ("labeled_batch", True)]
    # Blocked by its checks: compared with the same partition's previous version (none), not batch_good's.
    assert lineage["assets"][0]["since_last_success"]["last_success"] is None
    assert main(["lineage", run_id]) == 0
    text = capsys.readouterr().out
    assert "failed check labeled_batch:class_registry" in text and 'new_classes=["dent"]' in text


def test_lineage_of_a_failed_dataset_run_names_what_changed_since_its_last_success(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    from resources.dataset_policy import DatasetPolicy

    home.redefine(dataset_policy=DatasetPolicy(honour_export_split=True))
    home.land("batch_good", 6, 1)
    assert all(o.success for o in home.tick())
    good_version = home.data_version("processed_images")
    leaking = home.land("batch_leak", 6, 2, classes=("scratch", "dent"))
    jpeg, png = exports.same_picture_twice()
    for split, name, data in (("train", "copy_a.jpg", jpeg), ("val", "copy_b.png", png)):  # one picture in both export splits
        (leaking / "images" / split).mkdir()
        (leaking / "images" / split / name).write_bytes(data)
    batch_run, dataset_run = home.tick()
    assert batch_run.success and not dataset_run.success
    assert main(["lineage", dataset_run.run_id, "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert lineage["failed_checks"][0]["check"] == "processed_images:split_leakage"
    [dataset] = lineage["assets"]
    diff = dataset["since_last_success"]
    assert dataset["asset"] == "processed_images" and diff["last_success"]["data_version"] == good_version
    assert diff["inputs_changed"]["labeled_batch"] == {"changed_partitions": ["batch_leak"]}
    assert diff["new_batches"][-1]["batch"] == "batch_leak" and diff["new_batches"][-1]["new_classes"] == ["dent"]
    assert main(["lineage", dataset_run.run_id]) == 0
    text = capsys.readouterr().out
    assert "new batch batch_leak" in text and "new classes ['dent']" in text


def test_a_failed_run_alerts_the_webhook_with_retries_and_no_secret(failing_home: Home, receiver: Receiver) -> None:
    assert receiver.attempts == 2 and len(receiver.payloads) == 1  # refused once, delivered on the retry
    payload = receiver.payloads[0]
    assert payload["run_id"] == failed_run_id(failing_home)
    assert payload["failed_checks"] == ["labeled_batch:class_registry"]
    assert payload["run_url"].endswith(f"/runs/{payload['run_id']}")
    assert "class_registry" in payload["text"] and payload["partition"] == "batch_dents"
    assert any('new_classes=["dent"]' in line for line in payload["lineage_summary"])
    assert SECRET_TOKEN not in json.dumps(payload)


def test_run_failure_sensor_posts_the_same_alert(failing_home: Home, receiver: Receiver) -> None:
    run = failing_home.instance.get_run_by_id(failed_run_id(failing_home))
    failure = next(e for e in failing_home.instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE)
    with dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_instance=failing_home.instance, dagster_run=run,
        dagster_event=failure.dagster_event,
        resources={key: failing_home.defs.resources[key] for key in ("alert_notifier", "run_recovery")},
    ) as context:
        run_failure_alert(context.for_run_failure())
    assert len(receiver.payloads) == 2 and receiver.payloads[1]["run_id"] == run.run_id
    # A refused batch is never attempted again, and the alert says so.
    assert receiver.payloads[1]["retry"].startswith("not retried (a deterministic failure)")


def test_webhook_down_never_fails_and_without_url_the_alert_is_logged(home: Home, caplog: pytest.LogCaptureFixture) -> None:
    from resources.alerts import AlertNotifier

    log = dg.get_dagster_logger()
    unreachable = AlertNotifier(webhook_url=f"http://127.0.0.1:9/hooks/{SECRET_TOKEN}", attempts=2, backoff_seconds=0.01)
    assert unreachable.send({"text": "boom"}, log) is False
    assert AlertNotifier().send({"text": "boom without webhook"}, log) is False
    assert "boom without webhook" in caplog.text
    assert SECRET_TOKEN not in caplog.text


def test_secrets_appear_nowhere_in_the_event_log_or_metadata(failing_home: Home) -> None:
    for run in failing_home.instance.get_runs():
        logged = " ".join(str(entry) for entry in failing_home.instance.all_logs(run.run_id))
        assert SECRET_TOKEN not in logged and FAKE_AWS_SECRET not in logged
        assert SECRET_TOKEN not in json.dumps(run.run_config) and SECRET_TOKEN not in json.dumps(run.tags)
    for asset in ("labeled_batch", "processed_images"):
        metadata = json.dumps(failing_home.metadata(asset, "batch_good" if asset == "labeled_batch" else None), default=str)
        assert SECRET_TOKEN not in metadata and FAKE_AWS_SECRET not in metadata


def test_asset_lineage_and_cli_errors(home: Home, land_copy, capsys: pytest.CaptureFixture[str]) -> None:
    land_copy("batch_a", 4, 1)
    home.tick()
    assert main(["lineage", "--asset", "processed_images", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data_version"] == home.data_version("processed_images")
    assert result["metadata"]["input_batches"] == {"batch_a": home.data_version("labeled_batch", "batch_a")}
    assert main(["lineage", "no-such-run"]) == 2
    assert main(["lineage", "--asset", "nope"]) == 2


def test_a_broken_training_config_fails_at_once_and_lineage_shows_our_frames(home: Home, land_copy, capsys: pytest.CaptureFixture[str]) -> None:
    land_copy("batch_a", 6, 1)
    home.tick()
    outcome = home.materialize("trained_weights", run_config={"ops": {"trained_weights": {"config": {"model": "yolov8q.yaml"}}}})
    assert not outcome.success and "yolov8q.yaml" in outcome.failure
    restarts = home.instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert restarts == []  # a config error is deterministic: no retry
    assert main(["lineage", outcome.run_id, "--json"]) == 0
    [step] = json.loads(capsys.readouterr().out)["failed_steps"]
    assert step["step"] == "trained_weights" and "yolov8q.yaml" in step["message"]
    assert any("yolo_assets/assets/training.py" in frame for frame in step["frames"])


def test_model_source_check_accepts_scaled_architecture_names() -> None:
    from yolo_assets.assets.training import check_model_source

    check_model_source("yolov8n.yaml")  # no file of that name: ultralytics derives scale n from yolov8.yaml
    with pytest.raises(dg.Failure):
        check_model_source("missing-weights.pt")
