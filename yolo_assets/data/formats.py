"""Labeling-tool exports, detected per batch and normalised to one item list.

Supported: ultralytics YOLO (`data.yaml`; Roboflow "YOLOv8" exports are this with train/valid/test
folders), CVAT "YOLO 1.1" (`obj.names`, `obj_train_data/`), Label Studio YOLO (`classes.txt`,
`images/`, `labels/`) and COCO detection JSON (`instances_*.json`). A `yolo-assets.yaml` file at the
batch root forces one (`format: coco`). Every item keeps its image path, its YOLO label (a file, or
lines converted from COCO) and the export's own split, if any.

Batch metadata comes from whoever labeled the batch, so it is read defensively (`ReadLimits`): every
metadata file has a size cap, YAML aliases are refused (a 300-byte "billion laughs" data.yaml expands
to a 36 MB class name), and class names must be short printable scalars, not too many of them. A
batch that breaks one of these is refused as a whole with one `BatchFormatError`.
"""

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolo_assets.data.quarantine import QuarantineEntry, QuarantineReason, quarantine_entry

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FORMAT_FILE = "yolo-assets.yaml"
FORMATS = ("yolo", "cvat", "label_studio", "coco")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
MAX_CLASS_NAME_LENGTH = 128


class BatchFormatError(ValueError):
    """The batch as a whole cannot be read (no recognisable export, no class names, hostile metadata...)."""


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what a batch's metadata may cost to read (DatasetPolicy fields)."""

    max_metadata_bytes: int = 1024**2
    """data.yaml, yolo-assets.yaml, classes.txt, obj.names, notes.json."""
    max_annotation_file_bytes: int = 256 * 1024**2
    """COCO JSON and data.yaml image-list files, which grow with the batch."""
    max_classes: int = 2048


def read_capped(path: Path, limit: int, root: Path) -> str:
    """A metadata file's text, refused (not truncated) when it is larger than `limit` bytes."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    if len(data) > limit:
        raise BatchFormatError(f"{name} is larger than the {limit:,}-byte cap for batch metadata")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BatchFormatError(f"{name} is not UTF-8 text") from error


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader refusing aliases: no legitimate export needs them, and nested aliases expand
    exponentially once the document is used ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise BatchFormatError(f"YAML alias *{event.anchor} at line {event.start_mark.line + 1}: aliases are refused in batch metadata")
        return super().compose_node(parent, index)


def load_yaml(path: Path, limits: ReadLimits, root: Path) -> Any:
    text = read_capped(path, limits.max_metadata_bytes, root)
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass: no arbitrary objects
    except BatchFormatError as error:
        raise BatchFormatError(f"{path.name}: {error}") from None
    except yaml.YAMLError as error:
        raise BatchFormatError(f"{path.name} is not valid YAML: {str(error)[:300]}") from error


def checked_class_names(names: list[Any], source: str, limits: ReadLimits, unique: bool = True) -> list[str]:
    """Class names as trimmed strings; refuses containers, empty, overlong or unprintable names,
    repeated ones when `unique`, and more than `max_classes` of them."""
    if len(names) > limits.max_classes:
        raise BatchFormatError(f"{source} names {len(names):,} classes, more than max_classes={limits.max_classes:,}")
    cleaned: list[str] = []
    for index, name in enumerate(names):
        if name is None or not isinstance(name, (str, int, float)):
            raise BatchFormatError(f"{source}: class {index} is a {type(name).__name__}, not a name")
        text = clean_name(name)
        if not text or len(text) > MAX_CLASS_NAME_LENGTH or not text.isprintable():
            shown = text[:40] + ("..." if len(text) > 40 else "")
            raise BatchFormatError(
                f"{source}: class {index} name {shown!r} must be 1-{MAX_CLASS_NAME_LENGTH} printable characters"
            )
        if unique and text in cleaned:
            raise BatchFormatError(f"{source}: class name {text!r} appears twice")
        cleaned.append(text)
    return cleaned


@dataclass(frozen=True)
class BatchItem:
    image: str | None  # relative to the batch root
    label: str | None = None  # a YOLO label file, relative to the batch root
    label_text: str | None = None  # YOLO lines converted from another format
    split_hint: str | None = None  # the export's own split


@dataclass
class BatchLayout:
    format: str
    class_names: list[str]
    items: list[BatchItem]
    # Entries found while reading (links leaving the batch, COCO annotations without an image...).
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Files:
    """The batch's regular files (relative paths); links that leave the batch are set aside, unread."""

    root: Path
    paths: set[Path] = field(default_factory=set)
    escaping_links: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, root: Path) -> "_Files":
        files = cls(root)
        resolved_root = root.resolve()
        for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not follow directory links
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                relative = path.relative_to(root)
                if name.startswith(".") or any(part.startswith(".") for part in relative.parts):
                    continue
                if path.is_symlink():
                    target = path.resolve()
                    if not target.is_relative_to(resolved_root):
                        files.escaping_links.append(relative.as_posix())
                        continue
                    if name in dirnames:
                        continue  # a link to a folder inside the batch: its files are walked there
                if name in filenames and path.is_file():
                    files.paths.add(relative)
        return files

    def images(self, under: Path | None = None) -> list[Path]:
        return sorted(
            p for p in self.paths if p.suffix.lower() in IMAGE_SUFFIXES and (under is None or p.is_relative_to(under))
        )

    def quarantine(self) -> list[QuarantineEntry]:
        return [
            quarantine_entry(path, None, QuarantineReason.SYMLINK_OUTSIDE_BATCH, "symbolic link to a file outside the batch: not read")
            for path in self.escaping_links
        ]


def clean_name(name: Any) -> str:
    return str(name).strip()


def class_key(name: str, case_sensitive: bool) -> str:
    """How class names are compared across batches (after trimming)."""
    return name if case_sensitive else name.casefold()


def split_from_path(path: Path) -> str | None:
    for part in reversed(path.parts[:-1]):
        alias = SPLIT_ALIASES.get(part.lower())
        if alias:
            return alias
    return None


def label_path_for(image_rel: Path) -> Path:
    """Ultralytics' rule: the last `images` folder becomes `labels`, the suffix becomes .txt."""
    parts = list(image_rel.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _pair_with_mirrored_labels(files: _Files, images: list[Path], split_of: dict[Path, str | None]) -> list[BatchItem]:
    """Images with their `labels/` twins; label files nobody claims become `image_missing` items."""
    labels = {p for p in files.paths if p.suffix == ".txt" and "labels" in p.parts[:-1]}
    items = []
    for image in images:
        label = label_path_for(image)
        items.append(BatchItem(image.as_posix(), label.as_posix() if label in labels else None, split_hint=split_of.get(image)))
        labels.discard(label)
    items += [BatchItem(None, orphan.as_posix(), split_hint=split_from_path(orphan)) for orphan in sorted(labels)]
    return items


def _names_from_yaml(data: dict[str, Any], source: str, limits: ReadLimits) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        if len(names) > limits.max_classes:
            return checked_class_names(list(names.values()), source, limits)  # refused: too many
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as error:
            raise BatchFormatError(f"{source}: class ids must be integers 0..n-1") from error
        if ids != list(range(len(ids))):
            raise BatchFormatError(f"{source}: class ids must be 0..n-1, got {ids[:20]}")
        return checked_class_names([names[k] if k in names else names[str(k)] for k in ids], source, limits)
    if isinstance(names, list) and names:
        return checked_class_names(names, source, limits)
    raise BatchFormatError(f"{source} has no class 'names' list or mapping")


def _inside(root: Path, candidate: Path) -> Path | None:
    resolved = candidate.resolve()
    return resolved.relative_to(root.resolve()) if resolved.is_relative_to(root.resolve()) else None


def _resolve_entry(root: Path, base: Path, entry: str) -> Path | None:
    """A data.yaml train/val/test entry as a path inside the batch. Roboflow writes `../train/images`
    relative to the yaml although the folder sits beside it, so leading `../` are retried without."""
    stripped = re.sub(r"^(\.\./)+", "", entry.replace("\\", "/"))
    for candidate in (Path(entry) if Path(entry).is_absolute() else base / entry, base / stripped, root / stripped):
        inside = _inside(root, candidate)
        if inside is not None and (root / inside).exists():
            return inside
    return None


def read_yolo(root: Path, files: _Files, limits: ReadLimits) -> BatchLayout:
    data_yaml = next((root / n for n in ("data.yaml", "data.yml") if (root / n).is_file()), None)
    if data_yaml is None:
        raise BatchFormatError("no data.yaml at the batch root: not an ultralytics YOLO export")
    data = load_yaml(data_yaml, limits, root) or {}
    if not isinstance(data, dict):
        raise BatchFormatError(f"{data_yaml.name} is not a mapping")
    names = _names_from_yaml(data, data_yaml.name, limits)
    declared = str(data.get("path") or "")
    base = root
    if declared:
        inside = _resolve_entry(root, root, declared)
        base = root / inside if inside is not None else root  # an absolute path from the labeler's machine
    split_of: dict[Path, str | None] = {}
    for key in ("train", "val", "test"):
        entries = data.get(key) or []
        for entry in [entries] if isinstance(entries, str) else entries:
            resolved = _resolve_entry(root, base, str(entry))
            if resolved is None:
                continue
            if (root / resolved).is_dir():
                chosen = files.images(resolved)
            else:  # a .txt file listing images, relative to the dataset root or "./"-prefixed
                lines = read_capped(root / resolved, limits.max_annotation_file_bytes, root).splitlines()
                chosen = [p for p in (_resolve_entry(root, base, line.strip()) for line in lines if line.strip()) if p]
            for image in chosen:
                split_of.setdefault(image, key)
    images = sorted(split_of) or [p for p in files.images() if "images" in p.parts[:-1]]
    if not split_of:
        split_of = {image: split_from_path(image) for image in images}
    return BatchLayout("yolo", names, _pair_with_mirrored_labels(files, images, split_of))


def _names_file(root: Path, name: str, limits: ReadLimits) -> list[str]:
    """One class name per line (CVAT obj.names, Label Studio classes.txt); blank lines skipped."""
    lines = [line for line in read_capped(root / name, limits.max_metadata_bytes, root).splitlines() if line.strip()]
    return checked_class_names(lines, name, limits)


def read_cvat(root: Path, files: _Files, limits: ReadLimits) -> BatchLayout:
    names = _names_file(root, "obj.names", limits)
    if not names:
        raise BatchFormatError("obj.names lists no class")
    items = []
    images = [p for p in files.images() if p.parts[0].startswith("obj_")]
    labels = {p for p in files.paths if p.suffix == ".txt" and p.parts[0].startswith("obj_")}
    for image in images:
        label = image.with_suffix(".txt")
        split = {"obj_train_data": "train", "obj_valid_data": "val", "obj_test_data": "test"}.get(image.parts[0])
        items.append(BatchItem(image.as_posix(), label.as_posix() if label in labels else None, split_hint=split))
        labels.discard(label)
    items += [BatchItem(None, orphan.as_posix()) for orphan in sorted(labels)]
    return BatchLayout("cvat", names, items)


def read_label_studio(root: Path, files: _Files, limits: ReadLimits) -> BatchLayout:
    names = _names_file(root, "classes.txt", limits)
    if not names:
        raise BatchFormatError("classes.txt lists no class")
    if (root / "notes.json").is_file():  # not used, but refused like any metadata when oversized
        read_capped(root / "notes.json", limits.max_metadata_bytes, root)
    images = [p for p in files.images() if "images" in p.parts[:-1]]
    return BatchLayout("label_studio", names, _pair_with_mirrored_labels(files, images, {}))


def _coco_files(root: Path, files: _Files) -> list[Path]:
    candidates = sorted(p for p in files.paths if p.suffix == ".json" and p.name != "notes.json")
    preferred = [p for p in candidates if p.name.startswith("instances")]
    return preferred or candidates


def _looks_like_coco(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return '"annotations"' in head or '"images"' in head or '"categories"' in head


def read_coco(root: Path, files: _Files, limits: ReadLimits) -> BatchLayout:
    json_files = [p for p in _coco_files(root, files) if _looks_like_coco(root / p)]
    if not json_files:
        raise BatchFormatError("no COCO annotation JSON (images / annotations / categories)")
    documents = []
    for json_file in json_files:
        try:
            document = json.loads(read_capped(root / json_file, limits.max_annotation_file_bytes, root))
        except json.JSONDecodeError as error:
            raise BatchFormatError(f"{json_file} is not valid JSON: {error}") from error
        if not isinstance(document, dict):
            raise BatchFormatError(f"{json_file} is not a COCO document (a JSON object)")
        documents.append((json_file, document))
    try:
        return _coco_layout(root, files, documents, limits)
    except BatchFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as error:  # a field of the wrong shape
        raise BatchFormatError(f"malformed COCO JSON ({type(error).__name__}: {str(error)[:200]})") from error


def _coco_layout(root: Path, files: _Files, documents: list[tuple[Path, dict[str, Any]]], limits: ReadLimits) -> BatchLayout:
    image_by_name: dict[str, Path] = {}
    for image_path in files.images():
        image_by_name.setdefault(image_path.name, image_path)
    # Category ids may be sparse and differ between files: classes are reconciled by name.
    names: list[str] = []
    for json_file, document in documents:
        categories = sorted(document.get("categories", []), key=lambda c: c["id"])
        for name in checked_class_names([c["name"] for c in categories], json_file.name, limits, unique=False):
            if name not in names:
                names.append(name)
    if len(names) > limits.max_classes:
        raise BatchFormatError(f"the COCO files name {len(names):,} classes, more than max_classes={limits.max_classes:,}")
    items, quarantine, crowd = [], [], 0
    for json_file, document in documents:
        class_of = {c["id"]: names.index(clean_name(c["name"])) for c in document.get("categories", [])}
        split = SPLIT_ALIASES.get(re.sub(r"^instances_|\d+$", "", json_file.stem).lower())
        boxes: dict[Any, list[str]] = {image["id"]: [] for image in document.get("images", [])}
        images = {image["id"]: image for image in document.get("images", [])}
        for annotation in document.get("annotations", []):
            if annotation.get("iscrowd"):
                crowd += 1
                continue
            image = images.get(annotation.get("image_id"))
            if image is None or annotation.get("category_id") not in class_of:
                quarantine.append(quarantine_entry(None, json_file.as_posix(), QuarantineReason.ANNOTATION_ORPHAN,
                                                   f"annotation {annotation.get('id')} names an unknown image or category"))
                continue
            x, y, w, h = (float(v) for v in annotation["bbox"])
            width, height = float(image["width"]), float(image["height"])
            boxes[image["id"]].append(
                f"{class_of[annotation['category_id']]} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} {h / height:.6f}"
            )
        for image_id, image in images.items():
            name = str(image["file_name"])
            found = next(
                (p for p in (_inside(root, root / json_file.parent / name), _inside(root, root / name)) if p and p in files.paths),
                image_by_name.get(Path(name).name),
            )
            if found is None:
                quarantine.append(quarantine_entry(name, json_file.as_posix(), QuarantineReason.IMAGE_MISSING,
                                                   f"{json_file.name} lists an image that is not in the batch"))
                continue
            items.append(BatchItem(found.as_posix(), None, "\n".join(boxes[image_id]), split_hint=split))
    return BatchLayout("coco", names, items, quarantine, {"iscrowd_excluded": crowd})


READERS = {"yolo": read_yolo, "cvat": read_cvat, "label_studio": read_label_studio, "coco": read_coco}


def detect_format(root: Path, files: _Files, limits: ReadLimits) -> str:
    forced = root / FORMAT_FILE
    if forced.is_file():
        loaded = load_yaml(forced, limits, root)
        chosen = loaded.get("format") if isinstance(loaded, dict) else None
        if chosen not in READERS:
            raise BatchFormatError(f"{FORMAT_FILE} names format {chosen!r}; supported: {', '.join(FORMATS)}")
        return chosen
    if (root / "obj.names").is_file():
        return "cvat"
    if (root / "classes.txt").is_file() and not (root / "data.yaml").is_file():
        return "label_studio"
    if (root / "data.yaml").is_file() or (root / "data.yml").is_file():
        return "yolo"
    if any(_looks_like_coco(root / p) for p in _coco_files(root, files)):
        return "coco"
    raise BatchFormatError(
        "unrecognised export: expected data.yaml (YOLO/Roboflow), obj.names (CVAT YOLO 1.1), "
        f"classes.txt (Label Studio) or a COCO instances JSON, or a {FORMAT_FILE} naming the format"
    )


def read_batch(root: Path, limits: ReadLimits | None = None) -> BatchLayout:
    limits = limits or ReadLimits()
    files = _Files.scan(root)
    layout = READERS[detect_format(root, files, limits)](root, files, limits)
    layout.quarantine = files.quarantine() + layout.quarantine
    layout.notes["format_counts"] = dict(Counter(item.split_hint or "unsplit" for item in layout.items if item.image))
    return layout
