"""Each test gets its own home folder: a real SQLite Dagster instance, landing zone and store."""

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from yolo_assets.definitions import build_definitions
from yolo_assets.home import HOME_ENV_VAR, dagster_home, ensure_home, landing_dir, store_dir
from yolo_assets.runs import RunOutcome, execute, tick
from yolo_assets.synth import write_batch


@dataclass
class Home:
    path: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def landing(self) -> Path:
        return landing_dir(self.path)

    @property
    def store(self) -> Path:
        return store_dir(self.path)

    def land(self, name: str, images: int, seed: int, **kwargs: Any) -> Path:
        return write_batch(self.landing / name, images, seed, **kwargs)

    def tick(self, run_config: dict[str, Any] | None = None) -> list[RunOutcome]:
        # Ingestion only: the model path (automation) has its own tests in test_model.py.
        return tick(self.defs, self.instance, self.path, run_config, automation=False)

    def materialize(self, asset: str, partition: str | None = None, run_config: dict[str, Any] | None = None) -> RunOutcome:
        return execute(self.defs, self.instance, [dg.AssetKey(asset)], partition, run_config=run_config)

    def latest(self, asset: str, partition: str | None = None) -> dg.AssetMaterialization:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
            limit=1,
        ).records
        assert records, f"{asset} was never materialised"
        materialization = records[0].asset_materialization
        assert materialization is not None
        return materialization

    def metadata(self, asset: str, partition: str | None = None) -> dict[str, Any]:
        return {k: getattr(v, "value", v) for k, v in self.latest(asset, partition).metadata.items()}

    def data_version(self, asset: str, partition: str | None = None) -> str:
        return self.latest(asset, partition).tags["dagster/data_version"]

    def check(self, asset: str, name: str) -> tuple[str, dict[str, Any]]:
        """Status (PASSED/FAILED/...) and metadata of the latest evaluation of an asset check."""
        key = dg.AssetCheckKey(dg.AssetKey(asset), name)
        record = self.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        evaluation = record.event.dagster_event.event_specific_data if record.event else None
        metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()} if evaluation else {}
        return record.status.value, metadata

    def manifest(self, asset: str, partition: str | None = None) -> dict[str, Any]:
        return json.loads((self.store / asset / self.data_version(asset, partition) / "manifest.json").read_text())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    path = tmp_path / "home"
    monkeypatch.setenv(HOME_ENV_VAR, str(path))
    ensure_home(path)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(path)))
    instance = dg.DagsterInstance.from_config(str(dagster_home(path)))
    try:
        yield Home(path, build_definitions(path), instance)
    finally:
        instance.dispose()


@pytest.fixture(scope="session")
def synthetic_batch_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture
def land_copy(home: Home, synthetic_batch_cache: Path):  # type: ignore[no-untyped-def]
    """Land a synthetic batch, rendered once per session per (images, seed)."""

    def land(name: str, images: int, seed: int) -> Path:
        cached = synthetic_batch_cache / f"{images}-{seed}"
        if not cached.exists():
            write_batch(cached, images, seed)
        target = home.landing / name
        shutil.copytree(cached, target)
        return target

    return land
