"""Every user mistake is one line: `yolo-assets: error: ...` on stderr, exit status 2, and no Dagster run."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Home

from yolo_assets.assets.ingest import BATCH_PARTITIONS
from yolo_assets.core.settings_env import KNOWN_VARIABLES, PREFIX
from yolo_assets.ops.cli import UserError, main, unique_prefix_match
from yolo_assets.ops.stack import postgres_root, status


@pytest.fixture(autouse=True)
def known_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown YOLO_ASSETS_* variables of the shell running the tests would add warning lines."""
    for name in os.environ:
        if name.startswith(PREFIX) and name not in KNOWN_VARIABLES:
            monkeypatch.delenv(name)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("yolo-assets: error: ")
    return line.removeprefix("yolo-assets: error: ")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("ops: {processed_images: {config: {maxside: 512}}}", ['"maxside"', "ops.processed_images.config", "did you mean max_side?"]),
        ("ops: {processed_images: {config: {max_side: big}}}", ["ops.processed_images.config.max_side", '"big"', '"Int"']),
        ("ops: {processed_imagez: {config: {max_side: 512}}}", ["unknown op processed_imagez", "known: batch_retractions,"]),
        ("ops: {processed_images: {max_side: 512}}", ['"max_side"', "ops.processed_images", "put max_side under config:"]),
        ("ops: {batch_retractions: {config: {reason: x}}}", ['"batch"', "ops.batch_retractions.config"]),
    ],
)
@pytest.mark.parametrize("command", [["tick", "--no-automation"], ["materialize", "processed_images"]])
def test_a_wrong_run_config_is_refused_before_any_run(
    home: Home, land_copy: Callable[[str, int, int], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    config: str, expected: list[str], command: list[str],
) -> None:
    land_copy("batch_a", 4, 1)  # a tick would ingest it first, and stop at the first run the config reaches
    path = tmp_path / "run.yaml"
    path.write_text(config + "\n")
    assert main(["--home", str(home.path), *command, "--config", str(path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"run config {path}: ")
    for part in expected:
        assert part in line
    assert home.instance.get_runs() == []


def test_the_readme_run_config_example_passes(home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("ops:\n  processed_images:\n    config: {max_side: 512, val_fraction: 0.25}\n"
                    "  labeled_batch:\n    config: {max_quarantined_fraction: 0.1}\n")
    assert main(["--home", str(home.path), "tick", "--no-automation", "--config", str(path)]) == 0
    assert "nothing to run" in capsys.readouterr().out


def test_a_new_stack_home_refuses_postgresql_data_an_earlier_home_at_its_path_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The earlier home's superuser password went with its state.json: starting that data with new
    credentials failed at the first login (the soak's home at a path a passed run had freed)."""
    home = tmp_path / "home"
    (postgres_root(home) / "data").mkdir(parents=True)
    try:
        assert main(["--home", str(home), "stack", "up"]) == 2
        line = capsys.readouterr().err.splitlines()[-1]  # (after the note that a new home is initialised)
        assert line.startswith(f"yolo-assets: error: {postgres_root(home)} holds PostgreSQL data without its credentials")
        assert line.endswith("remove that folder to start afresh")
        assert status(home) == []  # no state: nothing was started
    finally:
        if not postgres_root(home).is_relative_to(home):  # in /var/tmp (under root)
            shutil.rmtree(postgres_root(home).parent)


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_home_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], below: str) -> None:
    file = tmp_path / "home.txt"
    file.write_text("not a folder")
    assert main(["--home", str(file / below) if below else str(file), "status"]) == 2
    line = one_error_line(capsys)
    assert str(file) in line
    assert ("is a file, not a folder" if not below else "cannot create the home") in line
    assert file.read_text() == "not a folder"


def test_retract_and_unretract_mistakes_start_no_run(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    home.instance.add_dynamic_partitions(BATCH_PARTITIONS, ["batch_a", "batch_b"])
    cli = ["--home", str(home.path)]
    assert main([*cli, "unretract", "batch_a"]) == 2
    assert one_error_line(capsys) == "batch 'batch_a' is not retracted (retracted: none)"
    assert main([*cli, "retract", "batch_a", "--reason", "x" * 501]) == 2
    assert "at most 500 printable characters" in one_error_line(capsys)
    assert home.instance.get_runs() == []

    assert main([*cli, "retract", "batch_b", "--reason", "blurred", "--no-rebuild"]) == 0
    capsys.readouterr()
    assert main([*cli, "unretract", "batch_a"]) == 2
    assert one_error_line(capsys) == "batch 'batch_a' is not retracted (retracted: batch_b)"
    assert len(home.instance.get_runs()) == 1


def test_retracting_again_says_so_and_keeps_the_earlier_reason(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    home.instance.add_dynamic_partitions(BATCH_PARTITIONS, ["batch_b"])
    cli = ["--home", str(home.path)]
    assert main([*cli, "retract", "batch_b", "--reason", "blurred", "--no-rebuild"]) == 0
    first = home.metadata("batch_retractions")["retracted_batches"][0]
    assert "already retracted" not in capsys.readouterr().out
    assert main([*cli, "retract", "batch_b", "--reason", "mislabeled", "--no-rebuild"]) == 0
    out = capsys.readouterr().out
    assert f"batch batch_b was already retracted at {first['retracted_at']} (blurred)" in out and "earlier one is kept" in out
    [record] = home.metadata("batch_retractions")["retracted_batches"]
    assert record["reason"] == "mislabeled"
    assert record["history"] == [{"reason": "blurred", "retracted_at": first["retracted_at"]}]


def test_lineage_takes_the_run_id_prefix_an_alert_prints(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    home.instance.add_dynamic_partitions(BATCH_PARTITIONS, ["batch_b"])
    cli = ["--home", str(home.path)]
    assert main([*cli, "retract", "batch_b", "--reason", "blurred", "--no-rebuild"]) == 0
    [run] = home.instance.get_runs()
    capsys.readouterr()
    assert main([*cli, "lineage", run.run_id[:8], "--json"]) == 0
    assert run.run_id in capsys.readouterr().out
    other = "0" if run.run_id[0] != "0" else "1"
    assert main([*cli, "lineage", other * 8]) == 2
    assert one_error_line(capsys) == f"no run id in this instance starts with {other * 8!r}"


def test_an_ambiguous_prefix_asks_for_more() -> None:
    with pytest.raises(UserError, match=r"^2 run ids start with 'ab' \(abc, abd\.\.\.\): give more of it$"):
        unique_prefix_match(["abc", "abd", "xyz"], "ab", "run id")
    assert unique_prefix_match(["abc", "abd"], "abd", "run id") == "abd"


def test_unknown_environment_variables_are_one_warning_each_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("YOLO_ASSETS_TRAIN_EPOCH", "3")
    assert main(["synth", "--out", str(tmp_path / "batch"), "--images", "1"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "yolo-assets: warning: unknown environment variable YOLO_ASSETS_TRAIN_EPOCH is ignored (did you mean YOLO_ASSETS_TRAIN_EPOCHS?)"
    ]
