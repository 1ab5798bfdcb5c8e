"""Ultralytics set up for a platform: offline, no telemetry, settings in our home, the device to use.

Nothing in `detector/` knows about Dagster, so the same code serves the assets, the tests, the
benchmarks and the MLflow pyfunc model.
"""

import os
import subprocess
from importlib.metadata import version
from pathlib import Path

# Ultralytics reads these when it is first imported, so they are process environment set before that:
# no network probes, and per-epoch progress goes to the Dagster log instead of stdout.
OFFLINE_ENVIRONMENT = {"YOLO_OFFLINE": "true", "YOLO_VERBOSE": "false"}
THIRD_PARTY_LOGGERS = ("sync", "mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb", "hub")


def point_ultralytics_at(config_dir: Path) -> None:
    """Offline, no telemetry, settings in `config_dir`: process environment that ultralytics reads when
    it is first imported, set without importing it (torch takes seconds, and most runs, such as a
    batch's ingest, never use it)."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)


def quiet_third_party_loggers() -> None:
    """No third-party loggers (our own callback logs to MLflow): ultralytics' settings, turned off in
    its settings folder before a training or validation registers its callbacks."""
    from ultralytics import settings

    wanted = {key: False for key in THIRD_PARTY_LOGGERS}
    if any(settings.get(key) != value for key, value in wanted.items() if key in settings):
        settings.update({key: value for key, value in wanted.items() if key in settings})


def configure_ultralytics(config_dir: Path) -> None:
    """Both at once, for a process that is about to use ultralytics (tests, benchmarks)."""
    point_ultralytics_at(config_dir)
    quiet_third_party_loggers()


def ultralytics_version() -> str:
    """The installed distribution's version (what `ultralytics.__version__` says), without importing
    ultralytics and torch, which takes seconds."""
    return version("ultralytics")


class GpuUnavailable(RuntimeError):
    """A step asked for a GPU and CUDA is not usable: it must not train for hours on the CPU instead."""


def cuda_report() -> str:
    """The torch build, CUDA runtime, driver and devices this process sees, in one line."""
    import torch

    parts = [f"torch {torch.__version__}", f"CUDA build {torch.version.cuda or 'none (a CPU-only torch)'}"]
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10).stdout.split()
        parts.append(f"driver {driver[0]}" if driver else "driver: nvidia-smi lists no GPU")
    except (OSError, subprocess.SubprocessError):
        parts.append("driver: no nvidia-smi")
    if torch.cuda.is_available():
        parts += [f"device 0: {torch.cuda.get_device_name(0)}", f"{torch.cuda.device_count()} device(s)"]
    else:
        parts.append("no usable CUDA device")
    return ", ".join(parts)


# A CUDA (or ROCm) device is only usable through its kernel driver; without one torch.cuda.is_available() is False.
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")


def gpu_driver_present() -> bool:
    return any(Path(path).exists() for path in GPU_DRIVER_FILES)


def resolve_device(device: str, gpus_requested: int = 0) -> str:
    """`auto` = the first CUDA device when there is one, else the CPU. A step that asked for a GPU (its
    pod's GPU limit, or an explicit CUDA device such as `0`) never falls back to the CPU: GpuUnavailable."""
    if device in ("auto", "cpu", "mps") and not gpus_requested:
        if device != "auto":
            return device
        if not gpu_driver_present():
            return "cpu"  # what torch would say, without importing it (seconds) in a step that may not need it
        import torch

        return "0" if torch.cuda.is_available() else "cpu"
    import torch

    if device != "cpu" and not torch.cuda.is_available():
        asked = f"{gpus_requested} GPU(s) in its pod" if gpus_requested else f"device {device!r}"
        raise GpuUnavailable(f"this step asked for {asked} but CUDA is not usable here ({cuda_report()}); check the node's "
                             "NVIDIA driver (>= 580 for the CUDA 13 torch build), the device plugin, and that the GPU image is used")
    return "0" if device == "auto" else device
