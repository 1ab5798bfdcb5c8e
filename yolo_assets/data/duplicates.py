"""The same image more than once: within one batch, and across the batches of a dataset.

Two labelings of one image are compared as multisets of (class name, box): boxes pair up when their
class names match and every coordinate is within `tolerance` (a fraction of the image side), so the
same boxes exported once as YOLO text and once as COCO pixels (rounding differences ~1e-6) are one
labeling. Identical labels keep one copy (counted); different labels are a conflict: every copy is
quarantined with `label_conflict`, or under `last_writer_wins` the last copy (the batch that landed
last) is kept.
"""

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from yolo_assets.data.batch_manifest import BatchItem, BatchManifest
from yolo_assets.data.formats import class_key
from yolo_assets.data.quarantine import QuarantineEntry, QuarantineReason, quarantine_entry

LAST_WRITER_WINS = "last_writer_wins"
DEFAULT_TOLERANCE = 1e-4
_EPSILON = 1e-12  # float noise on top of the tolerance itself


def same_labels(a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]], tolerance: float, case_sensitive: bool = True) -> bool:
    """True when the boxes [class name, cx, cy, w, h] of `a` and `b` pair up one to one, same class
    and every coordinate within `tolerance`. Greedy per class, boxes sorted by cx: candidates for a box
    are found by bisection, so a label of n boxes costs O(n log n) unless many boxes share a centre."""
    if len(a) != len(b):
        return False
    by_class: dict[str, list[Sequence[Any]]] = {}
    for box in b:
        by_class.setdefault(class_key(str(box[0]), case_sensitive), []).append(box)
    pools = {name: sorted(boxes, key=lambda box: float(box[1])) for name, boxes in by_class.items()}
    centres = {name: [float(box[1]) for box in boxes] for name, boxes in pools.items()}
    used = {name: [False] * len(boxes) for name, boxes in pools.items()}
    limit = tolerance + _EPSILON
    for box in a:
        name = class_key(str(box[0]), case_sensitive)
        if name not in pools:
            return False
        pool, taken = pools[name], used[name]
        index = bisect_left(centres[name], float(box[1]) - limit)
        while index < len(pool) and centres[name][index] <= float(box[1]) + limit:
            if not taken[index] and all(abs(float(x) - float(y)) <= limit for x, y in zip(box[1:], pool[index][1:])):
                taken[index] = True
                break
            index += 1
        else:
            return False
    return True


def resolve_duplicates(
    items: list[BatchItem], label_conflicts: str, tolerance: float = DEFAULT_TOLERANCE
) -> tuple[list[BatchItem], list[QuarantineEntry]]:
    """Within one batch: (kept items, quarantine entries for the other copies)."""
    by_sha: dict[str, list[BatchItem]] = {}
    for item in items:
        by_sha.setdefault(item["image_sha"], []).append(item)
    kept: list[BatchItem] = []
    quarantine: list[QuarantineEntry] = []
    for copies in by_sha.values():
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        agree = all(same_labels(copy["boxes"], copies[0]["boxes"], tolerance) for copy in copies)
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


def reconcile_classes(registry: Iterable[str], batch_classes: Iterable[Iterable[str]], case_sensitive: bool) -> list[str]:
    """The dataset's class list: the registry (the previous dataset version's classes, in their order,
    so their ids never shift), then each class the batches name that it lacks, in landing order.
    Classes are matched by name (trimmed; case-insensitively unless `case_sensitive`)."""
    classes: list[str] = []
    keys: set[str] = set()
    for name in [*registry, *(name for names in batch_classes for name in names)]:
        if class_key(name, case_sensitive) not in keys:
            keys.add(class_key(name, case_sensitive))
            classes.append(name)
    return classes


def union_of_batches(
    batches: Iterable[tuple[str, BatchManifest]],
    case_sensitive: bool,
    label_conflicts: str,
    tolerance: float = DEFAULT_TOLERANCE,
    registry: Sequence[str] = (),
) -> tuple[list[str], dict[str, dict[str, Any]], int, list[QuarantineEntry]]:
    """Across batches, given (partition, batch manifest) in landing order: class names reconciled by
    name (`reconcile_classes`, after the `registry`) and items keyed by image hash, in order of first
    appearance.

    Returns (classes, items, number of duplicates kept once, quarantine entries of conflicts).
    """
    classes = reconcile_classes(registry, [], case_sensitive)
    items: dict[str, dict[str, Any]] = {}
    conflicted: dict[str, list[dict[str, Any]]] = {}
    duplicates = 0
    for partition, manifest in batches:  # one manifest in memory at a time
        classes = reconcile_classes(classes, [manifest["classes"]], case_sensitive)
        for item in manifest["items"]:
            sha, entry = item["image_sha"], {**item, "batch": partition}
            if sha in conflicted:
                conflicted[sha].append(entry)
            elif sha not in items or label_conflicts == LAST_WRITER_WINS:
                duplicates += sha in items
                items[sha] = entry
            elif same_labels(items[sha]["boxes"], item["boxes"], tolerance, case_sensitive):
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
