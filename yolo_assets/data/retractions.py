"""Retracted batches: what a person took out of the dataset after ingestion, and why.

The state is a small list of records, one per retracted batch: the batch name, the reason, when, and
the content the batch had when it was retracted (its `labeled_batch` data version and landing-zone
content hash). A batch is left out of every later dataset while it is retracted, whatever it holds;
another batch holding exactly the retracted content is left out too, so landing the same content
again (under any name) does not bring it back. Only `unretract` does.
"""

from collections.abc import Iterable
from typing import Any

MAX_REASON_LENGTH = 500


class RetractionError(ValueError):
    """A retraction request that cannot be applied (no reason, unknown batch, not retracted...)."""


def retract(
    state: Iterable[dict[str, Any]], batch: str, reason: str, at: str, data_version: str | None, content_hash: str | None
) -> list[dict[str, Any]]:
    """The state with `batch` retracted (a batch retracted again gets the new reason and time)."""
    reason = " ".join(reason.split())
    if not reason:
        raise RetractionError("a retraction needs a reason (--reason TEXT)")
    if len(reason) > MAX_REASON_LENGTH or not reason.isprintable():
        raise RetractionError(f"the reason must be at most {MAX_REASON_LENGTH} printable characters")
    record = {"batch": batch, "reason": reason, "retracted_at": at, "data_version": data_version, "content_hash": content_hash}
    return sorted([*(r for r in state if r["batch"] != batch), record], key=lambda r: r["batch"])


def unretract(state: Iterable[dict[str, Any]], batch: str) -> list[dict[str, Any]]:
    records = list(state)
    if not any(r["batch"] == batch for r in records):
        retracted = ", ".join(r["batch"] for r in records) or "none"
        raise RetractionError(f"batch {batch!r} is not retracted (retracted: {retracted})")
    return [r for r in records if r["batch"] != batch]


def retraction_of(state: Iterable[dict[str, Any]], batch: str, data_version: str, content_hash: str | None) -> dict[str, Any] | None:
    """The record that keeps this batch version out: its own, or one whose content it holds."""
    records = list(state)
    own = next((r for r in records if r["batch"] == batch), None)
    if own is not None:
        return own
    return next(
        (
            r for r in records
            if (data_version and r.get("data_version") == data_version) or (content_hash and r.get("content_hash") == content_hash)
        ),
        None,
    )
