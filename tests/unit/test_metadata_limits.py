"""Hostile or broken batch metadata is refused as a whole with one clear message, cheaply."""

import json
import resource
import time
from pathlib import Path

import pytest

from yolo_assets.data.formats import BatchFormatError, ReadLimits, read_batch
from yolo_assets.data.labels import label_problem

# 300 bytes that PyYAML turns into 9**7 = 4.8 million strings once `names` is used: one 36 MB class name.
BILLION_LAUGHS = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
names: [*g]
"""


def batch(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def refused(root: Path, limits: ReadLimits | None = None) -> str:
    with pytest.raises(BatchFormatError) as error:
        read_batch(root, limits)
    return str(error.value)


def test_billion_laughs_data_yaml_is_refused_at_its_first_alias(tmp_path: Path) -> None:
    assert len(BILLION_LAUGHS) < 400
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    message = refused(batch(tmp_path, {"data.yaml": BILLION_LAUGHS}))
    assert "data.yaml" in message and "alias *a at line 2" in message and len(message) < 200
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50_000  # KiB: nothing was expanded


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"data.yaml": "names: [[a, b], c]\n"}, "class 0 is a list, not a name"),
        ({"data.yaml": "names: {0: {x: 1}}\n"}, "class 0 is a dict, not a name"),
        ({"data.yaml": "names: ['']\n"}, "must be 1-128 printable characters"),
        ({"data.yaml": f"names: [{'x' * 129}]\n"}, "must be 1-128 printable characters"),
        ({"data.yaml": 'names: ["\\e[31mred"]\n'}, "must be 1-128 printable characters"),
        ({"data.yaml": "names: [dent, dent]\n"}, "class name 'dent' appears twice"),
        ({"data.yaml": "names: {zero: a}\n"}, "class ids must be integers"),
        ({"data.yaml": "names: [a]\n" + "#" * (1024**2)}, "data.yaml is larger than the 1,048,576-byte cap"),
        ({"yolo-assets.yaml": "x: &x coco\nformat: *x\n"}, "aliases are refused"),
        ({"classes.txt": "scratch\n" + "s" * 200 + "\n"}, "classes.txt: class 1 name"),
        ({"classes.txt": "a\n", "notes.json": "{" + " " * (1024**2) + "}"}, "notes.json is larger than"),
        ({"obj.names": "a\x00b\n"}, "obj.names: class 0 name"),
        ({"obj.names": b"\xff\xfe\n"}, "obj.names is not UTF-8 text"),
    ],
)
def test_invalid_metadata_is_refused_with_a_clear_reason(tmp_path: Path, files: dict[str, str | bytes], expected: str) -> None:
    assert expected in refused(batch(tmp_path, files))


def test_too_many_classes_and_oversized_coco_json_are_refused(tmp_path: Path) -> None:
    limits = ReadLimits(max_metadata_bytes=1024**2, max_annotation_file_bytes=2_000, max_classes=3)
    assert "names 4 classes, more than max_classes=3" in refused(batch(tmp_path / "a", {"classes.txt": "a\nb\nc\nd\n"}), limits)
    document = {"images": [], "annotations": [], "categories": [{"id": i, "name": f"c{i}"} for i in range(100)]}
    coco = batch(tmp_path / "b", {"annotations/instances_default.json": json.dumps(document)})
    assert "is larger than the 2,000-byte cap" in refused(coco, limits)
    document["categories"] = [{"id": 1, "name": {"nested": "x"}}]
    assert "class 0 is a dict" in refused(batch(tmp_path / "c", {"annotations/instances_default.json": json.dumps(document)}))
    document = {"images": [{"id": 1, "file_name": "a.jpg", "width": "wide", "height": 10}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], "categories": [{"id": 1, "name": "a"}]}
    assert "malformed COCO JSON (ValueError" in refused(batch(tmp_path / "d", {"annotations/instances_default.json": json.dumps(document)}))


def test_label_size_and_box_count_caps() -> None:
    line = b"0 0.5 0.5 0.1 0.1\n"
    assert label_problem(line * 10, 1024, 10) == ""
    assert "11 box lines, more than max_label_boxes=10" in label_problem(line * 11, 1024, 10)
    assert "larger than 1,024 bytes" in label_problem(line * 100, 1024, 1000)
