"""Retracted batches: what a person took out of the dataset after ingestion, and why.

The state is a small list of records, one per retracted batch: the batch name, the reason, when, and
the content the batch had when it was retracted (its `labeled_batch` data version and landing-zone
content hash); a batch retracted again keeps its earlier reasons and times in `history`. A batch is
left out of every later dataset while it is retracted, whatever it holds; another batch holding
exactly the retracted content is left out too, so landing the same content again (under any name)
does not bring it back. Only `unretract` does.
"""

from collections.abc import Iterable, Mapping
from typing import Any

MAX_REASON_LENGTH = 500


class RetractionError(ValueError):
    """A retraction request that cannot be applied (no reason, unknown batch, not retracted...)."""


def checked_reason(reason: str) -> str:
    """`reason` with its whitespace collapsed, if it is a usable reason."""
    reason = " ".join(reason.split())
    if not reason:
        raise RetractionError("a retraction needs a reason (--reason TEXT)")
    if len(reason) > MAX_REASON_LENGTH or not reason.isprintable():
        raise RetractionError(f"the reason must be at most {MAX_REASON_LENGTH} printable characters")
    return reason


def record_of(state: Iterable[dict[str, Any]], batch: str) -> dict[str, Any] | None:
    """The batch's own record, None when it is not retracted."""
    return next((r for r in state if r["batch"] == batch), None)


def retract(
    state: Iterable[dict[str, Any]], batch: str, reason: str, at: str, data_version: str | None, content_hash: str | None
) -> list[dict[str, Any]]:
    """The state with `batch` retracted. A batch retracted again gets the new reason, time and content;
    the earlier reasons and times stay in its `history`, oldest first."""
    records = list(state)
    previous = record_of(records, batch)
    history = []
    if previous is not None:
        history = [*previous.get("history", []), {"reason": previous["reason"], "retracted_at": previous["retracted_at"]}]
    record = {
        "batch": batch, "reason": checked_reason(reason), "retracted_at": at, "data_version": data_version,
        "content_hash": content_hash, "history": history,
    }
    return sorted([*(r for r in records if r["batch"] != batch), record], key=lambda r: r["batch"])


def unretract(state: Iterable[dict[str, Any]], batch: str) -> list[dict[str, Any]]:
    records = list(state)
    if record_of(records, batch) is None:
        retracted = ", ".join(r["batch"] for r in records) or "none"
        raise RetractionError(f"batch {batch!r} is not retracted (retracted: {retracted})")
    return [r for r in records if r["batch"] != batch]


def retraction_of(state: Iterable[dict[str, Any]], batch: str, data_version: str, content_hash: str | None) -> dict[str, Any] | None:
    """The record that keeps this batch version out: its own, or one whose content it holds."""
    records = list(state)
    own = record_of(records, batch)
    if own is not None:
        return own
    return next(
        (
            r for r in records
            if (data_version and r.get("data_version") == data_version) or (content_hash and r.get("content_hash") == content_hash)
        ),
        None,
    )


def retracted_batches_of(trained_on: Mapping[str, str], records: Iterable[dict[str, Any]]) -> list[str]:
    """The batches of `trained_on` (batch -> data version, a model's lineage) that `records` keep out:
    what a model learned that a person has since retracted."""
    records = list(records)
    return sorted(batch for batch, version in trained_on.items() if retraction_of(records, batch, version, None) is not None)
