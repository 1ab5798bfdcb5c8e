"""Retraction records: by batch name, and by content for the same content landed again."""

import pytest

from yolo_assets.data.retractions import RetractionError, retract, retraction_of, unretract


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
