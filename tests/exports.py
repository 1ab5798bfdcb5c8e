"""Write the same small labeled set the way different labeling tools export it."""

import io
import json
from pathlib import Path

import yaml
from PIL import Image

from yolo_assets.core.hashing import sha256_bytes
from yolo_assets.data.splits import split_of
from yolo_assets.data.synth import render_image, yolo_label_lines

CLASSES = ("scratch", "spot", "crack")


def samples(count: int, seed: int) -> list[tuple[str, object, list[str], list]]:
    """(stem, PIL image, YOLO label lines, pixel boxes) for `count` synthetic pictures."""
    out = []
    for index in range(count):
        image, boxes = render_image(seed, index, CLASSES)
        out.append((f"img_{seed}_{index:03d}", image, yolo_label_lines(boxes, *image.size), boxes))
    return out


def _write(path: Path, image: Image.Image, lines: list[str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)
    if lines is not None:
        label = path.parent.parent / "labels" / (path.stem + ".txt") if path.parent.name == "images" else path.with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + ("\n" if lines else ""))


def yolo_split_folders(root: Path, count: int, seed: int) -> Path:
    """data.yaml with a names mapping, a `path:` from the labeler's machine, train/val folders."""
    for i, (stem, image, lines, _) in enumerate(samples(count, seed)):
        split = "val" if i % 4 == 0 else "train"
        _write(root / "images" / split / f"{stem}.jpg", image, None)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump(
        {"path": "/home/labeler/datasets/parts", "train": "images/train", "val": "images/val", "names": dict(enumerate(CLASSES))}
    ))
    return root


def yolo_file_lists(root: Path, count: int, seed: int) -> Path:
    """train/val given as .txt lists of ./-relative image paths."""
    stems = []
    for stem, image, lines, _ in samples(count, seed):
        _write(root / "images" / f"{stem}.jpg", image, lines)
        stems.append(stem)
    (root / "train.txt").write_text("".join(f"./images/{s}.jpg\n" for s in stems[1:]))
    (root / "val.txt").write_text(f"./images/{stems[0]}.jpg\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": ["val.txt"], "names": list(CLASSES)}))
    return root


def roboflow(root: Path, count: int, seed: int) -> Path:
    """Roboflow "YOLOv8": train/ valid/ test/ with images/ and labels/, paths written as ../x/images."""
    for i, (stem, image, lines, _) in enumerate(samples(count, seed)):
        split = ("train", "valid", "test")[i % 3]
        _write(root / split / "images" / f"{stem}.jpg", image, lines)
    (root / "data.yaml").write_text(yaml.safe_dump({
        "train": "../train/images", "val": "../valid/images", "test": "../test/images", "nc": 3, "names": list(CLASSES),
    }))
    return root


def cvat_yolo(root: Path, count: int, seed: int) -> Path:
    """CVAT "YOLO 1.1": obj.names, obj.data, obj_train_data/ with images and .txt side by side, train.txt."""
    (root / "obj_train_data").mkdir(parents=True)
    listed = []
    for stem, image, lines, _ in samples(count, seed):
        image.save(root / "obj_train_data" / f"{stem}.jpg", quality=90)
        (root / "obj_train_data" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        listed.append(f"data/obj_train_data/{stem}.jpg")
    (root / "obj.names").write_text("\n".join(CLASSES) + "\n")
    (root / "obj.data").write_text(f"classes = {len(CLASSES)}\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n")
    (root / "train.txt").write_text("\n".join(listed) + "\n")
    return root


def label_studio(root: Path, count: int, seed: int) -> Path:
    """Label Studio YOLO export: classes.txt, notes.json, images/, labels/."""
    for stem, image, lines, _ in samples(count, seed):
        _write(root / "images" / f"{stem}.jpg", image, lines)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)], "info": {"year": 2026}}))
    return root


def coco(root: Path, count: int, seed: int) -> Path:
    """COCO detection: sparse category ids, one iscrowd annotation, the last image unannotated."""
    category_ids = {name: cid for name, cid in zip(CLASSES, (3, 7, 12))}
    document: dict = {"images": [], "annotations": [], "categories": [{"id": cid, "name": n} for n, cid in category_ids.items()]}
    annotation_id = 1
    for image_id, (stem, image, _, boxes) in enumerate(samples(count, seed), start=1):
        (root / "images").mkdir(parents=True, exist_ok=True)
        image.save(root / "images" / f"{stem}.jpg", quality=90)
        document["images"].append({"id": image_id, "file_name": f"{stem}.jpg", "width": image.width, "height": image.height})
        if image_id == count:
            continue  # kept as a background image
        for class_index, (x0, y0, x1, y1) in boxes:
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(image.width, x1), min(image.height, y1)
            document["annotations"].append({
                "id": annotation_id, "image_id": image_id, "category_id": category_ids[CLASSES[class_index]],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })
            annotation_id += 1
    document["annotations"].append({"id": annotation_id, "image_id": 1, "category_id": 3, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 1})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(document))
    return root


def mark_complete(root: Path) -> Path:
    (root / "_SUCCESS").write_text("")
    return root


def same_picture_twice() -> tuple[bytes, bytes]:
    """The same picture as JPEG and as PNG (different bytes, identical pixels) whose content hashes
    fall in different splits."""
    for index in range(200):
        picture, _ = render_image(5, index, ("scratch", "spot", "crack"))
        jpeg = io.BytesIO()
        picture.save(jpeg, format="JPEG", quality=90)
        png = io.BytesIO()
        Image.open(io.BytesIO(jpeg.getvalue())).save(png, format="PNG")
        if split_of(sha256_bytes(jpeg.getvalue()), 0.2) != split_of(sha256_bytes(png.getvalue()), 0.2):
            return jpeg.getvalue(), png.getvalue()
    raise AssertionError("no such picture in 200 tries")
