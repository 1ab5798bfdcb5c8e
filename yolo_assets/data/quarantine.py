"""Why an item was left out: the quarantine reason codes and the entries that carry them.

Codes are stable (users filter on them) and appear in manifests, metadata and `quarantine.json` as
plain strings. Every item that cannot be used is kept with one of these; nothing is dropped silently.
"""

from collections.abc import Sequence
from enum import StrEnum
from typing import TypedDict


class QuarantineReason(StrEnum):
    # The image
    IMAGE_MISSING = "image_missing"
    IMAGE_EMPTY = "image_empty"
    IMAGE_NOT_AN_IMAGE = "image_not_an_image"
    IMAGE_TRUNCATED = "image_truncated"
    IMAGE_UNDECODABLE = "image_undecodable"
    IMAGE_TOO_LARGE = "image_too_large"
    # The label
    LABEL_MISSING = "label_missing"
    LABEL_NOT_TEXT = "label_not_text"
    LABEL_TOO_LARGE = "label_too_large"
    LABEL_MALFORMED = "label_malformed"
    LABEL_NOT_FINITE = "label_not_finite"
    CLASS_UNKNOWN = "class_unknown"
    COORDS_OUT_OF_RANGE = "coords_out_of_range"
    BOX_DEGENERATE = "box_degenerate"
    # The item among others
    DUPLICATE_IMAGE = "duplicate_image"
    LABEL_CONFLICT = "label_conflict"
    # Files that are unsafe to read or write
    SYMLINK_OUTSIDE_BATCH = "symlink_outside_batch"
    ARCHIVE_MEMBER_UNSAFE = "archive_member_unsafe"
    OBJECT_KEY_UNSAFE = "object_key_unsafe"
    ANNOTATION_ORPHAN = "annotation_orphan"


class QuarantineEntry(TypedDict):
    """One quarantined item, as stored in a batch manifest's `quarantine` list and `quarantine.json`."""

    image: str | None  # relative to the batch
    label: str | None
    reason: str  # a QuarantineReason code, as a plain str
    detail: str


def quarantine_entry(image: str | None, label: str | None, reason: QuarantineReason, detail: str) -> QuarantineEntry:
    """One quarantined item: its image and label paths (relative to the batch), why, and details."""
    # The code as a plain str: entries go to JSON, metadata and tables, never as an enum member.
    return {"image": image, "label": label, "reason": str(reason), "detail": detail}


def quarantine_table(entries: Sequence[QuarantineEntry], limit: int | None = 50) -> str:
    """Markdown table of quarantine entries (the metadata shows the first `limit`)."""
    if not entries:
        return "No quarantined items.\n"
    rows = ["| item | reason | detail |", "|---|---|---|"]
    for entry in entries[:limit]:
        detail = str(entry["detail"]).replace("|", "/")
        rows.append(f"| {entry['image'] or entry['label']} | `{entry['reason']}` | {detail} |")
    if limit is not None and len(entries) > limit:
        rows.append(f"| ... | {len(entries) - limit} more in quarantine.json | |")
    return "\n".join(rows) + "\n"
