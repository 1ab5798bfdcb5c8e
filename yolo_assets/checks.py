"""Asset checks that guard the dataset. Both are blocking: a failure stops downstream assets in the run."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import dagster as dg

LABEL_VALIDITY = dg.AssetCheckSpec(
    "label_validity",
    asset="labeled_batch",
    blocking=True,
    description="Fails when the share of quarantined image/label pairs exceeds max_quarantined_fraction.",
)

CLASS_REGISTRY = dg.AssetCheckSpec(
    "class_registry",
    asset="labeled_batch",
    blocking=True,
    description="Under new_class_policy=reject, fails when the batch names a class the dataset has never seen.",
)

SPLIT_LEAKAGE = dg.AssetCheckSpec(
    "split_leakage",
    asset="processed_images",
    blocking=True,
    description="Fails when the same image (byte-identical, or pixel-identical after decoding) is in two splits.",
)


NEAR_DUPLICATES = dg.AssetCheckSpec(
    "near_duplicates",
    asset="processed_images",
    blocking=False,
    description="Warns about near-duplicate images (perceptual hash within near_duplicate_distance bits) in different splits; lists all pairs.",
)


def quarantined_fraction(manifest: Mapping[str, Any]) -> float:
    total = len(manifest["items"]) + len(manifest["quarantine"])
    return len(manifest["quarantine"]) / total if total else 1.0


def label_validity_passed(manifest: Mapping[str, Any], max_quarantined_fraction: float) -> bool:
    """A batch with no usable item fails, whatever the threshold."""
    return bool(manifest["items"]) and quarantined_fraction(manifest) <= max_quarantined_fraction


def label_validity_result(manifest: Mapping[str, Any], max_quarantined_fraction: float) -> dg.AssetCheckResult:
    reasons = Counter(entry["reason"] for entry in manifest["quarantine"])
    return dg.AssetCheckResult(
        check_name=LABEL_VALIDITY.name,
        passed=label_validity_passed(manifest, max_quarantined_fraction),
        metadata={
            "quarantined_fraction": round(quarantined_fraction(manifest), 4),
            "max_quarantined_fraction": max_quarantined_fraction,
            "num_accepted": len(manifest["items"]),
            "num_quarantined": len(manifest["quarantine"]),
            "quarantine_reasons": dict(reasons),
        },
    )


def class_registry_result(new_classes: list[str], registry: list[str], policy: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=CLASS_REGISTRY.name,
        passed=not new_classes or policy == "extend",
        metadata={
            "new_classes": dg.MetadataValue.json(new_classes),
            "registry": dg.MetadataValue.json(registry),
            "new_class_policy": policy,
        },
    )


def split_leakage_result(manifest: Mapping[str, Any]) -> dg.AssetCheckResult:
    leaks: list[dict[str, Any]] = []
    for field in ("sha", "pixel_sha"):
        first_split: dict[str, str] = {}
        leaked: set[str] = set()
        for item in manifest["items"]:
            if first_split.setdefault(item[field], item["split"]) != item["split"]:
                leaked.add(item[field])
        members: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for item in manifest["items"] if leaked else ():
            if item[field] in leaked:
                members[item[field]].append(item)
        leaks += [
            {"identical_by": field, "splits": sorted({m["split"] for m in group}), "images": [m["sha"][:12] for m in group]}
            for group in members.values()
        ]
    return dg.AssetCheckResult(
        check_name=SPLIT_LEAKAGE.name,
        passed=not leaks,
        metadata={"num_leaks": len(leaks), "leaks": dg.MetadataValue.json(leaks[:50])},
    )


PROMOTION_GATE = dg.AssetCheckSpec(
    "promotion_gate",
    asset="registered_model",
    blocking=True,
    description="The challenger is not worse than the champion on the same val split (or clears the first-model floor).",
)


def near_duplicates_result(manifest: Mapping[str, Any], max_distance: int) -> dg.AssetCheckResult:
    """Near-duplicates are expected (augmented copies); across splits they leak, so that warns.
    The pairs are the ones the split assignment used, listed in the manifest."""
    items = {item["sha"]: item for item in manifest["items"]}
    pairs = [tuple(pair) for pair in manifest["near_duplicates"]]
    across = [(a, b, d) for a, b, d in pairs if items[a]["split"] != items[b]["split"]]
    return dg.AssetCheckResult(
        check_name=NEAR_DUPLICATES.name,
        passed=not across,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "num_pairs": len(pairs),
            "num_across_splits": len(across),
            "max_distance": max_distance,
            "pairs": dg.MetadataValue.json([{"a": a[:12], "b": b[:12], "distance": d, "splits": [items[a]["split"], items[b]["split"]]} for a, b, d in pairs[:50]]),
        },
    )
