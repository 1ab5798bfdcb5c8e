"""Serving benchmark: the detection service (`yolo-assets serve`) vs bare ultralytics, on the same images.

    .venv/bin/python benchmarks/bench_serving.py [--requests 200] [--images 40] [--imgsz 640]
        [--weights best.pt] [--warmup 3] [--rounds 4] [--workdir DIR]

Set-up, in a temp dir: `--images` synthetic pictures of `--imgsz` x 3/4 `--imgsz` pixels (0: synth's
default 320-448 x 256-352), a YOLOv8n trained on them for one epoch at imgsz 320 on the CPU (in a
child process, so that training leaves no torch state in this one; `--weights` skips it), logged as
the project's pyfunc model in a real MLflow registry (SQLite store, local artifacts) and made champion
through the rollout state, the way production releases a model. The service is the real
`yolo-assets serve` process (`DetectionService`), which loads the champion from that registry.

Measured side by side in one run, every case on the same images cycled: `--requests` per case, in
`--rounds` rounds that alternate the four cases (bare 1, service 1, bare 4, service 4, then again),
each round after `--warmup` untimed calls per client:
  - bare: `YOLO(best.pt).predict(path, conf=0.25)` in this process; at concurrency 4, four threads
    each with its own YOLO instance (a YOLO model is not safe for concurrent predict calls);
  - service: `POST /v1/detect` (multipart `file`, the JPEG bytes) from client threads in this process,
    one `requests.Session` per thread.
Latency is per call (p50, p99, over all rounds), throughput is calls / wall time of the case's rounds.
torch's thread count is left as ultralytics sets it on both sides. Targets: service p50 at concurrency 1 / bare p50 at
concurrency 1 <= 1.15; service throughput at concurrency 4 / bare throughput at concurrency 1 >= 0.9.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL_NAME = "bench"
CONF = 0.25
TRAIN_IMGSZ = 320
RESULT_PREFIX = "BENCH-RESULT "

# (detections, server-side seconds or None) of one call
Sample = tuple[int, float | None]
Caller = Callable[[int], Sample]


# ---------------------------------------------------------------------------------------------- set-up


def synth_images(folder: Path, images: int, imgsz: int) -> Path:
    """A YOLO-format batch (images/*.jpg, labels/*.txt) and a data.yaml ultralytics can train on."""
    import yaml

    from yolo_assets.data.synth import write_batch

    frame = (imgsz, imgsz * 3 // 4) if imgsz else None
    batch = write_batch(folder, images, seed=18, frame_size=frame)
    names = yaml.safe_load((batch / "data.yaml").read_text())["names"]
    data = folder.parent / "train.yaml"
    data.write_text(yaml.safe_dump({"path": str(batch), "train": "images", "val": "images", "names": names}))
    return data


def child_train(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: one epoch of YOLOv8n at imgsz 320 on the CPU, the project's training call."""
    from yolo_assets.detector.setup import configure_ultralytics
    from yolo_assets.detector.train import train_detector

    configure_ultralytics(Path(spec["config_dir"]))
    run = train_detector(Path(spec["data"]), Path(spec["out"]), model="yolov8n.yaml", epochs=1, imgsz=TRAIN_IMGSZ, batch=8,
                         mosaic=0.0, warmup_epochs=0.0, device="cpu", seed=0, deterministic=True, workers=0)
    return {"weights": str(run / "weights" / "best.pt")}


def train(workdir: Path, data: Path) -> Path:
    log = workdir / "train.log"
    spec = {"data": str(data), "out": str(workdir / "train"), "config_dir": str(workdir / "ultralytics")}
    with open(log, "w") as handle:
        returncode = subprocess.call([sys.executable, __file__, "--train-child", json.dumps(spec)], stdout=handle, stderr=subprocess.STDOUT)
    text = log.read_text(errors="replace")
    line = next((line for line in reversed(text.splitlines()) if line.startswith(RESULT_PREFIX)), None)
    if returncode != 0 or line is None:
        raise RuntimeError(f"training failed (exit {returncode}); log {log}:\n{text[-3000:]}")
    return Path(json.loads(line[len(RESULT_PREFIX):])["weights"])


def register_champion(workdir: Path, weights: Path) -> str:
    """Log `weights` as the project's pyfunc model (what `registered_model` does), version 1 of
    MODEL_NAME, and make it champion through the rollout state; returns the tracking URI."""
    from resources.mlflow_tracking import MLflowResource, import_mlflow
    from yolo_assets.detector.serving import log_detector
    from yolo_assets.release.rollout import RolloutState, RolloutStore

    mlflow = import_mlflow()
    tracking_uri = f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
    (workdir / "mlflow").mkdir(parents=True, exist_ok=True)
    resource = MLflowResource(tracking_uri=tracking_uri, artifact_root=str(workdir / "mlflow" / "artifacts"), model_name=MODEL_NAME)
    with resource.activated(), mlflow.start_run(experiment_id=resource.experiment_id()):
        version = log_detector(weights, MODEL_NAME)
    RolloutStore(resource.client(), MODEL_NAME).write(RolloutState(), RolloutState(champion=version))
    return tracking_uri


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Case:
    side: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    detections: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds per process over the timed window: `inference` (this process for bare, the
    service's for service) and `client` (this process, for service)."""

    def cores(self, role: str) -> str:
        return f"{self.cpu[role] / self.seconds:.2f}" if role in self.cpu else "-"

    def quantile(self, q: float, values: list[float] | None = None) -> float:
        """Percentile q (0-100) in ms, linear between the closest ranks."""
        data = sorted(self.latencies if values is None else values)
        if not data:
            return float("nan")
        position = (len(data) - 1) * q / 100
        low = int(position)
        high = min(low + 1, len(data) - 1)
        return 1000 * (data[low] + (data[high] - data[low]) * (position - low))

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def process_cpu(pid: int) -> Callable[[], float]:
    """CPU seconds (user + system, all threads) of another process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)

    return read


def run_case(case: Case, first: int, total: int, warmup: int, images: int, make_caller: Callable[[], Caller],
             probes: dict[str, Callable[[], float]]) -> None:
    """One round of `case`, added to it: `case.concurrency` threads, each with its own caller (made
    and warmed in the thread, before the clock starts), share `total` calls on the image indices from
    `first` on, cycled over `images`; `probes` (role -> CPU seconds of a process) are read around
    the timed window."""
    lock = threading.Lock()
    counter = iter(range(first, first + total))
    barrier = threading.Barrier(case.concurrency + 1)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            call = make_caller()
            for n in range(warmup):
                call((offset * warmup + n) % images)
            barrier.wait()
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                started = time.perf_counter()
                found, server = call(index % images)
                elapsed = time.perf_counter() - started
                with lock:
                    case.latencies.append(elapsed)
                    if server is not None:
                        case.server.append(server)
                    case.detections.setdefault(index % images, found)
        except BaseException as error:  # re-raised in the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(n,), name=f"{case.side}-{n}") for n in range(case.concurrency)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: its error is raised below
        barrier.wait()
    cpu = {role: probe() for role, probe in probes.items()}
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    case.seconds += time.perf_counter() - started
    for role, probe in probes.items():
        case.cpu[role] = case.cpu.get(role, 0.0) + probe() - cpu[role]
    if errors:
        raise errors[0]


def bare_caller(weights: Path, paths: list[Path]) -> Callable[[], Caller]:
    def make() -> Caller:
        from ultralytics import YOLO

        model: Any = YOLO(str(weights))

        def call(index: int) -> Sample:
            result = model.predict(str(paths[index]), conf=CONF, verbose=False)[0]
            return len(result.boxes), None

        return call

    return make


def service_caller(url: str, payloads: list[bytes]) -> Callable[[], Caller]:
    import requests

    def make() -> Caller:
        session = requests.Session()
        sent = 0

        def call(index: int) -> Sample:
            nonlocal sent
            sent += 1
            response = session.post(f"{url}/v1/detect", files={"file": (f"{index}.jpg", payloads[index], "image/jpeg")},
                                    headers={"X-Request-Key": f"{threading.get_ident()}-{sent}"}, timeout=60)
            if response.status_code != 200:
                raise RuntimeError(f"POST /v1/detect answered {response.status_code}: {response.text[:300]}")
            answer = response.json()
            return len(answer["detections"]), answer["latency_ms"] / 1000

        return call

    return make


# ------------------------------------------------------------------------------------------- report


def report(cases: list[Case], args: argparse.Namespace, frame: str, threads: int) -> None:
    print(f"machine: {os.cpu_count()} cores; torch threads after warm-up {threads}; {args.requests} requests per case in {args.rounds} rounds, "
          f"{args.images} images ({frame}) cycled, model imgsz {TRAIN_IMGSZ}, conf {CONF}")
    print(f"{'case':<18}{'conc':>5}{'p50 ms':>9}{'p99 ms':>9}{'img/s':>8}{'server p50 ms':>15}{'infer cores':>13}{'client cores':>14}")
    for case in cases:
        server = f"{case.quantile(50, case.server):.1f}" if case.server else "-"
        print(f"{case.side:<18}{case.concurrency:>5}{case.quantile(50):>9.1f}{case.quantile(99):>9.1f}{case.throughput:>8.1f}"
              f"{server:>15}{case.cores('inference'):>13}{case.cores('client'):>14}")
    print("(server p50: the service's own latency_ms, body read to answer; cores: CPU seconds / wall seconds of the case)")
    by = {(c.side, c.concurrency): c for c in cases}
    bare1, bare4, serve1, serve4 = by[("bare ultralytics", 1)], by[("bare ultralytics", 4)], by[("service", 1)], by[("service", 4)]
    latency = serve1.quantile(50) / bare1.quantile(50)
    throughput = serve4.throughput / bare1.throughput
    print(f"latency ratio service p50 / bare p50 at concurrency 1 = {latency:.3f} (target <= 1.15: {'met' if latency <= 1.15 else 'not met'})")
    print(f"throughput ratio service at concurrency 4 / bare at concurrency 1 = {throughput:.3f} "
          f"(target >= 0.9: {'met' if throughput >= 0.9 else 'not met'})")
    print(f"also: service c4 / bare c4 throughput = {serve4.throughput / bare4.throughput:.3f}; "
          f"service c1 throughput / bare c1 = {serve1.throughput / bare1.throughput:.3f}")
    same = sum(1 for index, found in bare1.detections.items() if serve1.detections.get(index) == found)
    print(f"detections per image equal between bare and service (concurrency 1): {same}/{len(bare1.detections)} images, "
          f"{sum(bare1.detections.values())} vs {sum(serve1.detections.values())} boxes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="timed calls per case")
    parser.add_argument("--images", type=int, default=40, help="distinct images, cycled")
    parser.add_argument("--imgsz", type=int, default=640, help="source picture width (height 3/4 of it); 0 = synth's default sizes")
    parser.add_argument("--weights", help="a YOLO .pt to serve instead of training one")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per client thread before each round of a case")
    parser.add_argument("--rounds", type=int, default=4, help="each case's requests in this many rounds, the cases alternating")
    parser.add_argument("--workdir", help="keep everything here (default: a temp dir, removed)")
    parser.add_argument("--train-child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.rounds <= args.requests:
        parser.error("--rounds must be between 1 and --requests")
    if args.train_child:
        print(RESULT_PREFIX + json.dumps(child_train(json.loads(args.train_child))), flush=True)
        return

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="yolo-bench-serve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "true"
    from yolo_assets.detector.setup import configure_ultralytics
    from yolo_assets.ops.services import DetectionService

    configure_ultralytics(workdir / "ultralytics")  # before ultralytics is imported; the service inherits it
    service: DetectionService | None = None
    try:
        started = time.perf_counter()
        data = synth_images(workdir / "images", args.images, args.imgsz)
        paths = sorted((data.parent / "images" / "images").glob("*.jpg"))
        payloads = [path.read_bytes() for path in paths]
        weights = Path(args.weights).resolve() if args.weights else train(workdir, data)
        tracking_uri = register_champion(workdir, weights)
        home = workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        service = DetectionService(home=home, log=workdir / "serve.log",
                                   env={"YOLO_ASSETS_MLFLOW_TRACKING_URI": tracking_uri, "YOLO_ASSETS_MODEL_NAME": MODEL_NAME}).start()
        print(f"set-up (images, {'given weights' if args.weights else 'training'}, registry, service ready): "
              f"{time.perf_counter() - started:.1f}s; workdir {workdir}", flush=True)

        bare: dict[str, Callable[[], float]] = {"inference": own_cpu}
        served: dict[str, Callable[[], float]] = {"inference": process_cpu(service.pid), "client": own_cpu}
        plan = [(Case(side, concurrency), make, probes) for concurrency in (1, 4)
                for side, make, probes in (("bare ultralytics", bare_caller(weights, paths), bare), ("service", service_caller(service.url, payloads), served))]
        # Rounds alternate the cases, so a change in the machine's other load meets every case alike.
        rounds = [args.requests // args.rounds + (1 if n < args.requests % args.rounds else 0) for n in range(args.rounds)]
        for number, calls in enumerate(rounds):
            for case, make, probes in plan:
                run_case(case, sum(rounds[:number]), calls, args.warmup, len(paths), make, probes)
        cases = [case for case, _, _ in plan]
        import torch

        frame = f"{args.imgsz}x{args.imgsz * 3 // 4}" if args.imgsz else "synth default 320-448 x 256-352"
        report(cases, args, frame, torch.get_num_threads())
    finally:
        if service is not None:
            service.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
