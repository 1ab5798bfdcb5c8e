"""The embedded default: one home folder holds the Dagster instance, landing zone, store and MLflow."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV_VAR = "YOLO_ASSETS_HOME"
DEFAULT_HOME = ".yolo-assets"

_DAGSTER_YAML = """\
# Written by yolo-assets for the embedded default (SQLite storage under this folder).
telemetry:
  enabled: false
nux:
  enabled: false  # no "Join the Dagster community" pop-up on first opening the UI
run_monitoring:  # a run left STARTING by a lost daemon is failed, then retried: see deploy/dagster.yaml
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
  max_resume_run_attempts: 0
concurrency:
  pools:
    default_limit: 1  # "gpu": two trainings never share one device; "batch_retractions", "model_rollout": one writer
# All runs' events in one SQLite file (WAL) instead of one new database per run: creating and
# migrating a per-run database cost ~0.25 s of every run's fixed overhead. Dagster's docstring calls
# this class "intended for test cases"; it is public and dagster.yaml-configurable, covered here by the
# daemon, UI and resume tests on the pinned Dagster version. Deployments use PostgreSQL instead.
event_log_storage:
  module: dagster._core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir:
      env: DAGSTER_HOME
"""


def home_dir() -> Path:
    """The home folder: $YOLO_ASSETS_HOME, else ./.yolo-assets (made absolute). Read when the code
    location loads: the home decides where every resource points, as DAGSTER_HOME does for Dagster."""
    return Path(os.environ.get(HOME_ENV_VAR) or DEFAULT_HOME).expanduser().resolve()


def dagster_home(home: Path) -> Path:
    return home / "dagster"


def landing_dir(home: Path) -> Path:
    return home / "landing"


def store_dir(home: Path) -> Path:
    return home / "store"


def hash_cache_path(home: Path) -> Path:
    return home / "cache" / "file-hashes.sqlite"


def mlflow_dir(home: Path) -> Path:
    return home / "mlflow"


def mlflow_tracking_uri(home: Path) -> str:
    return f"sqlite:///{mlflow_dir(home) / 'mlflow.db'}"


def scratch_dir(home: Path) -> Path:
    """Working folders of training and validation (ultralytics writes here, never to ./runs)."""
    return home / "scratch"


def ensure_home(home: Path) -> Path:
    """Create the home layout (idempotent) and point DAGSTER_HOME at its instance folder."""
    for folder in (dagster_home(home), landing_dir(home), store_dir(home), hash_cache_path(home).parent, mlflow_dir(home)):
        folder.mkdir(parents=True, exist_ok=True)
    dagster_yaml = dagster_home(home) / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(dagster_home(home))  # process environment: Dagster's own tools read it
    return home
