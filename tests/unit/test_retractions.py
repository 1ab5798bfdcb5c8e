"""Retraction records: by batch name, and by content for the same content landed again."""

import pytest

from yolo_assets.data.retractions import RetractionError, checked_reason, retract, retracted_batches_of, retraction_of, unretract


def test_retract_and_unretract_a_batch() -> None:
    state = retract([], "batch_b", "  wrong\ttool settings ", "2026-01-01T00:00:00+00:00", "v_b", "h_b")
    assert state == [{"batch": "batch_b", "reason": "wrong tool settings", "retracted_at": "2026-01-01T00:00:00+00:00",
                      "data_version": "v_b", "content_hash": "h_b", "history": []}]
    assert retraction_of(state, "batch_b", "v_other", "h_other") is state[0]  # whatever it holds now
    assert retraction_of(state, "batch_again", "v_b", None) is state[0]  # the same content, another name
    assert retraction_of(state, "batch_again", "", "h_b") is state[0]
    assert retraction_of(state, "batch_c", "v_c", "h_c") is None
    assert unretract(state, "batch_b") == []


def test_retracting_again_keeps_the_earlier_reasons_oldest_first() -> None:
    state = retract([], "batch_b", "blurred", "2026-01-01T00:00:00+00:00", "v_b", "h_b")
    state = retract(state, "batch_a", "wrong tool", "2026-01-01T00:00:00+00:00", "v_a", "h_a")
    state = retract(state, "batch_b", "mislabeled", "2026-01-02T00:00:00+00:00", "v_b2", "h_b2")
    state = retract(state, "batch_b", "  wrong\tcamera ", "2026-01-03T00:00:00+00:00", "v_b3", "h_b3")
    assert [r["batch"] for r in state] == ["batch_a", "batch_b"]
    # The record's own fields are the latest retraction: what the dataset and lineage read.
    assert state[1] == {
        "batch": "batch_b", "reason": "wrong camera", "retracted_at": "2026-01-03T00:00:00+00:00", "data_version": "v_b3",
        "content_hash": "h_b3",
        "history": [
            {"reason": "blurred", "retracted_at": "2026-01-01T00:00:00+00:00"},
            {"reason": "mislabeled", "retracted_at": "2026-01-02T00:00:00+00:00"},
        ],
    }
    assert state[0]["history"] == []
    assert retraction_of(state, "batch_b", "v_b", None) is state[1]
    # A record written before `history` existed is read as one without earlier retractions.
    legacy = [{"batch": "batch_b", "reason": "blurred", "retracted_at": "t1", "data_version": "v_b", "content_hash": None}]
    assert retract(legacy, "batch_b", "again", "t2", "v_b", None)[0]["history"] == [{"reason": "blurred", "retracted_at": "t1"}]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "bell\x07"])
def test_a_retraction_needs_a_short_printable_reason(reason: str) -> None:
    with pytest.raises(RetractionError):
        retract([], "batch_b", reason, "t", None, None)
    with pytest.raises(RetractionError):
        checked_reason(reason)  # what the CLI checks before it starts a run


def test_unretracting_a_batch_that_is_not_retracted_says_so() -> None:
    with pytest.raises(RetractionError, match="is not retracted"):
        unretract([], "batch_b")


def test_a_model_learned_from_the_batches_that_are_now_retracted_by_name_or_by_content() -> None:
    state = retract([], "batch_b", "blurred", "2026-01-01T00:00:00+00:00", "v_b", "h_b")
    trained_on = {"batch_a": "v_a", "batch_b": "v_b_older", "batch_again": "v_b", "batch_c": "v_c"}
    assert retracted_batches_of(trained_on, state) == ["batch_again", "batch_b"]
    assert retracted_batches_of(trained_on, []) == []
