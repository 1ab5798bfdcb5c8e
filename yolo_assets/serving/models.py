"""The models a detection service holds: whatever the rollout state in the registry makes live.

A background thread reads the state every `refresh_s` seconds. A version it does not hold yet is
loaded from the registry and warmed beside the ones serving, then the live set is swapped in one
assignment: a request never waits on a load, and one that started on the old set finishes on it.
"""

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from yolo_assets.detector.inference import detect
from yolo_assets.release.rollout import CANARY, CHAMPION, RolloutState

log = logging.getLogger("yolo_assets.serve")
BUCKETS = 10_000  # canary shares to 0.01 %


def route_for(request_key: str | None, canary_percent: float) -> tuple[str, str]:
    """(route, key): `canary` for a stable `canary_percent` share of keys, else `champion`. The same
    key meets the same route for as long as the share does not change; no key, a random one."""
    key = request_key or uuid.uuid4().hex
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % BUCKETS
    return (CANARY if bucket < canary_percent * BUCKETS / 100 else CHAMPION), key


@dataclass
class LoadedModel:
    version: str
    model: Any
    """An ultralytics YOLO; not safe for concurrent predict calls, hence the lock."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def detect(self, image: Image.Image, conf: float) -> list[dict[str, Any]]:
        with self.lock:
            return detect(self.model, image, conf)


@dataclass(frozen=True)
class Live:
    state: RolloutState
    models: dict[str, LoadedModel]
    """Route -> model, for the routes that get traffic."""

    def pick(self, request_key: str | None) -> tuple[str, LoadedModel]:
        route, _ = route_for(request_key, self.state.canary_percent if CANARY in self.models else 0)
        return route, self.models[route]


def warm(model: Any, imgsz: int = 640) -> None:
    """Two predictions on a blank picture: the first call builds ultralytics' predictor and fuses layers."""
    blank = Image.new("RGB", (imgsz, imgsz), (114, 114, 114))
    for _ in range(2):
        detect(model, blank)


class ModelPool:
    def __init__(self, read_state: Callable[[], RolloutState], load_version: Callable[[str], Any], refresh_s: float) -> None:
        self.read_state, self.load_version, self.refresh_s = read_state, load_version, refresh_s
        self.live: Live | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Read the state; load and warm what it newly needs; swap. True when the live set changed."""
        current = self.live
        held = {model.version: model for model in current.models.values()} if current else {}
        while True:
            state = self.read_state()
            missing = {route: version for route, version in state.live().items() if version not in held}
            if not missing:
                break
            for route, version in missing.items():
                started = time.perf_counter()
                loaded = LoadedModel(version, self.load_version(version))
                warm(loaded.model)
                held[version] = loaded
                log.info(f"loaded and warmed version {version} for {route} in {time.perf_counter() - started:.1f}s")
            # Loading takes seconds: the state is read again, so a rollback made meanwhile is honoured
            # before anything is swapped in.
        models = {route: held[version] for route, version in state.live().items()}
        live = Live(state, models)
        changed = current is None or current.state.live() != state.live() or current.state.canary_percent != state.canary_percent
        self.live = live  # one assignment: requests see the old set or the new one, never a mix
        if changed:
            log.info(f"serving {({route: m.version for route, m in models.items()})}, canary {state.canary_percent}%")
        return changed

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh_quietly()

    def refresh_quietly(self) -> None:
        """A registry that does not answer keeps the current models serving."""
        try:
            self.refresh()
            self.last_error = ""
        except Exception as error:  # the service stays up on what it holds
            self.last_error = f"{type(error).__name__}: {str(error)[:300]}"
            log.warning(f"refresh failed, serving what is loaded: {self.last_error}")

    def start(self) -> None:
        self.refresh_quietly()
        self._thread = threading.Thread(target=self._loop, name="model-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def registry_loader(tracking_uri: str, model_name: str, cache_dir: Path) -> Callable[[str], Any]:
    """Load a registered version's YOLO weights through its pyfunc model (the artifact MLflow's own
    scoring server serves), downloaded into `cache_dir/<version>`."""

    def load(version: str) -> Any:
        from resources.mlflow_tracking import MLflowResource, import_mlflow

        mlflow = import_mlflow()
        target = cache_dir / version
        target.mkdir(parents=True, exist_ok=True)
        with MLflowResource(tracking_uri=tracking_uri, model_name=model_name).activated():
            pyfunc = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}", dst_path=str(target))
        return pyfunc.unwrap_python_model().model

    return load
