"""The split and the near-duplicate search: pure functions of content hashes."""

import random
from itertools import combinations

from yolo_assets.data.splits import MAX_BUCKET, assign_splits, near_duplicate_pairs, split_of


def test_near_duplicate_search_finds_exactly_the_pairs_a_full_scan_finds() -> None:
    """The banded, vectorised search against every pair compared directly (flat images excluded the
    same way: a band value shared by more than MAX_BUCKET images carries no information)."""
    rng = random.Random(5)
    hashes: list[int] = []
    for index in range(600):
        if index % 5 == 0 and hashes:  # a near-duplicate of an earlier image: 0 to 4 bits flipped
            value = rng.choice(hashes)
            for bit in rng.sample(range(64), rng.randrange(5)):
                value ^= 1 << bit
        else:
            value = rng.getrandbits(64)
        hashes.append(value)
    hashes += [0] * (MAX_BUCKET + 2)  # textureless images: all hash to zero
    records = {f"{rng.getrandbits(256):064x}": {"dhash": f"{value:016x}"} for value in hashes}
    found = near_duplicate_pairs(records, 4)
    flat = {sha for sha, record in records.items() if int(record["dhash"], 16) == 0}
    expected = sorted(
        (a, b, bin(int(records[a]["dhash"], 16) ^ int(records[b]["dhash"], 16)).count("1"))
        for a, b in combinations(sorted(records), 2)
        if bin(int(records[a]["dhash"], 16) ^ int(records[b]["dhash"], 16)).count("1") <= 4
    )
    assert len(expected) > 100
    assert [pair for pair in found if not {pair[0], pair[1]} <= flat] == [p for p in expected if not {p[0], p[1]} <= flat]
    assert near_duplicate_pairs(dict(list(records.items())[:1]), 4) == []


def test_the_split_is_a_pure_function_of_the_content_hash() -> None:
    shas = [f"{random.Random(i).getrandbits(256):064x}" for i in range(2000)]
    splits = [split_of(sha, 0.2) for sha in shas]
    assert splits == [split_of(sha, 0.2) for sha in shas]
    assert 0.17 < splits.count("val") / len(shas) < 0.23
    assert split_of("0" * 64, 0.2) == "val" and split_of("f" * 64, 0.2) == "train"


def test_near_duplicates_follow_the_smallest_hash_of_their_group() -> None:
    # a ~ b ~ c chained by near-duplicate pairs; "1..." hashes to val, "e..." to train.
    a, b, c, lone = "1" + "0" * 63, "e" + "0" * 63, "e" + "1" * 63, "f" + "0" * 63
    items: dict[str, dict[str, str | None]] = {sha: {"split_hint": None} for sha in (a, b, c, lone)}
    splits = assign_splits(items, [(a, b, 2), (b, c, 1)], val_fraction=0.2, honour_export_split=False)
    assert splits == {a: "val", b: "val", c: "val", lone: "train"}


def test_the_export_split_is_kept_when_asked_and_filled_in_where_missing() -> None:
    items: dict[str, dict[str, str | None]] = {"1" + "0" * 63: {"split_hint": "train"}, "f" + "0" * 63: {"split_hint": None}}
    splits = assign_splits(items, [], val_fraction=0.2, honour_export_split=True)
    assert splits == {"1" + "0" * 63: "train", "f" + "0" * 63: "train"}


def test_a_new_near_duplicate_whose_hash_sorts_first_joins_the_old_split() -> None:
    """The old image is train; its new near-duplicate's hash is smaller and alone would be val: with
    the previous version's splits as anchors, nothing moves and the pair stays together."""
    old = next(f"{n:012x}" + "0" * 52 for n in range(16**11, 16**12, 16**10) if split_of(f"{n:012x}", 0.2) == "train")
    new = "0" * 64
    assert new < old and split_of(new, 0.2) == "val" and split_of(old, 0.2) == "train"
    items: dict[str, dict[str, object]] = {old: {}, new: {}}  # landing order: the old image first
    pairs = [(new, old, 2)]
    assert assign_splits(items, pairs, 0.2, False) == {old: "val", new: "val"}  # the old rule moved it
    assert assign_splits(items, pairs, 0.2, False, anchors={old: "train"}) == {old: "train", new: "train"}
    # A group new as a whole still follows its smallest hash; an anchored image keeps its split.
    assert assign_splits({new: {}, old: {}}, pairs, 0.2, False, anchors={}) == {new: "val", old: "val"}
    lone = "f" * 64
    assert assign_splits({lone: {}}, [], 0.2, False, anchors={lone: "val"}) == {lone: "val"}
