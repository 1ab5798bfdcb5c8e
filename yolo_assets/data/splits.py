"""The train/val split: a pure function of each image's content hash, so an image never changes split
as the data grows; near-duplicates (perceptual hashes a few bits apart) share one split, so augmented
copies never straddle train and val. A group takes the split its earliest member already has in the
previous dataset version (an anchor), and only a group new as a whole follows its smallest hash: a
newly landed near-duplicate whose hash sorts first joins its group's split instead of moving it."""

from collections.abc import Mapping
from typing import Any

import numpy as np


def split_of(image_sha: str, val_fraction: float) -> str:
    return "val" if int(image_sha[:12], 16) / 16**12 < val_fraction else "train"


# Near-duplicates come in small groups (an image and its augmented copies); a hash band shared by
# more images than this carries no information (flat, textureless regions) and would make the
# lookup quadratic.
MAX_BUCKET = 16


def near_duplicate_pairs(records: Mapping[str, Mapping[str, Any]], max_distance: int) -> list[tuple[str, str, int]]:
    """Pairs of images whose perceptual hashes differ in at most `max_distance` bits, sorted.

    Band the 64-bit hash into max_distance + 1 chunks: two hashes that close agree exactly on at
    least one chunk (pigeonhole), so only images sharing a chunk value are compared: no N^2 scan.
    Vectorised: per band, sort the chunk values and pair each image with the next MAX_BUCKET - 1
    images of the same value, which costs a few milliseconds per thousand images.
    """
    shas = sorted(records)
    if len(shas) < 2:
        return []
    hashes = np.array([int(records[sha]["dhash"], 16) for sha in shas], dtype=np.uint64)
    bands = min(max_distance + 1, 64)
    width = -(-64 // bands)
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(2**64 - 1)
    firsts, seconds = [], []
    for band in range(bands):
        values = (hashes >> np.uint64(band * width)) & mask
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sizes = np.diff(np.r_[starts, len(ordered)])
        usable = np.repeat(sizes <= MAX_BUCKET, sizes)  # members of buckets that carry information
        for offset in range(1, min(MAX_BUCKET, len(ordered))):
            same = (ordered[offset:] == ordered[:-offset]) & usable[offset:]
            firsts.append(order[:-offset][same])
            seconds.append(order[offset:][same])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    low, high = np.minimum(first, second), np.maximum(first, second)
    candidates = np.unique(low.astype(np.int64) * len(shas) + high)
    low, high = candidates // len(shas), candidates % len(shas)
    distances = np.bitwise_count(hashes[low] ^ hashes[high])
    close = distances <= max_distance
    return [(shas[a], shas[b], int(d)) for a, b, d in zip(low[close], high[close], distances[close])]


def assign_splits(
    items: dict[str, dict[str, Any]],
    pairs: list[tuple[str, str, int]],
    val_fraction: float,
    honour_export_split: bool,
    anchors: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Our split, or the export's own split.

    Ours: a pure function of the content hash; near-duplicate groups share one split. `anchors` are
    the splits images had in the previous dataset version (same val_fraction): an image that had one
    keeps it, and the rest of its group follows the anchored member that comes first in `items`
    (landing order), so no image ever moves. A group without anchors follows its smallest hash.
    Only a new image bridging two old groups of different splits leaves a pair across splits (the
    near_duplicates check warns), because moving an old image would leak it into evaluation.
    """
    if honour_export_split:
        return {sha: item.get("split_hint") or split_of(sha, val_fraction) for sha, item in items.items()}
    parent = {sha: sha for sha in items}

    def find(sha: str) -> str:
        while parent[sha] != sha:
            parent[sha] = parent[parent[sha]]
            sha = parent[sha]
        return sha

    for a, b, _ in pairs:
        if a in parent and b in parent:
            low, high = sorted((find(a), find(b)))
            parent[high] = low
    anchors = anchors or {}
    group_split: dict[str, str] = {}
    for sha in items:  # landing order: the first anchored member of a group decides
        if sha in anchors:
            group_split.setdefault(find(sha), anchors[sha])
    return {sha: anchors.get(sha) or group_split.get(find(sha)) or split_of(find(sha), val_fraction) for sha in items}
