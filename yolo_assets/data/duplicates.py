"""The same image more than once: within one batch, and across the batches of a dataset.

Identical labels keep one copy (counted); different labels are a conflict: every copy is quarantined
with `label_conflict`, or under `last_writer_wins` the last copy (the batch that landed last) is kept.
"""

from collections.abc import Iterable
from typing import Any

from yolo_assets.data.formats import class_key
from yolo_assets.data.quarantine import QuarantineReason, quarantine_entry

LAST_WRITER_WINS = "last_writer_wins"


def resolve_duplicates(items: list[dict[str, Any]], label_conflicts: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Within one batch: (kept items, quarantine entries for the other copies)."""
    by_sha: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_sha.setdefault(item["image_sha"], []).append(item)
    kept, quarantine = [], []
    for copies in by_sha.values():
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        agree = all(copy["boxes"] == copies[0]["boxes"] for copy in copies)
        if agree or label_conflicts == LAST_WRITER_WINS:
            winner = copies[0] if agree else copies[-1]
            kept.append(winner)
            quarantine += [
                quarantine_entry(c["source"], c.get("label_source"), QuarantineReason.DUPLICATE_IMAGE,
                                 f"same image as {winner['source']}" + ("" if agree else " (labels differ; last copy kept)"))
                for c in copies if c is not winner
            ]
        else:
            quarantine += [
                quarantine_entry(c["source"], c.get("label_source"), QuarantineReason.LABEL_CONFLICT,
                                 f"the same image is labeled differently in {', '.join(x['source'] for x in copies)}")
                for c in copies
            ]
    return kept, quarantine


def union_of_batches(
    batches: Iterable[tuple[str, dict[str, Any]]], case_sensitive: bool, label_conflicts: str
) -> tuple[list[str], dict[str, dict[str, Any]], int, list[dict[str, Any]]]:
    """Across batches, given (partition, batch manifest) in landing order: class names reconciled by
    name (ids in order of first appearance) and items keyed by image hash.

    Returns (classes, items, number of duplicates kept once, quarantine entries of conflicts).
    """
    classes: list[str] = []
    keys: set[str] = set()
    items: dict[str, dict[str, Any]] = {}
    conflicted: dict[str, list[dict[str, Any]]] = {}
    duplicates = 0

    def canonical(boxes: list[list[Any]]) -> list[list[Any]]:
        return sorted([class_key(b[0], case_sensitive), *b[1:]] for b in boxes)

    for partition, manifest in batches:
        for name in manifest["classes"]:
            if class_key(name, case_sensitive) not in keys:
                keys.add(class_key(name, case_sensitive))
                classes.append(name)
        for item in manifest["items"]:
            sha, entry = item["image_sha"], {**item, "batch": partition}
            if sha in conflicted:
                conflicted[sha].append(entry)
            elif sha not in items or label_conflicts == LAST_WRITER_WINS:
                duplicates += sha in items
                items[sha] = entry
            elif canonical(items[sha]["boxes"]) == canonical(item["boxes"]):
                duplicates += 1
            else:
                conflicted[sha] = [items.pop(sha), entry]
    conflicts = [
        quarantine_entry(f"{c['batch']}/{c['source']}", c.get("label_source"), QuarantineReason.LABEL_CONFLICT,
                         "labeled differently in " + ", ".join(f"{x['batch']}/{x['source']}" for x in copies))
        for copies in conflicted.values()
        for c in copies
    ]
    return classes, items, duplicates, conflicts
