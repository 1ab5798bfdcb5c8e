"""How the platform treats what labeling tools send: deployment settings, part of every cache key."""

from typing import Literal

import dagster as dg


class DatasetPolicy(dg.ConfigurableResource):
    new_class_policy: Literal["extend", "reject"] = "extend"
    """A batch naming a class the dataset has never seen: add it, or reject the batch."""
    case_sensitive_classes: bool = True
    """Class names are compared after trimming whitespace; `Scratch` and `scratch` differ unless False."""
    label_conflicts: Literal["quarantine", "last_writer_wins"] = "quarantine"
    """The same image labeled differently (twice in a batch, or in two batches)."""
    missing_label: Literal["background", "quarantine"] = "background"
    """An image without a label file: a background image (ultralytics' reading), or quarantined."""
    coordinate_tolerance: float = 0.01
    """Boxes reaching at most this far outside [0, 1] are clipped; farther, the item is quarantined."""
    honour_export_split: bool = False
    """Keep the export's own train/val/test split instead of our stable hash split."""
    near_duplicate_distance: int = 4
    """Perceptual-hash Hamming distance at or below which two images count as near-duplicates."""
