"""Ultralytics set up for a platform: offline, no telemetry, settings in our home, the device to use.

Nothing in `detector/` knows about Dagster, so the same code serves the assets, the tests, the
benchmarks and the MLflow pyfunc model.
"""

import os
from pathlib import Path

# Ultralytics reads these when it is first imported, so they are process environment set before that:
# no network probes, and per-epoch progress goes to the Dagster log instead of stdout.
OFFLINE_ENVIRONMENT = {"YOLO_OFFLINE": "true", "YOLO_VERBOSE": "false"}
THIRD_PARTY_LOGGERS = ("sync", "mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb", "hub")


def configure_ultralytics(config_dir: Path) -> None:
    """Offline, no telemetry, no third-party loggers (our own callback logs to MLflow)."""
    # Process environment on purpose: ultralytics fixes its settings folder from it at first import.
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    from ultralytics import settings

    wanted = {key: False for key in THIRD_PARTY_LOGGERS}
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


