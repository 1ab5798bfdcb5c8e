"""Retraction records: by batch name, and by content for the same content landed again."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from yolo_assets.assets.keys import BATCH_RETRACTIONS
from yolo_assets.assets.retractions import RETRACTIONS_POOL
from yolo_assets.core.home import dagster_home, ensure_home
from yolo_assets.data.retractions import RetractionError, retract, retraction_of, unretract
from yolo_assets.definitions import build_definitions


def test_retract_and_unretract_a_batch() -> None:
    state = retract([], "batch_b", "  wrong\ttool settings ", "2026-01-01T00:00:00+00:00", "v_b", "h_b")
    assert state == [{"batch": "batch_b", "reason": "wrong tool settings", "retracted_at": "2026-01-01T00:00:00+00:00",
                      "data_version": "v_b", "content_hash": "h_b"}]
    assert retraction_of(state, "batch_b", "v_other", "h_other") is state[0]  # whatever it holds now
    assert retraction_of(state, "batch_again", "v_b", None) is state[0]  # the same content, another name
    assert retraction_of(state, "batch_again", "", "h_b") is state[0]
    assert retraction_of(state, "batch_c", "v_c", "h_c") is None
    again = retract(state, "batch_b", "other reason", "2026-01-02T00:00:00+00:00", "v_b", "h_b")
    assert len(again) == 1 and again[0]["reason"] == "other reason"
    assert unretract(state, "batch_b") == []


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "bell\x07"])
def test_a_retraction_needs_a_short_printable_reason(reason: str) -> None:
    with pytest.raises(RetractionError):
        retract([], "batch_b", reason, "t", None, None)


def test_unretracting_a_batch_that_is_not_retracted_says_so() -> None:
    with pytest.raises(RetractionError, match="is not retracted"):
        unretract([], "batch_b")


def test_retractions_run_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each retraction rewrites the whole list: the asset is in a pool whose limit is 1 on the embedded
    and on the production instance, so a second retraction waits instead of overwriting the first."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # ensure_home points it at the home; restored after
    defs = build_definitions(ensure_home(tmp_path / "home"))
    node = defs.resolve_assets_def(BATCH_RETRACTIONS).get_op_def_for_asset_key(BATCH_RETRACTIONS)
    assert node.pool == RETRACTIONS_POOL
    instance = dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "home")))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    production = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "dagster.yaml").read_text())
    assert production["concurrency"]["pools"]["default_limit"] == 1
