"""The promotion rule, one for every comparison of two models on the same images: the offline gate
(challenger vs champion on the val split) and the gray release (canary vs champion on a fresh batch)."""

from collections.abc import Mapping
from typing import Any, Protocol


class GatePolicy(Protocol):
    promotion_tolerance: float
    max_class_ap_drop: float
    first_model_min_map50: float


def promotion_decision(metrics: Mapping[str, Any], policy: GatePolicy) -> tuple[bool, list[str]]:
    """(passed, reasons) for the challenger in `metrics` against the champion evaluated beside it
    (`{"challenger": scores, "champion": scores | None}`, scores as `validate_detector` returns them)."""
    challenger, champion = metrics["challenger"], metrics["champion"]
    if champion is None:
        passed = challenger["mAP50"] >= policy.first_model_min_map50
        return passed, [f"no champion to compare: mAP50 {challenger['mAP50']:.3f} vs floor {policy.first_model_min_map50:.3f}"]
    reasons = []
    floor = champion["mAP50-95"] - policy.promotion_tolerance
    if challenger["mAP50-95"] < floor:
        reasons.append(f"mAP50-95 {challenger['mAP50-95']:.3f} < champion {champion['mAP50-95']:.3f} - tolerance {policy.promotion_tolerance}")
    for name, values in challenger["per_class"].items():
        old = champion["per_class"].get(name, {}).get("ap50_95")
        if old is not None and old - values["ap50_95"] > policy.max_class_ap_drop:
            reasons.append(f"class {name}: AP50-95 dropped {old - values['ap50_95']:.3f} (> {policy.max_class_ap_drop})")
    if not reasons:
        reasons.append(f"mAP50-95 {challenger['mAP50-95']:.3f} vs champion {champion['mAP50-95']:.3f}; no class dropped more than {policy.max_class_ap_drop}")
        return True, reasons
    return False, reasons
