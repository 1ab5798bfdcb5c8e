"""How packed objects are grouped into ranged GETs (yolo_assets/core/s3_packs.py)."""

from yolo_assets.core.s3_packs import MAX_RANGE_BYTES, RANGE_GAP_BYTES, PackedObject, plan_ranges


def test_neighbours_share_a_get_and_far_apart_or_other_packs_do_not() -> None:
    wanted = [
        ("b", PackedObject("p1", 100, 50)),
        ("a", PackedObject("p1", 0, 100)),
        ("far", PackedObject("p1", 150 + RANGE_GAP_BYTES + 1, 10)),
        ("other", PackedObject("p2", 0, 10)),
    ]
    ranges = plan_ranges(wanted)
    assert [(r.pack, r.start, r.end, [name for name, _ in r.members]) for r in ranges] == [
        ("p1", 0, 150, ["a", "b"]),
        ("p1", 150 + RANGE_GAP_BYTES + 1, 150 + RANGE_GAP_BYTES + 11, ["far"]),
        ("p2", 0, 10, ["other"]),
    ]


def test_a_small_gap_is_read_through_and_a_range_stays_under_its_cap() -> None:
    size = MAX_RANGE_BYTES // 4
    wanted = [(f"o{i}", PackedObject("p", i * (size + 10), size)) for i in range(6)]
    ranges = plan_ranges(wanted)
    assert [len(r.members) for r in ranges] == [3, 3]
    assert all(r.end - r.start <= MAX_RANGE_BYTES for r in ranges)
    assert ranges[0].end == 2 * (size + 10) + size  # the 10-byte gaps are read, not split on
