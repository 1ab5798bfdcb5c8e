"""Fixtures: each test gets its own home folder (real SQLite Dagster instance, landing zone, store)."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Home

from yolo_assets.core.home import HOME_ENV_VAR, dagster_home
from yolo_assets.data.synth import write_batch


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    path = tmp_path / "home"
    monkeypatch.setenv(HOME_ENV_VAR, str(path))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(path)))
    created = Home.create(path)
    try:
        yield created
    finally:
        created.instance.dispose()


@pytest.fixture(scope="session")
def synthetic_batch_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture
def land_copy(home: Home, synthetic_batch_cache: Path) -> Callable[[str, int, int], Path]:
    """Land a synthetic batch, rendered once per session per (images, seed)."""

    def land(name: str, images: int, seed: int) -> Path:
        cached = synthetic_batch_cache / f"{images}-{seed}"
        if not cached.exists():
            write_batch(cached, images, seed)
        target = home.landing / name
        shutil.copytree(cached, target)
        return target

    return land
