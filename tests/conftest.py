"""Fixtures: each test gets its own home folder (real SQLite Dagster instance, landing zone, store)."""

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sentinels import SENTINEL_PG_PASSWORD, SENTINEL_S3_KEY, SENTINEL_S3_SECRET

from resources.mlflow_tracking import MLFLOW_ENVIRONMENT
from yolo_assets.core.home import HOME_ENV_VAR, dagster_home
from yolo_assets.core.processes import restore_interrupts
from yolo_assets.data.synth import DEFAULT_CLASSES, write_batch
from yolo_assets.ops.services import Postgres, SeaweedFS

if TYPE_CHECKING:  # helpers imports the whole code location: only the tests that use a home pay for it
    from helpers import Home

# Before any test module imports mlflow: no telemetry from the tests' own MLflow clients.
for _name, _value in MLFLOW_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
# A suite started in the background (`make test &`, CI runners) would otherwise make every server and
# compute-log `tail` started after the first in-process run ignore SIGTERM (see restore_interrupts).
restore_interrupts()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator["Home"]:
    from helpers import Home

    path = tmp_path / "home"
    monkeypatch.setenv(HOME_ENV_VAR, str(path))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(path)))
    created = Home.create(path)
    try:
        yield created
    finally:
        created.close()


@pytest.fixture(scope="session")
def synthetic_batch_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture
def land_copy(home: "Home", synthetic_batch_cache: Path) -> Callable[[str, int, int], Path]:
    """Land a synthetic batch, rendered once per session per (images, seed)."""

    def land(name: str, images: int, seed: int) -> Path:
        cached = synthetic_batch_cache / f"{images}-{seed}"
        if not cached.exists():
            write_batch(cached, images, seed)
        target = home.landing / name
        shutil.copytree(cached, target)
        return target

    return land


def session_shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A folder every pytest-xdist worker of this run sees (the parent of the workers' own base folders)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session", autouse=True)
def empty_home_template_removed() -> Iterator[None]:
    """The worker's empty-home template (helpers.empty_home) goes when its tests end
    (xdist workers leave without running atexit handlers)."""
    yield
    helpers = sys.modules.get("helpers")  # (not imported here: the unit layer never loads it)
    if helpers and helpers.empty_home.cache_info().currsize:
        shutil.rmtree(helpers.empty_home(), ignore_errors=True)


@pytest.fixture(scope="session")
def good_detector(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Weights of a detector trained well enough that a 1-epoch model is measurably worse on fresh data:
    12 epochs of 160-px images without warm-up (ultralytics' warm-up lasts at least 100 optimiser steps,
    5 of these epochs) on 96 synthetic images that no test lands (seeds 1001, 1002). For scenarios that
    test what happens to a good model (release, promotion), not how it is trained: they fine-tune it.
    Trained once per test run by the first worker that asks; the others wait on the lock."""
    from filelock import FileLock

    from yolo_assets.detector.setup import configure_ultralytics
    from yolo_assets.detector.train import train_detector

    root = session_shared_dir(tmp_path_factory, worker_id) / "good-detector"
    weights = root / "best.pt"
    root.mkdir(exist_ok=True)
    with FileLock(str(root / ".lock")):
        if not weights.exists():
            write_batch(root / "data" / "train", 96, 1001)
            write_batch(root / "data" / "val", 24, 1002)
            data_yaml = root / "data" / "data.yaml"
            data_yaml.write_text(f"path: {root / 'data'}\ntrain: train/images\nval: val/images\nnames: {list(DEFAULT_CLASSES)}\n")
            configure_ultralytics(root / "ultralytics")
            run = train_detector(data_yaml, root / "training", model="yolov8n.yaml", epochs=12, imgsz=160, batch=4, mosaic=0.0,
                                 warmup_epochs=0.0, device="cpu", seed=0, deterministic=True, workers=0, plots=False)
            shutil.copyfile(run / "weights" / "best.pt", root / "best.tmp")
            os.replace(root / "best.tmp", weights)
    return weights


# The production services, started once per test session on free loopback ports (yolo_assets/ops/services.py).


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), SENTINEL_S3_KEY, SENTINEL_S3_SECRET).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    # Under /tmp, not pytest's 0700 folder: the `postgres` user must reach it.
    root = Path(tempfile.mkdtemp(prefix="yolo-assets-test-pg-"))
    server = Postgres(root, SENTINEL_PG_PASSWORD, durable=False).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# `make test` runs the suite on several xdist workers, a file per worker at a time (`--dist loadfile`):
# the longest files start first so that the short ones fill the gaps instead of waiting at the end
# (their order: each one's time in a full run, longest first; but the two files whose scenario fine-tunes
# `good_detector` do not start together: one would wait, idle, while the other trains it).
LONGEST_FILES_FIRST = (
    "test_chaos_soak.py",
    "test_model_path_faults.py",
    "test_gray_release.py",
    "test_production_load.py",
    "test_model.py",
    "test_batch_trust.py",
    "test_production_faults.py",
    "test_daemon.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in LONGEST_FILES_FIRST:
            return LONGEST_FILES_FIRST.index(name)
        return len(LONGEST_FILES_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)


# Files each of whose tests takes a minute or more: while a worker still has one of their tests to run, it is
# handed short files (see `pytest_xdist_make_scheduler`).
EVERY_TEST_LONG = ("test_chaos_soak.py", "test_model_path_faults.py", "test_production_load.py", "test_daemon.py", "test_resume.py")


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; `-p no:xdist` runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, except for what a worker still busy with long tests is given to hold next."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LoadFileFollowersLast(LoadFileScheduling):
        """A worker runs a test only once it holds the next one (pytest needs `nextitem` to tear down), so
        xdist hands a worker its next file while 2 or fewer of its tests are pending. A one-test file (the
        soak, the burst) thus took the next-longest file behind it at once: the soak carried the production
        faults, and that chain (12 min) was the whole run; the model-path faults, after their first test,
        carried them too (8 min 24 s of a run whose other workers ended by 7 min 50 s). A worker with tests
        of an `EVERY_TEST_LONG` file still to run now gets the shortest file left, and the long files go to
        whichever worker frees up first. It reads xdist's `assigned_work` and `workqueue`:
        pytest-xdist is pinned in constraints.txt."""

        def _assign_work_unit(self, node: Any) -> None:
            busy_for_long = any(
                Path(scope).name in EVERY_TEST_LONG and not all(tests.values())
                for scope, tests in self.assigned_work.get(node, {}).items()
            )
            if busy_for_long and len(self.workqueue) > 1:
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            super()._assign_work_unit(node)

    return LoadFileFollowersLast(config, log)
