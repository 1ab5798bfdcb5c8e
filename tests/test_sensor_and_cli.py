"""The sensor evaluated directly, the definitions as `dagster dev` loads them, and the CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from helpers import REPO, Home

from sensors.dataset import dataset_sensor
from sensors.labeled_data import labeled_data_sensor
from yolo_assets.assets.keys import CODE_VERSIONS, LABELED_BATCH, PROCESSED_IMAGES
from yolo_assets.ops.cli import main


def _evaluate(home: Home, cursor: str | None, sensor: dg.SensorDefinition = labeled_data_sensor) -> Any:
    with dg.build_sensor_context(
        instance_ref=home.instance.get_ref(), cursor=cursor, definitions=home.defs, resources=home.defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def test_many_batches_in_one_tick_all_get_runs_and_the_cursor_skips_them_next_time(home: Home, land_copy) -> None:
    for index in range(5):
        land_copy(f"batch_{index}", 4, 1 + index % 2)
    incomplete = land_copy("batch_uploading", 4, 3)
    (incomplete / "_SUCCESS").unlink()
    first = _evaluate(home, None)
    assert sorted(r.partition_key for r in first.run_requests) == [f"batch_{i}" for i in range(5)]
    assert len({r.run_key for r in first.run_requests}) == 5
    assert first.dynamic_partitions_requests[0].partition_keys == [f"batch_{i}" for i in range(5)]
    second = _evaluate(home, first.cursor)
    assert second.run_requests == []


def test_a_folder_with_its_ready_marker_beside_it_is_complete_and_rewriting_the_marker_lands_it_again(
    home: Home, land_copy, tmp_path: Path
) -> None:
    source = land_copy("staged", 4, 1)
    (source / "_SUCCESS").unlink()
    assert main(["--home", str(home.path), "upload", str(source), "--batch", "line_a"]) == 0
    assert (home.landing / "line_a.ready").is_file() and not (home.landing / "line_a" / "_SUCCESS").exists()
    first = _evaluate(home, None)
    assert [r.partition_key for r in first.run_requests] == ["line_a"]  # `staged` has no marker: still uploading
    (home.landing / "line_a" / "labels" / "extra.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert _evaluate(home, first.cursor).run_requests == []  # new content, marker not rewritten yet
    os.utime(home.landing / "line_a.ready", ns=(1, 1))
    again = _evaluate(home, first.cursor)
    assert [r.partition_key for r in again.run_requests] == ["line_a"] and again.run_requests[0].run_key != first.run_requests[0].run_key
    assert main(["--home", str(home.path), "upload", str(source), "--batch", "bad.ready"]) == 2


def test_dataset_sensor_skips_its_comparison_until_something_moves(home: Home, land_copy) -> None:
    land_copy("batch_a", 4, 1)
    land_copy("batch_b", 4, 2)
    assert all(o.success for o in home.tick())
    up_to_date = _evaluate(home, None, dataset_sensor)
    assert "holds every accepted batch" in up_to_date.skip_message and up_to_date.cursor
    idle = _evaluate(home, up_to_date.cursor, dataset_sensor)
    assert idle.skip_message == "nothing moved since the dataset was found up to date" and idle.cursor == up_to_date.cursor
    # A new event of a batch (here the same content again) moves the fingerprint: the comparison runs again.
    assert home.materialize("labeled_batch", "batch_a").success
    again = _evaluate(home, up_to_date.cursor, dataset_sensor)
    assert "holds every accepted batch" in again.skip_message and again.cursor != up_to_date.cursor
    # A retraction does too, and this time the dataset must be rebuilt: a run, and no remembered "up to date".
    retract = {"ops": {"batch_retractions": {"config": {"batch": "batch_b", "reason": "blurred"}}}}
    assert home.materialize("batch_retractions", run_config=retract).success
    rebuild = _evaluate(home, again.cursor, dataset_sensor)
    assert [r.asset_selection for r in rebuild.run_requests] == [[PROCESSED_IMAGES]] and rebuild.cursor == again.cursor


def test_definitions_load_like_dagster_dev(home: Home) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env={**os.environ, "DAGSTER_HOME": str(home.path / "dagster")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    graph = home.defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("processed_images")).parent_keys == {dg.AssetKey("labeled_batch")}
    assert {c.name for c in graph.asset_check_keys} == {
        "label_validity", "class_registry", "split_leakage", "near_duplicates", "retrain_gate", "promotion_gate", "fresh_data_drift"
    }
    # Training follows a new dataset version, once its blocking checks passed (the condition as loaded).
    condition = graph.get(dg.AssetKey("trained_weights")).automation_condition
    assert condition is not None
    assert [child.get_label() for child in condition.children] == ["new dataset version with enough new images", "first build once the inputs exist"]


def test_cli_tick_then_status_json(home: Home, land_copy, capsys: pytest.CaptureFixture[str]) -> None:
    land_copy("batch_a", 6, 1)
    assert main(["tick", "--no-automation"]) == 0
    assert "labeled_data_sensor partition=batch_a: SUCCESS" in capsys.readouterr().out
    assert main(["tick", "--no-automation"]) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assets = {row["key"]: row for row in json.loads(capsys.readouterr().out)["assets"]}
    assert set(assets) == {
        "labeled_batch", "fresh_batch_evaluation", "batch_retractions", "processed_images",
        "trained_weights", "evaluation_report", "registered_model", "model_rollout",
    }
    assert assets["trained_weights"]["data_version"] is None and assets["trained_weights"]["stale"] is True
    for row in assets.values():
        assert set(row) == {"key", "data_version", "code_version", "time", "partitions", "stale", "metadata"}
    for row in (assets["labeled_batch"], assets["processed_images"]):
        assert row["stale"] is False
    assert assets["labeled_batch"]["code_version"] == CODE_VERSIONS[LABELED_BATCH]
    assert assets["processed_images"]["code_version"] == CODE_VERSIONS[PROCESSED_IMAGES]
    assert assets["labeled_batch"]["partitions"] == 1
    assert assets["processed_images"]["data_version"] == home.data_version("processed_images")
    assert assets["processed_images"]["metadata"]["num_images"] == 6
    # A new batch materialised but not yet folded in makes processed_images stale.
    land_copy("batch_b", 3, 2)
    home.instance.add_dynamic_partitions("batches", ["batch_b"])
    assert main(["materialize", "labeled_batch", "--partition", "batch_b"]) == 0
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    assets = {row["key"]: row for row in json.loads(capsys.readouterr().out)["assets"]}
    assert assets["processed_images"]["stale"] is True and assets["labeled_batch"]["stale"] is False


def test_cli_user_mistakes_are_one_line_errors(home: Home, tmp_path: Path) -> None:
    unknown = subprocess.run(
        [sys.executable, "-m", "yolo_assets.ops.cli", "materialize", "no_such_asset"], capture_output=True, text=True
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "yolo-assets: error: unknown asset no_such_asset (known: batch_retractions, evaluation_report, fresh_batch_evaluation, labeled_batch, model_rollout, "
        "processed_images, registered_model, trained_weights)"
    ]
    # A home that does not exist yet is initialised, as `init` would, and the command runs on it.
    outputs = []
    for command in (["status"], ["tick", "--no-automation"]):
        fresh = subprocess.run(
            [sys.executable, "-m", "yolo_assets.ops.cli", "--home", str(tmp_path / "nowhere"), *command],
            capture_output=True, text=True,
        )
        assert fresh.returncode == 0 and "Traceback" not in fresh.stderr, fresh.stderr
        outputs.append(fresh)
    assert outputs[0].stderr.startswith("yolo-assets: initialising a new home at")
    assert "initialising" not in outputs[1].stderr and "nothing to run" in outputs[1].stdout  # noted once, on first use


def test_synth_is_deterministic_and_writes_the_marker_last(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["synth", "--out", str(tmp_path / name), "--images", "5", "--seed", "3"]) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    marker = (tmp_path / "a" / "_SUCCESS").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert main(["synth", "--out", str(tmp_path / "c"), "--classes", "scratch,rust"]) == 2


def test_a_production_instance_without_its_settings_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)
    for name in ("YOLO_ASSETS_HOME", "DAGSTER_HOME"):  # the CLI sets them for its children: restored after
        monkeypatch.setenv(name, str(tmp_path / "home"))
    (tmp_path / "home" / "dagster").mkdir(parents=True)
    shutil.copyfile(REPO / "deploy" / "dagster.yaml", tmp_path / "home" / "dagster" / "dagster.yaml")
    assert main(["--home", str(tmp_path / "home"), "status"]) == 2
    error = capsys.readouterr().err
    assert "DAGSTER_PG_HOST" in error and "DAGSTER_PG_PASSWORD" in error and "Traceback" not in error
