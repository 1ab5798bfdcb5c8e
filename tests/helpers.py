"""The one test harness: a real home folder (SQLite Dagster instance, landing zone, store, MLflow)
driven the way a user drives it, through sensor ticks and materialisations."""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dagster as dg

from resources.mlflow_tracking import import_mlflow
from resources.settings import DeploymentSettings
from yolo_assets.core.home import HOME_ENV_VAR, dagster_home, ensure_home, landing_dir, mlflow_dir, mlflow_tracking_uri, store_dir
from yolo_assets.data.synth import write_batch
from yolo_assets.definitions import build_definitions
from yolo_assets.ops.cli import main
from yolo_assets.ops.runs import RunOutcome, execute, resolved_resource, tick
from yolo_assets.ops.services import Postgres, SeaweedFS

REPO = Path(__file__).resolve().parents[1]

TINY_TRAINING: dict[str, Any] = {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0, "plots": False, "warm_start": False}
"""The smallest real training (one epoch of 64-px images from scratch, no plots): for tests that need a
model, not a good one."""
TINY_TRAINING_ENV = {"YOLO_ASSETS_TRAIN_EPOCHS": "1", "YOLO_ASSETS_TRAIN_IMGSZ": "64", "YOLO_ASSETS_TRAIN_WORKERS": "0", "YOLO_ASSETS_TRAIN_PLOTS": "false"}
"""The same as deployment settings, for the runs a daemon launches."""


def training_run_config(**changes: Any) -> dict[str, Any]:
    """Run config of `trained_weights`: `TINY_TRAINING` with `changes`."""
    return {"ops": {"trained_weights": {"config": {**TINY_TRAINING, **changes}}}}


def subprocess_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a `dagster` / `dagster-daemon` process working on `home`, with deployment
    settings (YOLO_ASSETS_*) added; MLflow's own variables are not inherited from the test process."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    return {**inherited, HOME_ENV_VAR: str(home), "DAGSTER_HOME": str(dagster_home(home)), **settings}


@functools.cache
def empty_home() -> Path:
    """A new home's embedded stores, created once per test process and copied: its SQLite Dagster
    instance (creating and stamping its three databases costs ~0.17 s of CPU) and its MLflow database
    (MLflow's ~50 schema migrations, ~0.85 s); the suite creates a home for most tests."""
    template = Path(tempfile.mkdtemp(prefix="empty-home-"))  # removed by conftest's `empty_home_template_removed`
    ensure_home(template)
    dg.DagsterInstance.from_config(str(dagster_home(template))).dispose()
    uri = mlflow_tracking_uri(template)
    client = import_mlflow().MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
    return template


@dataclass
class Home:
    path: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    outcomes: dict[str, list[RunOutcome]] = field(default_factory=dict)
    """Named ticks a scenario ran, for tests that assert on them later."""
    resources: ExitStack = field(default_factory=ExitStack)

    @classmethod
    def create(cls, path: Path, **resource_overrides: dg.ConfigurableResource) -> "Home":
        if not dagster_home(path).exists():  # (a production home has its PostgreSQL dagster.yaml and MLflow server already)
            shutil.copytree(dagster_home(empty_home()), dagster_home(path))
            mlflow_dir(path).mkdir(parents=True)
            shutil.copyfile(mlflow_dir(empty_home()) / "mlflow.db", mlflow_dir(path) / "mlflow.db")
        ensure_home(path)
        instance = dg.DagsterInstance.from_config(str(dagster_home(path)))
        return cls(path, build_definitions(path, DeploymentSettings.from_environment(), **resource_overrides), instance)

    def redefine(self, **resource_overrides: dg.ConfigurableResource) -> None:
        """Rebuild the definitions, e.g. after the test changed deployment settings in the environment."""
        self.defs = build_definitions(self.path, DeploymentSettings.from_environment(), **resource_overrides)

    @property
    def landing(self) -> Path:
        return landing_dir(self.path)

    @property
    def store(self) -> Path:
        return store_dir(self.path)

    def resource(self, key: str) -> Any:
        """A resource resolved as in a run; set up until `close`."""
        return self.resources.enter_context(resolved_resource(self.defs, key))

    def close(self) -> None:
        self.resources.close()
        self.instance.dispose()

    def land(self, name: str, images: int, seed: int, **kwargs: Any) -> Path:
        return write_batch(self.landing / name, images, seed, **kwargs)

    def tick(self, run_config: dict[str, Any] | None = None, automation: bool = False, name: str | None = None) -> list[RunOutcome]:
        """The sensors once (ingest), and with `automation` the model path they call for."""
        outcomes = tick(self.defs, self.instance, self.path, run_config, automation=automation)
        if name:
            self.outcomes[name] = outcomes
        return outcomes

    def materialize(self, assets: str | list[str], partition: str | None = None, run_config: dict[str, Any] | None = None) -> RunOutcome:
        keys = [dg.AssetKey(asset) for asset in ([assets] if isinstance(assets, str) else assets)]
        return execute(self.defs, self.instance, keys, partition, run_config=run_config)

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


@dataclass
class ProductionHome(Home):
    """A home whose deployment settings (environment only) select S3, PostgreSQL and, when given, an
    MLflow tracking server."""

    bucket: str = ""
    database: str = ""
    settings: dict[str, str] = field(default_factory=dict)


DAGSTER_DB_PASSWORD = "sentinel-dagster-db-8e02"


def s3_client(home: ProductionHome) -> Any:
    """A boto3 client on the home's S3 server, with its credentials: what an uploader holds."""
    import boto3

    s = home.settings
    return boto3.client("s3", endpoint_url=s["YOLO_ASSETS_S3_ENDPOINT_URL"], region_name=s["YOLO_ASSETS_S3_REGION"],
                        aws_access_key_id=s["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s["AWS_SECRET_ACCESS_KEY"])


def upload_batch(home: ProductionHome, name: str, images: int, seed: int, marker: bool = True) -> None:
    """A synthetic batch uploaded as a user does (`yolo-assets upload`, marker last), or without its
    marker: the files alone, put one by one."""
    source = write_batch(home.path.parent / "upload" / name, images, seed)
    if marker:
        assert main(["--home", str(home.path), "upload", str(source), "--batch", name]) == 0
        return
    client = s3_client(home)
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.name != "_SUCCESS"):
        client.upload_file(str(path), home.bucket, f"landing/{name}/{path.relative_to(source).as_posix()}")


@contextmanager
def production_home(path: Path, s3: SeaweedFS, postgres: Postgres, tracking_uri: str | None = None, **extra: str) -> Iterator[ProductionHome]:
    """A fresh bucket and Dagster database on the given servers, the settings in the environment
    while the home is in use (as a deployment sets them), restored afterwards."""
    bucket, database = f"prod-{uuid.uuid4().hex[:10]}", f"dagster_{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket)
    postgres.create_database(database, "dagster", DAGSTER_DB_PASSWORD)
    settings = {
        "YOLO_ASSETS_STORAGE": "s3", "YOLO_ASSETS_S3_BUCKET": bucket, "YOLO_ASSETS_S3_ENDPOINT_URL": s3.endpoint_url,
        "YOLO_ASSETS_S3_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port), "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": DAGSTER_DB_PASSWORD, "DAGSTER_PG_DB": database, "DAGSTER_HOME": str(dagster_home(path)),
        # The daemon's runs find the home (MLflow store, scratch, ultralytics settings) by this variable:
        # without it they used the default home of the checkout (or make's YOLO_ASSETS_HOME).
        HOME_ENV_VAR: str(path),
        "YOLO_ASSETS_FIRST_MODEL_MIN_MAP50": "0", **({"YOLO_ASSETS_MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}), **extra,
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    dagster_home(path).mkdir(parents=True)
    shutil.copyfile(REPO / "deploy" / "dagster.yaml", dagster_home(path) / "dagster.yaml")
    home = ProductionHome.create(path)
    home.bucket, home.database, home.settings = bucket, database, settings
    try:
        yield home
    finally:
        home.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def kill_in_state(process: subprocess.Popen[Any], looks_ready: Callable[[], bool], wanted: Callable[[], bool],
                  timeout_s: float = 240, poll_s: float = 0.1) -> bool:
    """SIGKILL the process group of `process` (started with `start_new_session`) in a state the test has
    seen. Whenever the cheap `looks_ready()` holds, the group is frozen (SIGSTOP) while `wanted()` reads
    its state at leisure: killed if wanted, else resumed (SIGCONT) and watched again. On a loaded machine a
    slow look no longer lets the process run past the state it was reading. True when killed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if looks_ready():
            os.killpg(process.pid, signal.SIGSTOP)
            if wanted():
                os.killpg(process.pid, signal.SIGKILL)
                return True
            os.killpg(process.pid, signal.SIGCONT)
        time.sleep(poll_s)
    return False


@contextmanager
def running_daemon(env: dict[str, str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """The real `dagster-daemon` on the repository's workspace, in a process group of its own, stopped
    (TERM, then KILL) when the block ends."""
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield daemon
    finally:
        if daemon.poll() is None:  # (unless the test killed it)
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
