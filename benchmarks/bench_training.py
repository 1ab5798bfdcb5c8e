"""Training and evaluation measured against bare ultralytics, side by side in one run.

(a) `materialize trained_weights` (the Dagster path the CLI and tests use) vs a bare
    `YOLO(model).train(...)` on the same `processed_images` version with the same recipe: wall ratio
    (target <= 1.05), both mAP50-95 (equal on CPU: seed + deterministic), peak RSS, epoch throughput;
(b) `materialize evaluation_report` (challenger and champion on the same val split) vs two bare `.val()`;
(c) camera-size frames (`--frame-size`): our end to end (ingest: labeled_batch + processed_images, then
    trained_weights on the stored, already shrunk images) vs bare training on the raw export, same
    split, epochs and recipe; once with processed_images' default `max_side` and once with `max_side`
    = the training size (`--camera-max-side`).

Every variant runs in its own subprocess, so its peak RSS is its own: the main process's high-water
mark, and the largest child process it reaped (dataloader workers). Timed windows start before
ultralytics is imported on both sides (ours imports it when its run sets up); "whole process" adds
the interpreter start and, for ours, opening the instance and loading the definitions. On a GPU
machine the device's utilisation is sampled (NVML) and averaged over each variant's measured window.

    .venv/bin/python benchmarks/bench_training.py [--images 120] [--epochs 3] [--imgsz 256] [--batch 8]
        [--device auto] [--workers -1] [--camera-images 60] [--frame-size 1920x1080] [--camera-imgsz 256]
        [--camera-max-side 640,0] [--sections train,eval,camera] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULT_PREFIX = "BENCH-RESULT "
# Only the evaluation set-up registers a model; with no champion the gate's floor would refuse it on
# a smoke-size training. Read when the definitions load, so set before any of them are built.
os.environ.setdefault("YOLO_ASSETS_FIRST_MODEL_MIN_MAP50", "0")
LOG_LEVEL = "YOLO_ASSETS_LOG_LEVEL"
CHILD_LOG_LEVEL = os.environ.get(LOG_LEVEL, "INFO")


# ---------------------------------------------------------------------------------------------- shared


def recipe_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The recipe both sides train with (what `TrainingConfig` passes to ultralytics)."""
    return {
        "epochs": spec["epochs"], "imgsz": spec["imgsz"], "batch": spec["batch"], "mosaic": 0.0, "warmup_epochs": 1.0,
        "seed": 0, "deterministic": True, "workers": spec["workers"], "device": spec["device"],
    }


def training_run_config(spec: dict[str, Any], **override: Any) -> dict[str, Any]:
    config = {**recipe_args(spec), "model": spec["model"], "warm_start": False, **override}
    return {"ops": {"trained_weights": {"config": config}}}


def epoch_seconds(results_csv: Path) -> list[float]:
    """Seconds of each epoch (training + its validation) from ultralytics' results.csv `time` column."""
    with open(results_csv) as handle:
        times = [float(row["time"]) for row in csv.DictReader(handle)]
    return [b - a for a, b in zip([0.0, *times], times)]


def throughput(train_images: int, epochs: list[float]) -> float:
    """Images per second of a steady epoch: the median epoch after the first (which warms up)."""
    steady = epochs[1:] or epochs
    return train_images / statistics.median(steady) if steady else float("nan")


def list_length(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


@contextmanager
def opened_home(home: Path) -> Iterator[tuple[Any, Any]]:
    import dagster as dg

    from resources.settings import DeploymentSettings
    from yolo_assets.core.home import dagster_home, ensure_home
    from yolo_assets.definitions import build_definitions

    ensure_home(home)
    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    try:
        yield build_definitions(home, DeploymentSettings.from_environment()), instance
    finally:
        instance.dispose()


def materialize(defs: Any, instance: Any, asset: str, partition: str | None = None, run_config: dict[str, Any] | None = None) -> None:
    """`yolo-assets materialize ASSET [--partition P] [--config ...]`: the same `execute`."""
    import dagster as dg

    from yolo_assets.ops.runs import execute

    outcome = execute(defs, instance, [dg.AssetKey(asset)], partition, run_config=run_config, description=asset)
    if not outcome.success:
        raise RuntimeError(f"materialize {asset} failed: {outcome.failure}")


def ingest(defs: Any, instance: Any, batch: str, max_side: int | None) -> dict[str, float]:
    """A batch already in the landing zone -> labeled_batch[batch] -> processed_images (max_side set
    through its run config, as `materialize processed_images --config` would); seconds of each."""
    from yolo_assets.assets.ingest import BATCH_PARTITIONS

    instance.add_dynamic_partitions(BATCH_PARTITIONS, [batch])  # what labeled_data_sensor requests
    started = time.perf_counter()
    materialize(defs, instance, "labeled_batch", batch)
    batch_s = time.perf_counter() - started
    config = {"ops": {"processed_images": {"config": {"max_side": max_side}}}} if max_side else None
    materialize(defs, instance, "processed_images", run_config=config)
    return {"labeled_batch_s": batch_s, "processed_images_s": time.perf_counter() - started - batch_s}


def dataset_yaml(defs: Any, instance: Any) -> Path:
    """data.yaml of the latest processed_images version, as trained_weights reads it."""
    from yolo_assets.assets.dataset import local_dataset
    from yolo_assets.assets.keys import PROCESSED_IMAGES
    from yolo_assets.assets.materializations import latest_data_version
    from yolo_assets.ops.runs import resolved_resource

    version = latest_data_version(instance, PROCESSED_IMAGES)
    assert version, "processed_images was never materialised"
    with resolved_resource(defs, "artifact_store") as store:
        return local_dataset(store, version)


def bare_ultralytics(config_dir: Path) -> None:
    """Ultralytics as a careful user runs it here: offline, no third-party loggers (an importable
    mlflow would otherwise get a run from ultralytics' own callback). Same settings as ours."""
    from yolo_assets.detector.setup import configure_ultralytics

    configure_ultralytics(config_dir)


# ------------------------------------------------------------------------------------------- children


def child_bare_train(spec: dict[str, Any]) -> dict[str, Any]:
    # Timed from the import of ultralytics on both sides: ours imports it when its run sets up.
    started, wall = time.time(), time.perf_counter()
    bare_ultralytics(Path(spec["workdir"]) / "ultralytics-bare")
    from ultralytics import YOLO

    out = Path(spec["out"])
    model = YOLO(spec["model"])
    model.train(data=spec["data"], project=str(out.parent), name=out.name, exist_ok=True, **recipe_args(spec))
    seconds = time.perf_counter() - wall
    trainer: Any = model.trainer
    metrics = trainer.metrics
    return {
        "seconds": seconds, "window": [started, time.time()],
        "mAP50": float(metrics["metrics/mAP50(B)"]), "mAP50-95": float(metrics["metrics/mAP50-95(B)"]),
        "epochs_s": epoch_seconds(out / "results.csv"), "weights": str(out / "weights" / "best.pt"),
    }


def child_ours_train(spec: dict[str, Any]) -> dict[str, Any]:
    from yolo_assets.assets.keys import TRAINED_WEIGHTS
    from yolo_assets.assets.materializations import latest_data_version
    from yolo_assets.assets.training import read_training_summary
    from yolo_assets.ops.runs import resolved_resource

    with opened_home(Path(spec["home"])) as (defs, instance):
        started, wall = time.time(), time.perf_counter()
        stages = ingest(defs, instance, spec["landing_batch"], spec.get("max_side")) if spec.get("landing_batch") else {}
        train_started = time.perf_counter()
        materialize(defs, instance, "trained_weights", run_config=training_run_config(spec))
        train_s = time.perf_counter() - train_started
        seconds, window = time.perf_counter() - wall, [started, time.time()]
        version = latest_data_version(instance, TRAINED_WEIGHTS)
        assert version
        with resolved_resource(defs, "artifact_store") as store:
            summary = read_training_summary(store, version)
            epochs = epoch_seconds(store.local_path(TRAINED_WEIGHTS, version) / "results.csv")
            data = dataset_yaml(defs, instance)
        final = summary["final_metrics"]
        return {
            "seconds": seconds, "train_s": train_s, **stages, "window": window, "weights_version": version,
            "mAP50": final["metrics/mAP50B"], "mAP50-95": final["metrics/mAP50-95B"], "epochs_s": epochs,
            "train_images": list_length(data.parent / "train.txt"),
        }


def child_bare_eval(spec: dict[str, Any]) -> dict[str, Any]:
    """Two bare `.val()` calls: the challenger with plots, the champion without (what we do)."""
    started, wall = time.time(), time.perf_counter()
    bare_ultralytics(Path(spec["workdir"]) / "ultralytics-bare")
    from ultralytics import YOLO

    out = Path(spec["out"])
    results = [
        YOLO(weights).val(data=spec["data"], split="val", imgsz=spec["imgsz"], batch=16, device=spec["device"], plots=plots,
                          project=str(out), name=name, exist_ok=True)
        for weights, name, plots in ((spec["challenger"], "challenger", True), (spec["champion"], "champion", False))
    ]
    seconds = time.perf_counter() - wall
    return {"seconds": seconds, "window": [started, time.time()], "mAP50-95": float(results[0].box.map),
            "champion_mAP50-95": float(results[1].box.map)}


def child_ours_eval(spec: dict[str, Any]) -> dict[str, Any]:
    from yolo_assets.assets.evaluation import read_evaluation_metrics
    from yolo_assets.assets.keys import EVALUATION_REPORT
    from yolo_assets.assets.materializations import latest_data_version
    from yolo_assets.ops.runs import resolved_resource

    with opened_home(Path(spec["home"])) as (defs, instance):
        started, wall = time.time(), time.perf_counter()
        materialize(defs, instance, "evaluation_report", run_config={"ops": {"evaluation_report": {"config": {"device": spec["device"]}}}})
        seconds = time.perf_counter() - wall
        version = latest_data_version(instance, EVALUATION_REPORT)
        assert version
        with resolved_resource(defs, "artifact_store") as store:
            metrics = read_evaluation_metrics(store, version)
    assert metrics["champion"], "the evaluation had no champion to validate"
    return {"seconds": seconds, "window": [started, time.time()], "mAP50-95": metrics["challenger"]["mAP50-95"],
            "champion_mAP50-95": metrics["champion"]["mAP50-95"]}


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "bare-train": child_bare_train, "ours-train": child_ours_train, "bare-eval": child_bare_eval, "ours-eval": child_ours_eval,
}


def peak_rss() -> dict[str, float]:
    """Peak RSS of this process (VmHWM: its own, not inherited across exec as ru_maxrss is) and of
    its largest reaped child process (dataloader workers), MiB."""
    status = Path("/proc/self/status").read_text()
    own = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return {"peak_rss_mib": own / 1024, "peak_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_child(role: str, spec: dict[str, Any], log: Path) -> dict[str, Any]:
    """`role` in a fresh Python process, its output in `log`; its result and its wall time as a process."""
    started = time.perf_counter()
    env = {**os.environ, LOG_LEVEL: CHILD_LOG_LEVEL}  # the CLI's run log level (the log goes to a file)
    with open(log, "w") as handle:
        returncode = subprocess.call([sys.executable, __file__, "--child", role, json.dumps(spec)], stdout=handle, stderr=subprocess.STDOUT, env=env)
    text = log.read_text(errors="replace")
    line = next((l for l in reversed(text.splitlines()) if l.startswith(RESULT_PREFIX)), None)
    if returncode != 0 or line is None:
        raise RuntimeError(f"{role} failed (exit {returncode}); log {log}:\n{text[-3000:]}")
    result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
    return {**result, "process_s": time.perf_counter() - started}


# ------------------------------------------------------------------------------------ GPU utilisation


class GpuSampler:
    """Device-wide utilisation every `interval` s through NVML (nvidia-ml-py); nothing without a GPU."""

    def __init__(self, interval: float = 0.25) -> None:
        self.samples: list[tuple[float, int, float]] = []  # (time, utilisation %, memory used GiB)
        self.interval, self.handle, self.stop = interval, None, threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.name = str(pynvml.nvmlDeviceGetName(self.handle))
        except Exception:
            return
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import pynvml

        while not self.stop.wait(self.interval):
            rates = pynvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(self.handle)
            self.samples.append((time.time(), int(rates.gpu), memory.used / 2**30))

    def summary(self, window: list[float]) -> str:
        inside = [(u, m) for t, u, m in self.samples if window[0] <= t <= window[1]]
        if self.handle is None or not inside:
            return ""
        busy = sorted(u for u, _ in inside)
        return (f"GPU busy mean {statistics.fmean(busy):.0f}% (median {busy[len(busy) // 2]}%, max {busy[-1]}%), "
                f"memory max {max(m for _, m in inside):.1f} GiB, {len(inside)} samples")


# --------------------------------------------------------------------------------------------- parent


def warm_mlflow(defs: Any) -> None:
    """Create the home's MLflow database and experiment: a deployment has them before its first
    training (in a fresh home, the table migrations cost ours ~2 s)."""
    from yolo_assets.ops.runs import resolved_resource

    with resolved_resource(defs, "mlflow") as mlflow:
        mlflow.experiment_id()


def warm_label_cache(data_yaml: Path) -> None:
    """Build ultralytics' labels .cache before either side trains, so neither is charged for it."""
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(data_yaml))
    for split in ("train", "val"):
        YOLODataset(img_path=data[split], data=data, task="detect", augment=False)


def rss(result: dict[str, Any]) -> str:
    worker = result["peak_worker_rss_mib"]
    return f"{result['peak_rss_mib']:.0f} MiB" + (f" (largest child process: {worker:.0f} MiB)" if worker else "")


def compare(label: str, bare: dict[str, Any], ours: dict[str, Any], sampler: GpuSampler, target: str) -> dict[str, Any]:
    ratio = ours["seconds"] / bare["seconds"]
    print(f"{label}: bare {bare['seconds']:.1f}s, ours {ours['seconds']:.1f}s -> ratio ours/bare {ratio:.3f} ({target})")
    print(f"    whole process: bare {bare['process_s']:.1f}s, ours {ours['process_s']:.1f}s (imports, instance, resources included)")
    equal = "equal" if ours["mAP50-95"] == bare["mAP50-95"] else f"differ by {ours['mAP50-95'] - bare['mAP50-95']:+.4f}"
    print(f"    mAP50-95: bare {bare['mAP50-95']:.4f}, ours {ours['mAP50-95']:.4f} ({equal})")
    print(f"    peak RSS: bare {rss(bare)}, ours {rss(ours)}")
    for name, result in (("bare", bare), ("ours", ours)):
        if sampler.summary(result["window"]):
            print(f"    {name}: {sampler.summary(result['window'])}")
    return {"bare": bare, "ours": ours, "ratio": ratio}


def raw_split_yaml(raw: Path, defs: Any, instance: Any, out: Path) -> Path:
    """A data.yaml over the raw export with the split processed_images chose (matched by the image
    bytes' sha256), so both sides train and validate on the same pictures."""
    import yaml

    from yolo_assets.core.hashing import sha256_file
    from yolo_assets.core.versioning import MANIFEST

    manifest = json.loads((dataset_yaml(defs, instance).parent / MANIFEST).read_text())
    split_of = {item["sha"]: item["split"] for item in manifest["items"]}
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for image in sorted((raw / "images").iterdir()):
        split = split_of.get(sha256_file(image))
        if split in lists:
            lists[split].append(str(image))
    out.mkdir(parents=True, exist_ok=True)
    for split, paths in lists.items():
        (out / f"{split}.txt").write_text("\n".join(paths) + "\n")
    names = yaml.safe_load((raw / "data.yaml").read_text())["names"]
    (out / "data.yaml").write_text(yaml.safe_dump({"path": str(out), "train": "train.txt", "val": "val.txt", "names": names}))
    return out / "data.yaml"


def land(home: Path, raw: Path, batch: str) -> None:
    """The export as the uploader leaves it in the landing zone (hard links: no bytes copied)."""
    from yolo_assets.core.home import ensure_home, landing_dir

    shutil.copytree(raw, landing_dir(ensure_home(home)) / batch, copy_function=os.link)


def section_train_eval(args: argparse.Namespace, spec: dict[str, Any], workdir: Path, sampler: GpuSampler, sections: set[str]) -> dict[str, Any]:
    from yolo_assets.data.synth import write_batch

    home = workdir / "home"
    raw = write_batch(workdir / "raw" / "batch_001", args.images, seed=1)
    land(home, raw, "batch_001")
    with opened_home(home) as (defs, instance):
        ingest(defs, instance, "batch_001", None)  # processed_images with its default settings
        data = dataset_yaml(defs, instance)
        warm_mlflow(defs)
    warm_label_cache(data)
    train_images = list_length(data.parent / "train.txt")
    print(f"dataset: {args.images} images ({train_images} train, {list_length(data.parent / 'val.txt')} val), "
          f"{spec['epochs']} epochs at {spec['imgsz']} px, batch {spec['batch']}, workers {spec['workers']}, device {spec['device']}")
    report: dict[str, Any] = {}
    if "train" in sections:
        bare = run_child("bare-train", {**spec, "data": str(data), "out": str(workdir / "bare-train")}, workdir / "bare-train.log")
        ours = run_child("ours-train", {**spec, "home": str(home)}, workdir / "ours-train.log")
        report["train"] = compare("(a) training", bare, ours, sampler, "target <= 1.05")
        print(f"    epoch throughput (steady epochs, validation included): bare {throughput(train_images, bare['epochs_s']):.1f} img/s, "
              f"ours {throughput(train_images, ours['epochs_s']):.1f} img/s")
    if "eval" in sections:
        report["eval"] = section_eval(spec, workdir, home, data, sampler, have_weights="train" in sections)
    return report


def section_eval(spec: dict[str, Any], workdir: Path, home: Path, data: Path, sampler: GpuSampler, have_weights: bool) -> dict[str, Any]:
    """Set-up (not timed): the first weights become the champion (evaluate + register), a 1-epoch
    training gives a challenger; then evaluation_report validates both, as two bare `.val()` do."""
    from yolo_assets.assets.keys import TRAINED_WEIGHTS
    from yolo_assets.assets.materializations import latest_data_version
    from yolo_assets.assets.training import weights_path
    from yolo_assets.ops.runs import resolved_resource

    with opened_home(home) as (defs, instance):
        if not have_weights:
            materialize(defs, instance, "trained_weights", run_config=training_run_config(spec))
        champion = latest_data_version(instance, TRAINED_WEIGHTS)
        materialize(defs, instance, "evaluation_report", run_config={"ops": {"evaluation_report": {"config": {"device": spec["device"]}}}})
        materialize(defs, instance, "registered_model")
        materialize(defs, instance, "trained_weights", run_config=training_run_config(spec, epochs=1, seed=1))
        challenger = latest_data_version(instance, TRAINED_WEIGHTS)
        assert champion and challenger and champion != challenger
        with resolved_resource(defs, "artifact_store") as store:
            paths = {name: str(weights_path(store, version)) for name, version in (("champion", champion), ("challenger", challenger))}
    eval_spec = {**spec, "data": str(data), **paths}
    bare = run_child("bare-eval", {**eval_spec, "out": str(workdir / "bare-eval")}, workdir / "bare-eval.log")
    ours = run_child("ours-eval", {**eval_spec, "home": str(home)}, workdir / "ours-eval.log")
    result = compare("(b) evaluation (challenger + champion)", bare, ours, sampler, "target <= 1.05")
    print(f"    champion mAP50-95: bare {bare['champion_mAP50-95']:.4f}, ours {ours['champion_mAP50-95']:.4f}")
    return result


def section_camera(args: argparse.Namespace, spec: dict[str, Any], workdir: Path, sampler: GpuSampler) -> dict[str, Any]:
    from yolo_assets.data.synth import parse_frame_size, write_batch

    frame = parse_frame_size(args.frame_size)
    started = time.perf_counter()
    raw = write_batch(workdir / "raw" / "camera", args.camera_images, seed=2, frame_size=frame)
    camera = {**spec, "imgsz": args.camera_imgsz}
    print(f"(c) camera-size frames: {args.camera_images} images of {args.frame_size} (synthesised in {time.perf_counter() - started:.1f}s), "
          f"{camera['epochs']} epochs at {camera['imgsz']} px, batch {camera['batch']}")
    report: dict[str, Any] = {}
    bare: dict[str, Any] | None = None
    for max_side in [int(v) or args.camera_imgsz for v in args.camera_max_side.split(",")]:
        home = workdir / f"camera-home-{max_side}"
        land(home, raw, "camera")
        with opened_home(home) as (defs, _):
            warm_mlflow(defs)
        ours = run_child("ours-train", {**camera, "home": str(home), "landing_batch": "camera", "max_side": max_side}, workdir / f"ours-camera-{max_side}.log")
        if bare is None:  # the raw export, split as processed_images split it
            with opened_home(home) as (defs, instance):
                data = raw_split_yaml(raw, defs, instance, workdir / "raw-lists")
            bare_spec = {**camera, "data": str(data), "out": str(workdir / "bare-camera")}
            bare = run_child("bare-train", bare_spec, workdir / "bare-camera.log")
            train_images = list_length(data.parent / "train.txt")
            print(f"    bare on the raw export: training {bare['seconds']:.1f}s, {throughput(train_images, bare['epochs_s']):.1f} img/s, "
                  f"mAP50-95 {bare['mAP50-95']:.4f}, peak RSS {rss(bare)} {sampler.summary(bare['window'])}")
        speedup = bare["seconds"] / ours["seconds"]
        print(f"    ours, processed_images max_side={max_side}: ingest {ours['labeled_batch_s']:.1f}s (labeled_batch) + "
              f"{ours['processed_images_s']:.1f}s (processed_images) + training {ours['train_s']:.1f}s = {ours['seconds']:.1f}s; "
              f"{throughput(ours['train_images'], ours['epochs_s']):.1f} img/s, mAP50-95 {ours['mAP50-95']:.4f}, peak RSS {rss(ours)} "
              f"{sampler.summary(ours['window'])}")
        print(f"    speed-up bare training / our ingest + training = {speedup:.2f}x; training alone {bare['seconds'] / ours['train_s']:.2f}x; "
              f"epoch throughput {throughput(ours['train_images'], ours['epochs_s']) / throughput(train_images, bare['epochs_s']):.2f}x")
        report[f"max_side_{max_side}"] = {"ours": ours, "speedup": speedup}
    report["bare"] = bare
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120, help="images of the (a)/(b) dataset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, 0")
    parser.add_argument("--workers", type=int, default=-1, help="dataloader workers; -1 = one per usable CPU (ultralytics uses 0 on CPU)")
    parser.add_argument("--camera-images", type=int, default=60)
    parser.add_argument("--frame-size", default="1920x1080")
    parser.add_argument("--camera-imgsz", type=int, default=256)
    parser.add_argument("--camera-max-side", default="640,0", help="processed_images max_side values to run (0 = the training size)")
    parser.add_argument("--sections", default="train,eval,camera")
    parser.add_argument("--workdir", help="keep everything here (default: a temp dir, removed)")
    parser.add_argument("--json", help="write every number to this file")
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = CHILDREN[args.child[0]](json.loads(args.child[1]))
        print(RESULT_PREFIX + json.dumps({**result, **peak_rss()}), flush=True)
        return

    from yolo_assets.core.parallel import usable_cpus
    from yolo_assets.detector.setup import OFFLINE_ENVIRONMENT, resolve_device

    os.environ[LOG_LEVEL] = "WARNING"  # the set-up runs of this process; children log as the CLI does
    for name, value in OFFLINE_ENVIRONMENT.items():  # before this process first imports ultralytics
        os.environ.setdefault(name, value)

    sections = set(args.sections.split(","))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="yolo-bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    workers = args.workers if args.workers >= 0 else usable_cpus()
    spec = {"model": args.model, "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "device": device,
            "workers": workers, "workdir": str(workdir)}
    sampler = GpuSampler()
    print(f"machine: {os.cpu_count()} cores ({usable_cpus()} usable), device {device}"
          f"{' (' + sampler.name + ')' if sampler.handle else ''}; workdir {workdir}", flush=True)
    report: dict[str, Any] = {"args": vars(args), "spec": spec}
    try:
        if sections & {"train", "eval"}:
            report.update(section_train_eval(args, spec, workdir, sampler, sections))
        if "camera" in sections:
            report["camera"] = section_camera(args, spec, workdir, sampler)
    finally:
        sampler.stop.set()
        report["gpu_samples"] = sampler.samples
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
