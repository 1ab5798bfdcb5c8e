"""Model path through the real assets: ultralytics training, MLflow tracking and registry, the gate.

One scenario is built once for the module (training is the expensive part) and each test asserts
one property of it:
  v1: 1 epoch on batch_a, the first model, promoted over a floor of 0
  v2: a good detector (the session's `good_detector`) fine-tuned for 2 epochs on batch_a + batch_b
      (automation after a new batch): a better model, promoted
  a batch below min_new_images: ingested, retrain_gate fails, no training
  v3: 1 epoch from scratch on the same data: a worse model, refused (alias challenger)
"""

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd
import pytest
from helpers import TINY_TRAINING, Home

from resources.model_policy import ModelPolicy
from yolo_assets.assets.materializations import data_version_of
from yolo_assets.core.home import dagster_home
from yolo_assets.detector.checkpoint import checkpoint_class_names
from yolo_assets.detector.serving import DETECTION_COLUMNS
from yolo_assets.detector.setup import configure_ultralytics
from yolo_assets.ops.cli import main

pytestmark = pytest.mark.slow

FAKE_SECRET = "fake-secret-0c9a7d51"
SMALL = {**TINY_TRAINING, "imgsz": 96, "batch": 16, "plots": True}  # this module keeps ultralytics' plots tested
# Two epochs from a well-trained detector (conftest's `good_detector`; its model path is added in the
# scenario): a model clearly better than a 1-epoch one from scratch, with a per-epoch history to check.
GOOD = {**SMALL, "epochs": 2, "imgsz": 160, "batch": 4, "warmup_epochs": 0.0}
MODEL_ASSETS = ["trained_weights", "evaluation_report", "registered_model", "model_rollout"]


def train_config(settings: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {"trained_weights": {"config": settings}}}


@dataclass
class Scenario(Home):
    """A home whose model path has run: v1, v2, a too-small batch, an idle tick and v3 (see above)."""

    versions: dict[str, str] = field(default_factory=dict)

    @property
    def mlflow(self) -> Any:
        return self.resource("mlflow")

    def train(self, name: str, config: dict[str, Any]) -> None:
        self.tick(train_config(config), automation=True, name=name)

    def runs(self) -> list[Any]:
        return self.mlflow.client().search_runs([self.mlflow.experiment_id()])

    def model_version(self, version: int | str) -> Any:
        return self.mlflow.client().get_model_version(self.mlflow.model_name, str(version))

    def alias(self, alias: str) -> int:
        return int(self.mlflow.alias_version(alias).version)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, good_detector: Path) -> Iterator[Scenario]:
    path = tmp_path_factory.mktemp("model") / "home"
    previous = os.environ.get("DAGSTER_HOME")
    # Secrets in the environment must not end up in MLflow (checked below).
    os.environ["AWS_SECRET_ACCESS_KEY"] = FAKE_SECRET
    os.environ["YOLO_ASSETS_ALERT_WEBHOOK_URL"] = f"http://127.0.0.1:9/hooks/{FAKE_SECRET}"
    # Tiny models score near zero: no tolerance, so any regression is refused.
    s = Scenario.create(path, model_policy=ModelPolicy(min_new_images=5, first_model_min_map50=0.0, promotion_tolerance=0.0, rollout_steps=[100]))
    os.environ["DAGSTER_HOME"] = str(dagster_home(path))
    s.land("batch_a", 64, seed=1)
    s.train("v1", SMALL)
    s.versions["v1"] = s.data_version("trained_weights")
    s.land("batch_b", 40, seed=2)
    good = {**GOOD, "model": str(good_detector)}
    s.train("v2", good)
    s.versions["v2"] = s.data_version("trained_weights")
    s.land("batch_small", 2, seed=3)
    s.train("small", good)
    s.train("idle", good)
    s.outcomes["v3"] = [s.materialize(MODEL_ASSETS, run_config=train_config(SMALL))]
    s.versions["v3"] = s.data_version("trained_weights")
    yield s
    os.environ.pop("AWS_SECRET_ACCESS_KEY", None)
    os.environ.pop("YOLO_ASSETS_ALERT_WEBHOOK_URL", None)
    s.close()
    if previous is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = previous


def test_tick_ingests_then_automation_trains_evaluates_and_registers(scenario: Scenario) -> None:
    ingest, dataset, model = scenario.outcomes["v1"]
    assert ingest.success and dataset.success and model.success, (ingest, dataset, model)
    assert all(asset in model.description for asset in MODEL_ASSETS)  # trained, evaluated, registered
    assert scenario.metadata("registered_model")["model_version"] == 3  # the scenario ends with v3 registered
    # After v1 the champion was v1; a new batch made automation retrain (v2), and v2 took the alias.
    assert [o.success for o in scenario.outcomes["v2"]] == [True, True, True]
    assert "registered_model" in scenario.outcomes["v2"][2].description


def test_first_model_is_registered_with_lineage_tags(scenario: Scenario) -> None:
    version = scenario.model_version(1)
    tags = version.tags
    assert tags["weights_version"] == scenario.versions["v1"]
    batch_a = scenario.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("labeled_batch"), asset_partitions=["batch_a"]), limit=1
    ).records[0]
    assert f'"batch_a": "{batch_a.asset_materialization.tags["dagster/data_version"]}"' in tags["batches"]
    assert tags["batch_names"] == "batch_a"
    v1_training = scenario.mlflow.client().get_run(scenario.model_version(1).run_id)
    assert v1_training.data.tags["dataset_version"] == tags["dataset_version"]
    assert v1_training.data.tags["dagster_run_id"] == tags["training_dagster_run_id"]
    assert tags["promotion_gate"] == "passed"
    v2_tags = scenario.model_version(2).tags
    assert v2_tags["batch_names"] == "batch_a,batch_b"
    assert v2_tags["dataset_version"] != tags["dataset_version"]


def test_training_logs_params_and_per_epoch_metrics_to_one_mlflow_run(scenario: Scenario) -> None:
    client = scenario.mlflow.client()
    run = client.get_run(scenario.metadata("trained_weights")["mlflow_run_id"])
    assert run.data.params["epochs"] == "1" and run.data.params["imgsz"] == "96"
    assert run.data.tags["dataset_version"] == scenario.metadata("trained_weights")["dataset_version"]
    v2_run = client.get_run(scenario.model_version(2).run_id)
    history = client.get_metric_history(v2_run.info.run_id, "metrics/mAP50-95B")
    assert [m.step for m in history] == list(range(1, GOOD["epochs"] + 2))  # every epoch + final validation
    assert client.get_metric_history(v2_run.info.run_id, "train/box_loss")
    artifacts = {a.path for a in client.list_artifacts(v2_run.info.run_id, "training")}
    assert {"training/best.pt", "training/results.csv", "training/args.yaml"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(v2_run.info.run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/metrics.json", "evaluation/BoxPR_curve.png"} <= evaluation
    # The evaluation's headline metrics land on the run of the weights it evaluated (one log_batch).
    report = scenario.metadata("evaluation_report")
    evaluated_run = client.get_run(report["mlflow_run_id"])
    assert {f"eval/{name}" for name in ("mAP50", "mAP50-95", "precision", "recall")} <= evaluated_run.data.metrics.keys()
    assert round(evaluated_run.data.metrics["eval/mAP50-95"], 4) == report["mAP50-95"]
    # One MLflow run per training and nothing else: ultralytics' own MLflow callback stayed off.
    assert len(scenario.runs()) == 3
    assert not Path("runs").exists() and not Path("mlruns").exists()


def test_gate_promotes_a_better_model_and_refuses_a_worse_one(scenario: Scenario) -> None:
    v2 = scenario.model_version(2)
    assert float(v2.tags["mAP50-95"]) > float(scenario.model_version(1).tags["mAP50-95"])
    assert v2.tags["promotion_gate"] == "passed"
    [refused] = scenario.outcomes["v3"]
    v3_map = float(scenario.model_version(3).tags["mAP50-95"])
    assert v3_map < float(v2.tags["mAP50-95"]), (v3_map, v2.tags["mAP50-95"])
    assert not refused.success and "promotion_gate" in refused.failure
    v3 = scenario.model_version(3)
    assert v3.tags["weights_version"] == scenario.versions["v3"]
    assert v3.tags["promotion_gate"] == "failed" and "mAP50-95" in v3.tags["promotion_reasons"]
    assert scenario.alias("champion") == 2 and scenario.alias("challenger") == 3
    report = scenario.metadata("evaluation_report")
    # Both evaluated on v3's val split (which now holds a new image): the champion scores higher there.
    assert report["weights_version"] == scenario.versions["v3"]
    assert report["champion_mAP50-95"] > report["mAP50-95"]
    assert "![Precision-recall curve](data:image/png;base64," in report["report"]


def test_automation_waits_for_enough_new_images(scenario: Scenario) -> None:
    ingest, dataset = scenario.outcomes["small"]  # 2 new images < min_new_images=5: no training run
    assert ingest.success and "labeled_data_sensor" in ingest.description
    assert dataset.success and "dataset_sensor" in dataset.description
    assert scenario.outcomes["idle"] == []
    key = dg.AssetCheckKey(dg.AssetKey("processed_images"), "retrain_gate")
    record = scenario.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert record.status.value == "FAILED"
    assert record.event.dagster_event.event_specific_data.metadata["new_images"].value == 2


def test_rematerialising_is_a_cache_hit_without_training(scenario: Scenario) -> None:
    runs_before = len(scenario.runs())
    assert scenario.materialize(["trained_weights", "evaluation_report"], run_config=train_config(SMALL)).success
    assert scenario.metadata("trained_weights")["cache_hit"] is True
    assert scenario.metadata("evaluation_report")["cache_hit"] is True
    assert scenario.data_version("trained_weights") == scenario.versions["v3"]
    assert len(scenario.runs()) == runs_before  # no epoch ran: no new MLflow run
    # Registration is idempotent per weights version: the same weights are still registry version 3,
    # refused by the gate again (v3 is worse than the champion), and no new version appears.
    client, name = scenario.mlflow.client(), scenario.mlflow.model_name
    registered_before = len(client.search_model_versions(f"name='{name}'"))
    again = scenario.materialize(["registered_model"])
    assert not again.success and "promotion_gate" in again.failure
    assert scenario.metadata("registered_model")["model_version"] == 3
    assert len(client.search_model_versions(f"name='{name}'")) == registered_before == 3


def test_cpu_training_twice_gives_the_same_weights_hash_with_or_without_plots(scenario: Scenario) -> None:
    runs_before = len(scenario.runs())
    for key_file in (scenario.store / "trained_weights" / "_cache_keys").iterdir():
        key_file.unlink()  # forget the memo: the next materialisation really trains again
    # Plots are drawn beside the weights, not into them: the same recipe without them is the same version.
    assert scenario.materialize(["trained_weights"], run_config=train_config({**SMALL, "plots": False})).success
    assert scenario.metadata("trained_weights")["cache_hit"] is False
    assert len(scenario.runs()) == runs_before + 1
    assert scenario.data_version("trained_weights") == scenario.versions["v3"]


def test_registered_model_loads_with_pyfunc_and_predicts(scenario: Scenario) -> None:
    with scenario.mlflow.activated():
        model = mlflow.pyfunc.load_model(f"models:/{scenario.mlflow.model_name}@champion")
    image = next((scenario.landing / "batch_a" / "images").glob("*.jpg"))
    detections = model.predict(pd.DataFrame({"image": [str(image)]}), params={"conf": 0.001})
    assert list(detections.columns) == DETECTION_COLUMNS
    assert len(detections) > 0 and set(detections["class_name"]) <= {"scratch", "spot", "crack"}


def test_secrets_never_reach_mlflow(scenario: Scenario) -> None:
    client = scenario.mlflow.client()
    runs, versions = scenario.runs(), client.search_model_versions(f"name='{scenario.mlflow.model_name}'")
    assert runs and versions
    for run in runs:
        assert FAKE_SECRET not in repr(run.data.params) and FAKE_SECRET not in repr(run.data.tags)
    for version in versions:
        assert FAKE_SECRET not in repr(version.tags)


def test_model_lineage_goes_back_to_runs_config_dataset_and_batches(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(scenario.path)]
    assert main([*home, "lineage", "--model", f"{scenario.mlflow.model_name}@champion", "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    v2 = scenario.model_version(2)
    assert lineage["version"] == 2 and "champion" in lineage["aliases"]
    assert lineage["dataset_version"] == v2.tags["dataset_version"]
    assert lineage["training_config"]["epochs"] in (GOOD["epochs"], str(GOOD["epochs"]))
    training = scenario.instance.get_run_by_id(lineage["training_dagster_run_id"])
    assert training is not None and training.status == dg.DagsterRunStatus.SUCCESS
    made = [e.asset_materialization for e in scenario.instance.all_logs(training.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)]
    assert [data_version_of(m) for m in made if m and m.asset_key == dg.AssetKey("trained_weights")] == [v2.tags["weights_version"]]
    assert [b["batch"] for b in lineage["batches"]] == ["batch_a", "batch_b"]
    for batch in lineage["batches"]:  # each batch: the run that ingested it, and what it held
        ingest_run = scenario.instance.get_run_by_id(batch["ingest_run_id"])
        assert ingest_run is not None and ingest_run.tags.get("dagster/partition") == batch["batch"]
        assert batch["num_images"] == scenario.metadata("labeled_batch", batch["batch"])["num_images"] > 0
    assert main([*home, "lineage", "--model", f"{scenario.mlflow.model_name}/3"]) == 0
    assert "promotion_gate: failed" in capsys.readouterr().out


def test_class_names_are_read_from_a_weights_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))  # restored after the test
    configure_ultralytics(tmp_path / "ultralytics")
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    model.model.names = {0: "scratch", 1: "dent", 2: "crack"}  # type: ignore[union-attr]
    model.save(tmp_path / "weights.pt")
    assert checkpoint_class_names(tmp_path / "weights.pt") == ["scratch", "dent", "crack"]
