"""The same image twice: within a batch and across batches, identical labels or a conflict."""

from typing import Any

from yolo_assets.data.duplicates import resolve_duplicates, union_of_batches

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
