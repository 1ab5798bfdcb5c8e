"""The ultralytics-facing layer: offline settings, training, reproducible checkpoints, validation.

Assets call these functions; nothing here knows about Dagster, so the same code serves the tests, the
benchmarks and the MLflow pyfunc model.
"""

import math
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Set before ultralytics is imported anywhere: no network probes, settings kept in our home folder.
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_VERBOSE", "false")  # per-epoch progress goes to the Dagster log instead


def configure_ultralytics(config_dir: Path) -> None:
    """Offline, no telemetry, no third-party loggers (our own callback logs to MLflow)."""
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    from ultralytics import settings

    wanted = {key: False for key in ("sync", "mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb", "hub")}
    if any(settings.get(key) != value for key, value in wanted.items() if key in settings):
        settings.update({key: value for key, value in wanted.items() if key in settings})


def ultralytics_version() -> str:
    from ultralytics import __version__

    return __version__


def resolve_device(device: str) -> str:
    """`auto` = the first CUDA device when there is one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def epoch_metrics(trainer: Any) -> dict[str, float]:
    """One epoch's losses, validation metrics and learning rates, with MLflow-safe names."""
    values: dict[str, Any] = {}
    if trainer.tloss is not None:
        values.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
    values.update(trainer.metrics or {})
    values.update(getattr(trainer, "lr", {}) or {})
    clean = {}
    for name, value in values.items():
        number = float(value)
        if math.isfinite(number):
            clean[name.replace("(", "").replace(")", "")] = number
    return clean


def _normalize_train_args(args: dict[str, Any]) -> dict[str, Any]:
    local = {"project": None, "name": None, "save_dir": None}  # where it ran, not what it is
    return {
        k: local[k] if k in local else (Path(v).name if k in {"data", "model"} and isinstance(v, str) else v)
        for k, v in args.items()
    }


def _zero_serialization_id(path: Path) -> None:
    """torch.save writes a random `.data/serialization_id` (metadata only); overwrite it with zeros in place."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entry = next((i for i in archive.infolist() if i.filename.endswith(".data/serialization_id")), None)
        central_dir = archive.start_dir  # type: ignore[attr-defined]
    if entry is None or entry.compress_type != zipfile.ZIP_STORED:
        return
    replacement = b"0" * entry.file_size
    name_length, extra_length = struct.unpack_from("<HH", data, entry.header_offset + 26)
    start = entry.header_offset + 30 + name_length + extra_length
    data[start : start + entry.file_size] = replacement
    crc = zlib.crc32(replacement)
    struct.pack_into("<I", data, entry.header_offset + 14, crc)
    offset = central_dir
    while data[offset : offset + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, offset + 28)
        if data[offset + 46 : offset + 46 + name_len].decode() == entry.filename:
            struct.pack_into("<I", data, offset + 16, crc)
            break
        offset += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(data))


def canonicalize_checkpoint(path: Path) -> None:
    """Drop what differs between two identical trainings (timestamps, git info, paths, wall times,
    torch's random serialization id), so that the sha256 of the file is a true content version."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["date"] = None
    checkpoint["git"] = None
    results = checkpoint.get("train_results")
    if isinstance(results, dict):
        checkpoint["train_results"] = {k: v for k, v in results.items() if k != "time"}
    if isinstance(checkpoint.get("train_args"), dict):
        checkpoint["train_args"] = _normalize_train_args(checkpoint["train_args"])
    for key in ("model", "ema"):
        module = checkpoint.get(key)
        if module is not None and isinstance(getattr(module, "args", None), dict):
            module.args = _normalize_train_args(module.args)
    torch.save(checkpoint, path)
    _zero_serialization_id(path)


def train_detector(
    data_yaml: Path,
    workdir: Path,
    *,
    model: str,
    epochs: int,
    imgsz: int,
    batch: int,
    mosaic: float,
    warmup_epochs: float,
    device: str,
    seed: int,
    deterministic: bool,
    workers: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: Path | None = None,
) -> Path:
    """Train in `workdir` (never ./runs); returns the run folder with weights/best.pt and weights/last.pt.

    With `checkpoint`, last.pt is copied there (atomically) after every epoch, and when that file
    already exists the training resumes from it instead of starting over.
    """
    from ultralytics import YOLO

    resume = checkpoint is not None and checkpoint.exists()
    detector = YOLO(str(checkpoint) if resume else model)
    if on_epoch is not None:
        detector.add_callback("on_fit_epoch_end", lambda trainer: on_epoch(trainer.epoch + 1, epoch_metrics(trainer)))
    if checkpoint is not None:
        detector.add_callback("on_model_save", lambda trainer: _keep_checkpoint(Path(trainer.last), checkpoint))
    shutil.rmtree(workdir, ignore_errors=True)
    if resume:
        detector.train(resume=True, data=str(data_yaml), save_dir=str(workdir), workers=workers,
                       device=resolve_device(device), plots=True)
    else:
        _train_from_start(detector, data_yaml, workdir, epochs=epochs, imgsz=imgsz, batch=batch, mosaic=mosaic,
                          warmup_epochs=warmup_epochs, device=device, seed=seed, deterministic=deterministic, workers=workers)
    for weights in ("best.pt", "last.pt"):
        canonicalize_checkpoint(workdir / "weights" / weights)
    return workdir


def checkpoint_epoch(checkpoint: Path) -> int:
    """Epochs completed in a saved checkpoint (ultralytics stores the 0-based epoch index)."""
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]) + 1


def _keep_checkpoint(last: Path, checkpoint: Path) -> None:
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    shutil.copyfile(last, partial)
    os.replace(partial, checkpoint)


def _train_from_start(detector: Any, data_yaml: Path, workdir: Path, *, epochs: int, imgsz: int, batch: int,
                      mosaic: float, warmup_epochs: float, device: str, seed: int, deterministic: bool, workers: int) -> None:
    detector.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        mosaic=mosaic,
        warmup_epochs=warmup_epochs,
        device=resolve_device(device),
        seed=seed,
        deterministic=deterministic,
        workers=workers,
        project=str(workdir.parent),
        name=workdir.name,
        exist_ok=True,
        plots=True,
        verbose=False,
        amp=resolve_device(device) != "cpu",
    )


def validate_detector(
    weights: Path, data_yaml: Path, workdir: Path, *, imgsz: int, batch: int, device: str, plots: bool
) -> dict[str, Any]:
    """Metrics of `weights` on the val split of `data_yaml`; plots (PR curve, confusion matrix) in `workdir`."""
    from ultralytics import YOLO

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
