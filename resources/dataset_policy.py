"""How the platform treats what labeling tools send: deployment settings, part of every cache key."""

from typing import Any

import dagster as dg
from pydantic import ValidationInfo, field_validator

from yolo_assets.data.formats import ReadLimits

# The choices of the str settings below: they are plain strings (not Literal) so that a deployment can
# fill them with EnvVar, and are checked once Dagster has resolved the variable.
CHOICES = {
    "new_class_policy": ("extend", "reject"),
    "label_conflicts": ("quarantine", "last_writer_wins"),
    "missing_label": ("background", "quarantine"),
}


class DatasetPolicy(dg.ConfigurableResource):
    new_class_policy: str = "extend"
    """`extend` or `reject`: a batch naming a class the dataset has never seen is added, or rejected."""
    case_sensitive_classes: bool = True
    """Class names are compared after trimming whitespace; `Scratch` and `scratch` differ unless False."""
    label_conflicts: str = "quarantine"
    """`quarantine` or `last_writer_wins`: the same image labeled differently (in a batch, or in two)."""
    missing_label: str = "background"
    """`background` or `quarantine`: an image without a label file is a background image (ultralytics'
    reading), or quarantined."""
    coordinate_tolerance: float = 0.01
    """Boxes reaching at most this far outside [0, 1] are clipped; farther, the item is quarantined."""
    honour_export_split: bool = False
    """Keep the export's own train/val/test split instead of our stable hash split."""
    near_duplicate_distance: int = 4
    """Perceptual-hash Hamming distance at or below which two images count as near-duplicates."""
    label_match_tolerance: float = 1e-4
    """Two labelings of the same image are the same when their boxes pair up (same class name) with every
    coordinate within this fraction of the image side: export rounding (~1e-6) is a duplicate, a moved
    box a conflict."""
    max_classes: int = 2048
    """A batch naming more classes than this is refused as a whole (hostile or broken metadata)."""
    max_metadata_bytes: int = 1024**2
    """Size cap of data.yaml, yolo-assets.yaml, classes.txt, obj.names and notes.json: larger, the batch is refused."""
    max_annotation_file_bytes: int = 256 * 1024**2
    """Size cap of a COCO JSON or a data.yaml image-list file: larger, the batch is refused."""
    max_label_bytes: int = 1024**2
    """A YOLO label file larger than this is quarantined (`label_too_large`); the rest of the batch is kept."""
    max_label_boxes: int = 10_000
    """A label (file or COCO image) with more boxes than this is quarantined (`label_too_large`)."""

    def read_limits(self) -> ReadLimits:
        return ReadLimits(self.max_metadata_bytes, self.max_annotation_file_bytes, self.max_classes)

    @field_validator(*CHOICES, mode="before")
    @classmethod
    def _one_of_the_choices(cls, value: Any, info: ValidationInfo) -> Any:
        choices = CHOICES[str(info.field_name)]
        if isinstance(value, dg.EnvVar) or value in choices:
            return value
        raise ValueError(f"{info.field_name} must be one of {', '.join(choices)}, not {value!r}")
