"""A batch's manifest (`manifest.json` of a `labeled_batch` version): what the batch holds once read,
item by item, and what was quarantined. Written here (`write_batch_artifact`, with the quarantined
files themselves); read through `assets/ingest.read_batch_manifest` by the dataset build and the
fresh-batch scoring. Dagster-free.
"""

import json
import shutil
from pathlib import Path
from typing import Any, TypedDict

from yolo_assets.core.fileio import atomic_write_bytes
from yolo_assets.core.hashing import canonical_json
from yolo_assets.core.versioning import MANIFEST
from yolo_assets.data.quarantine import QuarantineEntry, QuarantineReason, quarantine_table


class BatchItem(TypedDict):
    """One accepted image/label pair. Paths are relative to the batch; bytes are in the store's blobs
    under their sha256."""

    source: str
    label_source: str | None
    image_sha: str
    label_sha: str | None
    width: int
    height: int
    split_hint: str | None
    """The split the export named (a folder such as images/val), if any."""
    boxes: list[list[Any]]
    """[class name, cx, cy, w, h], coordinates normalised to the image."""


class BatchManifest(TypedDict):
    format: str
    """The export format read: yolo, coco, ..."""
    classes: list[str]
    items: list[BatchItem]
    quarantine: list[QuarantineEntry]
    notes: dict[str, Any]
    """What the reader noticed or fixed (counts by kind, and the format's own notes)."""


def write_batch_artifact(staging: Path, root: Path, manifest: BatchManifest) -> None:
    """The manifest, the quarantine as JSON and Markdown, and copies of the quarantined files from the
    batch at `root` (nothing is lost)."""
    atomic_write_bytes(staging / MANIFEST, canonical_json(manifest), durable=True)
    (staging / "quarantine.json").write_text(json.dumps(manifest["quarantine"], indent=1))
    (staging / "quarantine.md").write_text(quarantine_table(manifest["quarantine"], limit=None))
    for entry in manifest["quarantine"]:
        # An oversized label stays in the landing zone only: copying it would bloat every artifact read.
        oversized = entry["reason"] == QuarantineReason.LABEL_TOO_LARGE
        for relative in (entry["image"], None if oversized else entry["label"]):
            if not relative:
                continue
            source = root / relative
            # Never follow a link (it may point outside the batch); never copy a folder.
            if not source.is_symlink() and source.is_file() and source.resolve().is_relative_to(root.resolve()):
                target = staging / "quarantine" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / relative, target)
