"""Where ultralytics works, and the deployment's training defaults."""

from pathlib import Path

import dagster as dg


class YoloWorkspace(dg.ConfigurableResource):
    """Scratch folders for training/validation and ultralytics' settings folder."""

    scratch_dir: str
    ultralytics_config_dir: str

    def workdir(self, *parts: str) -> Path:
        path = Path(self.scratch_dir).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Before any step that uses ultralytics runs: ultralytics fixes its settings folder when it is
        first imported, so YOLO_CONFIG_DIR must be set before then (not inside the asset, after
        model checks that already import it). Only the environment: a run that never trains or
        scores (a batch's ingest) does not import torch."""
        from yolo_assets.detector.setup import point_ultralytics_at

        point_ultralytics_at(Path(self.ultralytics_config_dir))


class TrainingDefaults(dg.ConfigurableResource):
    """What `trained_weights` uses for the run-config fields left empty: runs that automation
    launches carry no run config, so a deployment sets these (YOLO_ASSETS_TRAIN_*)."""

    epochs: int = 20
    warm_start_epochs: int = 8
    """Epochs when starting from the champion's weights (the daily-retrain case)."""
    imgsz: int = 256
    batch: int = 8
    """Small batches: more optimiser steps per epoch, which matters on small from-scratch datasets."""
    workers: int = -1
    """Dataloader workers; -1 = one per CPU the training process may use (its affinity and the pod's CPU
    limit, resolved where it runs, not where the code location loads); does not change the weights.
    Ultralytics loads in the main process on CPU whatever this says."""
    plots: bool = True
    """Ultralytics' training plots (loss curves, label statistics, the last epoch's PR curves and
    confusion matrix) kept with the weights and on the MLflow run; they do not change the weights, and
    `evaluation_report` draws the PR curves and confusion matrix of the same weights either way."""
