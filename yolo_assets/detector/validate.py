"""Validation: metrics of a weights file on a dataset's val split, with the plots ultralytics draws."""

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yolo_assets.detector.setup import quiet_third_party_loggers, resolve_device


def validate_detector(
    weights: Path, data_yaml: Path, workdir: Path, *, imgsz: int, batch: int, device: str, plots: bool
) -> dict[str, Any]:
    """Metrics of `weights` on the val split of `data_yaml`; plots (PR curve, confusion matrix) in `workdir`."""
    from ultralytics import YOLO

    quiet_third_party_loggers()

    shutil.rmtree(workdir, ignore_errors=True)
    result = YOLO(str(weights)).val(
        data=str(data_yaml),
        split="val",
        imgsz=imgsz,
        batch=batch,
        device=resolve_device(device),
        plots=plots,
        project=str(workdir.parent),
        name=workdir.name,
        exist_ok=True,
        verbose=False,
    )
    names: Mapping[int, str] = result.names
    per_class = {name: {"ap50": 0.0, "ap50_95": 0.0, "precision": 0.0, "recall": 0.0} for name in names.values()}
    for i, class_index in enumerate(result.box.ap_class_index):
        precision, recall, ap50, ap = result.box.class_result(i)
        per_class[names[int(class_index)]] = {
            "ap50": float(ap50),
            "ap50_95": float(ap),
            "precision": float(precision),
            "recall": float(recall),
        }
    return {
        "mAP50": float(result.box.map50),
        "mAP50-95": float(result.box.map),
        "precision": float(result.box.mp),
        "recall": float(result.box.mr),
        "per_class": per_class,
    }
