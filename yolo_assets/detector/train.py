"""Training: ultralytics `YOLO.train` in a work folder of ours, per-epoch metrics to a callback,
last.pt kept after every epoch and resumed from when it is there."""

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolo_assets.core.parallel import usable_cpus
from yolo_assets.detector.checkpoint import canonicalize_checkpoint, keep_checkpoint
from yolo_assets.detector.setup import quiet_third_party_loggers, resolve_device


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
    plots: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: Path | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> Path:
    """Train in `workdir` (never ./runs); returns the run folder with weights/best.pt and weights/last.pt.

    With `checkpoint`, last.pt is copied there (atomically) after every epoch, then `on_checkpoint`
    is called (to upload it); when that file already exists the training resumes from it instead
    of starting over. `workers` -1 = one dataloader worker per CPU this process may use.
    """
    from ultralytics import YOLO

    quiet_third_party_loggers()

    workers = workers if workers >= 0 else usable_cpus()

    resume = checkpoint is not None and checkpoint.exists()
    detector = YOLO(str(checkpoint) if resume else model)
    reported: set[int] = set()

    def report_epoch(trainer: Any) -> None:
        epoch = trainer.epoch + 1  # the final validation of best.pt comes as epoch `epochs` + 1
        if on_epoch is not None and epoch not in reported:
            reported.add(epoch)
            on_epoch(epoch, epoch_metrics(trainer))

    detector.add_callback("on_fit_epoch_end", report_epoch)
    if checkpoint is not None:

        def save(trainer: Any) -> None:
            # Ultralytics saves an epoch's model before its on_fit_epoch_end: reported first, an epoch whose
            # checkpoint is kept is never missing from the run's metrics when the training is killed in between.
            report_epoch(trainer)
            keep_checkpoint(Path(trainer.last), checkpoint)
            if on_checkpoint is not None:
                on_checkpoint(checkpoint)

        detector.add_callback("on_model_save", save)
    shutil.rmtree(workdir, ignore_errors=True)
    if resume:
        detector.train(resume=True, data=str(data_yaml), save_dir=str(workdir), workers=workers,
                       device=resolve_device(device), plots=plots)
    else:
        _train_from_start(detector, data_yaml, workdir, epochs=epochs, imgsz=imgsz, batch=batch, mosaic=mosaic,
                          warmup_epochs=warmup_epochs, device=device, seed=seed, deterministic=deterministic, workers=workers,
                          plots=plots)
    for weights in ("best.pt", "last.pt"):
        canonicalize_checkpoint(workdir / "weights" / weights)
    return workdir


def _train_from_start(detector: Any, data_yaml: Path, workdir: Path, *, epochs: int, imgsz: int, batch: int,
                      mosaic: float, warmup_epochs: float, device: str, seed: int, deterministic: bool, workers: int,
                      plots: bool) -> None:
    device = resolve_device(device)
    detector.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        mosaic=mosaic,
        warmup_epochs=warmup_epochs,
        device=device,
        seed=seed,
        deterministic=deterministic,
        workers=workers,
        project=str(workdir.parent),
        name=workdir.name,
        exist_ok=True,
        plots=plots,
        verbose=False,
        amp=device != "cpu",
    )
