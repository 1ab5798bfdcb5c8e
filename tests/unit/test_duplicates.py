"""The same image twice: within a batch and across batches, identical labels or a conflict."""

from typing import Any

from yolo_assets.data.duplicates import reconcile_classes, resolve_duplicates, same_labels, union_of_batches

BOX = ["scratch", 0.5, 0.5, 0.2, 0.2]
OTHER = ["spot", 0.5, 0.5, 0.2, 0.2]


def item(source: str, sha: str, *boxes: list[Any]) -> dict[str, Any]:
    return {"source": source, "label_source": source.replace(".jpg", ".txt"), "image_sha": sha, "boxes": list(boxes)}


def test_within_a_batch_identical_copies_keep_one_and_conflicts_keep_none() -> None:
    items = [item("a.jpg", "s1", BOX), item("a_copy.jpg", "s1", BOX), item("b.jpg", "s2", BOX), item("b2.jpg", "s2", OTHER)]
    kept, quarantine = resolve_duplicates(items, "quarantine")
    assert [k["source"] for k in kept] == ["a.jpg"]
    assert sorted((q["image"], q["reason"]) for q in quarantine) == [
        ("a_copy.jpg", "duplicate_image"), ("b.jpg", "label_conflict"), ("b2.jpg", "label_conflict")
    ]


def test_within_a_batch_last_writer_wins_keeps_the_last_copy() -> None:
    kept, quarantine = resolve_duplicates([item("b.jpg", "s2", BOX), item("b2.jpg", "s2", OTHER)], "last_writer_wins")
    assert [k["source"] for k in kept] == ["b2.jpg"]
    assert [q["reason"] for q in quarantine] == ["duplicate_image"] and "labels differ" in quarantine[0]["detail"]


def manifest(classes: list[str], *items: dict[str, Any]) -> dict[str, Any]:
    return {"classes": classes, "items": list(items)}


def test_across_batches_classes_are_reconciled_and_duplicates_counted() -> None:
    batches = [
        ("b1", manifest(["scratch", "spot"], item("a.jpg", "s1", BOX), item("c.jpg", "s3", OTHER))),
        ("b2", manifest(["Spot", "crack"], item("a.jpg", "s1", BOX), item("d.jpg", "s4"))),
    ]
    classes, items, duplicates, conflicts = union_of_batches(iter(batches), case_sensitive=False, label_conflicts="quarantine")
    assert classes == ["scratch", "spot", "crack"]  # "Spot" is "spot" when case does not matter
    assert sorted(items) == ["s1", "s3", "s4"] and duplicates == 1 and conflicts == []
    assert items["s4"]["batch"] == "b2"
    classes, _, _, _ = union_of_batches(iter(batches), case_sensitive=True, label_conflicts="quarantine")
    assert classes == ["scratch", "spot", "Spot", "crack"]


def test_across_batches_a_conflict_removes_every_copy_unless_the_last_writer_wins() -> None:
    batches = [
        ("b1", manifest(["scratch", "spot"], item("a.jpg", "s1", BOX))),
        ("b2", manifest(["scratch", "spot"], item("a.jpg", "s1", OTHER))),
        ("b3", manifest(["scratch", "spot"], item("a2.jpg", "s1", BOX))),
    ]
    _, items, _, conflicts = union_of_batches(batches, case_sensitive=True, label_conflicts="quarantine")
    assert items == {}
    assert [c["image"] for c in conflicts] == ["b1/a.jpg", "b2/a.jpg", "b3/a2.jpg"]
    assert all(c["reason"] == "label_conflict" for c in conflicts)
    _, items, duplicates, conflicts = union_of_batches(batches, case_sensitive=True, label_conflicts="last_writer_wins")
    assert items["s1"]["batch"] == "b3" and duplicates == 2 and conflicts == []


def test_labels_match_as_multisets_within_the_tolerance() -> None:
    yolo = [["scratch", 0.412345, 0.5, 0.2, 0.1], ["spot", 0.1, 0.1, 0.05, 0.05], ["spot", 0.1000004, 0.1, 0.05, 0.05]]
    coco = [["spot", 0.1000011, 0.0999989, 0.05, 0.0500006], ["scratch", 0.4123438, 0.5000012, 0.2, 0.1], ["spot", 0.1, 0.1, 0.05, 0.05]]
    assert same_labels(yolo, coco, 1e-4)  # order and export rounding (~1e-6) do not matter
    assert not same_labels(yolo, coco, 0.0)  # exact comparison: what made every such copy a conflict
    moved = [["scratch", 0.462345, 0.5, 0.2, 0.1], *yolo[1:]]  # one box moved by 5% of the width
    assert not same_labels(yolo, moved, 1e-4)
    assert not same_labels(yolo, yolo[:2], 1e-4)  # a box missing
    assert not same_labels(yolo, [["crack", *yolo[0][1:]], *yolo[1:]], 1e-4)  # another class
    assert same_labels([["Spot", 0.1, 0.1, 0.05, 0.05]], [["spot", 0.1, 0.1, 0.05, 0.05]], 1e-4, case_sensitive=False)
    assert same_labels([], [], 1e-4)


def test_rounding_noise_across_batches_is_a_duplicate_and_a_real_move_a_conflict() -> None:
    noisy = ["scratch", 0.5000012, 0.4999991, 0.2, 0.2000004]
    moved = ["scratch", 0.55, 0.5, 0.2, 0.2]
    batches = [
        ("yolo", manifest(["scratch"], item("a.jpg", "s1", BOX), item("b.jpg", "s2", BOX))),
        ("coco", manifest(["scratch"], item("a.jpg", "s1", noisy), item("b.jpg", "s2", moved))),
    ]
    _, items, duplicates, conflicts = union_of_batches(batches, case_sensitive=True, label_conflicts="quarantine", tolerance=1e-4)
    assert sorted(items) == ["s1"] and items["s1"]["batch"] == "yolo" and duplicates == 1
    assert sorted(c["image"] for c in conflicts) == ["coco/b.jpg", "yolo/b.jpg"]
    kept, quarantine = resolve_duplicates([item("a.jpg", "s1", BOX), item("a2.jpg", "s1", noisy)], "quarantine", 1e-4)
    assert [k["source"] for k in kept] == ["a.jpg"] and [q["reason"] for q in quarantine] == ["duplicate_image"]


def test_class_ids_of_the_registry_never_shift() -> None:
    registry = ["scratch", "spot", "dent", "crack"]
    # The batch that brought "dent" is gone: it keeps its id, and "crack" keeps 3.
    assert reconcile_classes(registry, [["scratch", "spot"], ["crack", "hole"]], True) == [*registry, "hole"]
    batches = [("b1", manifest(["crack", "scratch"], item("a.jpg", "s1", ["crack", 0.5, 0.5, 0.1, 0.1])))]
    classes, _, _, _ = union_of_batches(batches, case_sensitive=True, label_conflicts="quarantine", registry=registry)
    assert classes == registry
    assert reconcile_classes(["Scratch", "scratch", "spot"], [], case_sensitive=False) == ["Scratch", "spot"]
