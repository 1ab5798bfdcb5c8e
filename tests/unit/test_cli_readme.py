"""The README and the code agree: the `yolo-assets` commands table with the CLI's parser, the
"Environment variables" table with the variables the code reads and the CLI knows."""

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest

from resources.kubernetes import DEFAULT_SIZES, NODE_SELECTOR_VARIABLE, TOLERATIONS_VARIABLE, PodSize
from resources.trainer import TrainingDefaults
from yolo_assets.core import settings_env
from yolo_assets.core.settings_env import KNOWN_VARIABLES, PREFIX, unknown_variable_warnings
from yolo_assets.data.synth import DEFAULT_CLASSES, DEFECT_KINDS
from yolo_assets.ops.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
# A full name; a name followed by `*` or `<` is a family (`YOLO_ASSETS_TRAIN_*`), a template or a prefix.
VARIABLE = re.compile(r"YOLO_ASSETS_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*<])")


def table_rows(after: str) -> list[list[str]]:
    """The cells of the first Markdown table after the line that starts with `after` (`\\|` kept in its cell)."""
    lines = README[README.index("\n" + after) + 1:].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:  # after the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_readme_commands_table_names_every_subcommand_and_option() -> None:
    documented = {}
    for command, _ in table_rows("The CLI ("):
        words = command.strip("`").split()
        assert words[0] == "yolo-assets", command
        documented[words[1]] = command
    parsers = subcommands()
    assert sorted(documented) == sorted(parsers)
    for name, parser in parsers.items():
        row = documented[name]
        options = {option for action in parser._actions for option in action.option_strings if option.startswith("--")} - {"--help"}
        assert set(re.findall(r"--[a-z][a-z-]*", row)) == options, f"{name}: README row {row!r}"
        for action in parser._actions:
            if not action.option_strings and action.choices:  # `stack up | down | status`
                assert set(action.choices) <= set(re.findall(r"[a-z-]+", row)), f"{name}: README row {row!r}"
    global_options = {o for action in build_parser()._actions for o in action.option_strings if o.startswith("--")} - {"--help"}
    intro = next(line for line in README.splitlines() if line.startswith("The CLI ("))
    assert global_options == set(re.findall(r"--[a-z][a-z-]*", intro))


def test_synth_help_states_its_defaults() -> None:
    help_text = " ".join(subcommands()["synth"].format_help().split())
    assert "images in the batch (default 100)" in help_text and "(default 0)" in help_text
    assert f"any of {','.join(DEFECT_KINDS)} (default: {','.join(DEFAULT_CLASSES)})" in help_text


def readme_variables() -> set[str]:
    """The `YOLO_ASSETS_*` names in the first column of the Environment variables table, templates
    (`YOLO_ASSETS_K8S_<STEP>_CPU`) expanded with the steps that row lists."""
    names: set[str] = set()
    for variables, _, meaning in table_rows("## Environment variables"):
        for name in re.findall(r"`([^`]+)`", variables):
            if not name.startswith(PREFIX):
                continue
            assert re.fullmatch(r"[A-Z0-9_<>]+", name), f"{name}: write the variable out in full"
            if "<STEP>" in name:
                steps = [word for word in re.findall(r"`([A-Z][A-Z_]+)`", meaning) if not word.startswith(PREFIX)]
                assert steps, f"{name}: the row lists no <STEP>"
                names.update(name.replace("<STEP>", step) for step in steps)
            else:
                names.add(name)
    return names


def test_the_known_variables_are_the_readme_table() -> None:
    assert readme_variables() == KNOWN_VARIABLES


def test_every_variable_the_readme_mentions_is_known() -> None:
    assert set(VARIABLE.findall(README)) - KNOWN_VARIABLES == set()


def test_every_variable_the_code_reads_is_known() -> None:
    sources = [
        *(path for folder in ("yolo_assets", "resources", "sensors") for path in (REPO / folder).rglob("*.py")),
        *(path for folder in ("deploy", "docker") for path in (REPO / folder).rglob("*") if path.is_file()),
    ]
    found = {name: path for path in sources for name in VARIABLE.findall(path.read_text(errors="replace"))}
    unknown = {name: str(path.relative_to(REPO)) for name, path in found.items() if name not in KNOWN_VARIABLES}
    assert unknown == {}
    # The names the code builds from a prefix and a field.
    assert set(settings_env.TRAINING_FIELDS) == set(TrainingDefaults.model_fields)
    assert set(settings_env.K8S_STEPS) == set(DEFAULT_SIZES)
    assert {f.name for f in fields(PodSize)} == set(settings_env.K8S_SIZES)
    assert {NODE_SELECTOR_VARIABLE, TOLERATIONS_VARIABLE} <= KNOWN_VARIABLES


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"YOLO_ASSETS_HOME": "h", "YOLO_ASSETS_K8S_TRAINED_WEIGHTS_GPUS": "1", "PATH": "/bin"}, []),
        ({"YOLO_ASSETS_TRAIN_EPOCH": "3"}, ["unknown environment variable YOLO_ASSETS_TRAIN_EPOCH is ignored (did you mean YOLO_ASSETS_TRAIN_EPOCHS?)"]),
        (
            {"YOLO_ASSETS_S3_BUCKT": "b", "YOLO_ASSETS_FOO": "1"},
            [
                "unknown environment variable YOLO_ASSETS_FOO is ignored (see the README's Environment variables)",
                "unknown environment variable YOLO_ASSETS_S3_BUCKT is ignored (did you mean YOLO_ASSETS_S3_BUCKET?)",
            ],
        ),
    ],
)
def test_unknown_variables_are_named_with_the_closest_known_one(environ: dict[str, str], expected: list[str]) -> None:
    assert unknown_variable_warnings(environ) == expected
