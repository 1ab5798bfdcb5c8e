"""A dataset version's manifest (`manifest.json` of a `processed_images` version): its classes, the
settings it was built with, one row per image with its split and labels, and the near-duplicate pairs
the split assignment used. Built and written by `assets/dataset.py`, read through its
`read_dataset_manifest` by training, registration, lineage and `yolo-assets diff`. Dagster-free.
"""

from typing import Any, TypedDict

from yolo_assets.core.fileio import object_relpath


class DatasetRow(TypedDict):
    sha: str
    """sha256 of the image bytes as landed (the image's identity)."""
    split: str
    file_sha: str
    """sha256 of the preprocessed image file."""
    pixel_sha: str
    """sha256 of the decoded pixels: byte-different copies of one picture share it."""
    dhash: str
    width: int
    height: int
    labels: list[list[float]]
    """[class id, cx, cy, w, h] in the dataset's class ids."""
    pair: str
    """Content address of the image/label pair folder under the store's dataset-items."""


class DatasetManifest(TypedDict):
    classes: list[str]
    settings: dict[str, Any]
    """ProcessedImagesConfig's output settings."""
    policy: dict[str, Any]
    """DatasetPolicy as built with."""
    items: list[DatasetRow]
    near_duplicates: list[list[Any]]
    """[sha a, sha b, Hamming distance] pairs within near_duplicate_distance."""
    retracted_batches: dict[str, str]
    """batch -> the data version a person retracted (reasons and times are in the metadata)."""


def label_text(labels: list[list[float]]) -> str:
    """A row's labels as a YOLO label file."""
    return "".join(f"{int(l[0])} {l[1]:.6f} {l[2]:.6f} {l[3]:.6f} {l[4]:.6f}\n" for l in labels)


def pair_files(row: DatasetRow) -> list[str]:
    """The two files of a dataset row's image/label pair, relative to the dataset-items root."""
    folder = object_relpath(row["pair"])
    return [f"{folder}/images/{row['sha']}.jpg", f"{folder}/labels/{row['sha']}.txt"]


def dataset_diff(old: DatasetManifest, new: DatasetManifest) -> dict[str, Any]:
    """Images added / removed / relabeled between two dataset manifests, and box counts per class."""

    def named(manifest: DatasetManifest, row: DatasetRow) -> list[list[Any]]:
        return sorted([manifest["classes"][int(l[0])], *l[1:]] for l in row["labels"])

    before = {row["sha"]: row for row in old["items"]}
    after = {row["sha"]: row for row in new["items"]}
    same_classes = old["classes"] == new["classes"]
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    relabeled = sorted(
        sha
        for sha in before.keys() & after.keys()
        if (not same_classes or before[sha]["labels"] != after[sha]["labels"])
        and named(old, before[sha]) != named(new, after[sha])
    )
    per_class: dict[str, dict[str, int]] = {}
    for shas, manifest, rows, field in ((added, new, after, "added"), (removed, old, before, "removed"), (relabeled, new, after, "relabeled")):
        for sha in shas:
            for name in {box[0] for box in named(manifest, rows[sha])} or {"(background)"}:
                per_class.setdefault(name, {"added": 0, "removed": 0, "relabeled": 0})[field] += 1
    return {
        "added": len(added),
        "removed": len(removed),
        "relabeled": len(relabeled),
        "images_per_class": per_class,
        "examples": {"added": added[:5], "removed": removed[:5], "relabeled": relabeled[:5]},
    }
