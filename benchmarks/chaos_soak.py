"""Chaos soak: the local production stack under the daemon, its services killed at random, no hand on it.

    python benchmarks/chaos_soak.py [--batches 30] [--images 4] [--duration 1800] [--seed 0] [--workdir DIR]

`yolo-assets stack up` (SeaweedFS, PostgreSQL, the MLflow server, dagster-daemon) on a fresh home.
Batches land spread over `--duration` seconds (an uploader that finds S3 down tries again). At seeded
random moments SeaweedFS, PostgreSQL and the MLflow server are each killed for 10-120 s and brought back
(`stack up` again), and the daemon is killed once and restarted; every fault is logged with its time.
Then the script waits, with no other action, until the platform settles, and reports:
  - every accepted batch in the latest dataset version, which is trained, evaluated and registered;
  - 0 duplicate runs per run key, and every attempt chain (yolo_assets/first_attempt) with its length;
  - 0 artifacts in the store without their completion object;
  - the success rate per batch (ingested in the end) and per dataset version (trained and registered).
Exit status 0 when every check holds. The short form runs in `make test` (tests/test_chaos_soak.py).
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolo_assets.assets.keys import LABELED_BATCH, PROCESSED_IMAGES, REGISTERED_MODEL, TRAINED_WEIGHTS  # noqa: E402
from yolo_assets.assets.materializations import data_version_of, metadata_value  # noqa: E402
from yolo_assets.core.home import HOME_ENV_VAR, ensure_home  # noqa: E402
from yolo_assets.data.synth import write_batch  # noqa: E402
from yolo_assets.history.recovery import FIRST_ATTEMPT_TAG  # noqa: E402
from yolo_assets.ops import stack  # noqa: E402
from yolo_assets.ops.services import Postgres, SeaweedFS, alive, stop_group  # noqa: E402

SERVICES = ("seaweedfs", "postgres", "mlflow")
IN_PROGRESS = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}
# Runs launched by automation carry no run config: deployment settings keep every training tiny, and the
# first retry comes 10 s after a failure instead of a minute.
SOAK_SETTINGS = {
    "YOLO_ASSETS_TRAIN_EPOCHS": "1", "YOLO_ASSETS_TRAIN_IMGSZ": "64", "YOLO_ASSETS_TRAIN_WORKERS": "0", "YOLO_ASSETS_TRAIN_PLOTS": "false",
    "YOLO_ASSETS_FIRST_MODEL_MIN_MAP50": "0", "YOLO_ASSETS_RETRY_FIRST_DELAY_S": "10",
}


@dataclass(frozen=True)
class Fault:
    service: str
    at_s: float
    down_s: float


def plan_faults(seed: int, duration_s: float, min_down_s: float, max_down_s: float) -> list[Fault]:
    """One outage per service and one daemon kill, each at a random moment of a slot of its own in the
    landing window (faults do not overlap: each service's return is its own)."""
    rng = random.Random(seed)
    services = [*SERVICES, "daemon"]
    rng.shuffle(services)
    slot = duration_s / len(services)
    faults = []
    for index, service in enumerate(services):
        down = 5.0 if service == "daemon" else min(rng.uniform(min_down_s, max_down_s), 0.9 * slot)
        faults.append(Fault(service, index * slot + rng.uniform(0, slot - down), down))
    return faults


def kill(home: Path, service: str) -> None:
    state = stack.load_state(home)
    if service == "seaweedfs":
        SeaweedFS(stack.stack_dir(home) / "seaweedfs", "", "", **state["seaweedfs"]).stop()
    elif service == "postgres":
        Postgres(Path(state["postgres"]["root"]), "").stop()
    elif service == "mlflow":
        stop_group(state["mlflow"]["pid"], graceful_seconds=0)
    else:
        stop_group(state["dagster"]["daemon"], graceful_seconds=0)


@dataclass
class Soak:
    home: Path
    log: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f}s] {text}"
        self.events.append(line)
        self.log(line)

    def up(self) -> dict[str, Any]:
        return stack.up(self.home, settings=SOAK_SETTINGS)


def land(soak: Soak, source: Path, name: str, deadline: float) -> None:
    """What an uploader does: land the batch, and while the store does not answer, try again."""
    from resources.settings import DeploymentSettings
    from yolo_assets.definitions import build_definitions
    from yolo_assets.ops.runs import resolved_resource

    while True:
        try:
            with resolved_resource(build_definitions(soak.home, DeploymentSettings.from_environment()), "landing_zone") as zone:
                zone.upload_batch(source, name)
            soak.note(f"landed {name}")
            return
        except Exception as error:  # the S3 server is down: the uploader retries
            if time.monotonic() > deadline:
                raise
            soak.note(f"landing {name} failed ({type(error).__name__}); trying again in 5 s")
            time.sleep(5)


def settled(instance: dg.DagsterInstance, batches: list[str]) -> bool:
    """Nothing running or queued, every batch ingested, and the latest dataset (holding them all) registered."""
    if instance.get_runs(dg.RunsFilter(statuses=list(IN_PROGRESS)), limit=1):
        return False
    ingested = {p for p in batches if instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=LABELED_BATCH, asset_partitions=[p]), limit=1).records}
    if ingested != set(batches):
        return False
    dataset = instance.get_latest_materialization_event(PROCESSED_IMAGES)
    registered = instance.get_latest_materialization_event(REGISTERED_MODEL)
    if dataset is None or registered is None or set(metadata_value(dataset.asset_materialization, "input_batches", {})) != set(batches):
        return False
    return metadata_value(registered.asset_materialization, "dataset_version") == data_version_of(dataset.asset_materialization)


def report(instance: dg.DagsterInstance, batches: list[str], store_check: Callable[[], list[str]]) -> dict[str, Any]:
    runs = instance.get_runs()
    run_keys = Counter(run.tags.get("dagster/run_key") for run in runs if run.tags.get("dagster/run_key"))
    chains = Counter(run.tags.get(FIRST_ATTEMPT_TAG, run.run_id) for run in runs)
    datasets = [r.asset_materialization for r in instance.fetch_materializations(PROCESSED_IMAGES, limit=1000).records]
    versions = {data_version_of(m) for m in datasets}
    trained = Counter(metadata_value(r.asset_materialization, "dataset_version")
                      for r in instance.fetch_materializations(TRAINED_WEIGHTS, limit=1000).records)
    registered = {metadata_value(r.asset_materialization, "dataset_version")
                  for r in instance.fetch_materializations(REGISTERED_MODEL, limit=1000).records}
    ingested = [p for p in batches if instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=LABELED_BATCH, asset_partitions=[p]), limit=1).records]
    latest = datasets[0] if datasets else None
    return {
        "runs": len(runs),
        "failed_runs": sum(run.status == dg.DagsterRunStatus.FAILURE for run in runs),
        "duplicate_run_keys": {key: n for key, n in run_keys.items() if n > 1},
        "retried_chains": {chain[:8]: n for chain, n in chains.items() if n > 1},
        "batch_success_rate": len(ingested) / len(batches),
        "batches_not_ingested": sorted(set(batches) - set(ingested)),
        # What holds up settling, when it did not settle: (run, status, partition, assets).
        "runs_in_progress": [(run.run_id[:8], run.status.value, run.tags.get("dagster/partition"), [k.to_user_string() for k in run.asset_selection or ()])
                             for run in runs if run.status in IN_PROGRESS],
        "dataset_versions": len(versions),
        "dataset_success_rate": len(versions & registered) / len(versions) if versions else 0.0,
        "trainings_per_dataset_version_max": max(trained.values(), default=0),
        "latest_dataset_holds_every_batch": latest is not None and set(metadata_value(latest, "input_batches", {})) == set(batches),
        "latest_dataset_registered": latest is not None and data_version_of(latest) in registered,
        "incomplete_artifacts": store_check(),
    }


def incomplete_artifacts(home: Path) -> list[str]:
    """Artifact folders in the S3 store without their completion object."""
    state = stack.load_state(home)
    client = SeaweedFS(stack.stack_dir(home) / "seaweedfs", state["credentials"]["s3_access_key"],
                       state["credentials"]["s3_secret_key"], ports=state["seaweedfs"]["ports"]).client()
    keys = [e["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=stack.BUCKET, Prefix="store/")
            for e in page.get("Contents", [])]
    folders = {"/".join(key.split("/")[:3]) for key in keys if not key.split("/")[1].startswith("_") and "/_cache_keys/" not in key}
    return sorted(folder for folder in folders if f"{folder}/_COMPLETE.json" not in keys)


def passed(result: dict[str, Any]) -> bool:
    return (result["batch_success_rate"] == 1.0 and result["latest_dataset_holds_every_batch"] and result["latest_dataset_registered"]
            and not result["duplicate_run_keys"] and not result["incomplete_artifacts"] and result["trainings_per_dataset_version_max"] <= 1)


def run_soak(home: Path, batches: int, images: int, duration_s: float, seed: int, min_down_s: float = 10.0, max_down_s: float = 120.0,
             settle_s: float = 1800.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The soak on a fresh `home`; returns the report (with the fault log), the stack stopped afterwards."""
    saved = dict(os.environ)  # the stack's settings (and ensure_home's DAGSTER_HOME) are this process's only while the soak runs
    ensure_home(home)
    soak = Soak(home, log)
    sources = [write_batch(home.parent / "upload" / f"line_{i:03d}", images, seed=5000 + seed * 100 + i) for i in range(batches)]
    names = [source.name for source in sources]
    faults = plan_faults(seed, duration_s, min_down_s, max_down_s)
    timeline: list[tuple[float, str, Any]] = [(duration_s * i / max(batches - 1, 1), "land", source) for i, source in enumerate(sources)]
    timeline += [(fault.at_s, "kill", fault) for fault in faults] + [(fault.at_s + fault.down_s, "restore", fault) for fault in faults]
    timeline.sort(key=lambda event: event[0])
    try:
        os.environ[HOME_ENV_VAR] = str(home)
        os.environ.update(stack.client_environment(soak.up()))
        soak.started = time.monotonic()  # the timeline starts once the stack is up
        soak.note(f"stack up; faults planned: {[(f.service, round(f.at_s), round(f.down_s)) for f in faults]}")
        uploads = ThreadPoolExecutor(max_workers=batches)  # an uploader waiting for S3 holds up nothing else
        landings = []
        for at, action, subject in timeline:
            time.sleep(max(0.0, soak.started + at - time.monotonic()))
            if action == "land":
                landings.append(uploads.submit(land, soak, subject, subject.name, soak.started + at + 600))
            elif action == "kill":
                kill(home, subject.service)
                soak.note(f"killed {subject.service} for {subject.down_s:.0f} s")
            elif subject.service == "daemon":
                stack.start_dagster(home, stack.load_state(home), SOAK_SETTINGS)
                soak.note("daemon back")
            else:
                soak.up()
                soak.note(f"{subject.service} back (stack up)")
        for landing in landings:
            landing.result()
        uploads.shutdown()
        instance = dg.DagsterInstance.get()
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and not settled(instance, names):
            daemon = stack.load_state(home).get("dagster", {}).get("daemon")
            if not (daemon and alive(daemon)):
                soak.note("the daemon is gone: a supervisor restarts it (stack up)")
                soak.up()
            time.sleep(10)
        soak.note("settled" if settled(instance, names) else f"not settled after {settle_s:.0f} s")
        result = {**report(instance, names, lambda: incomplete_artifacts(home)), "seconds": round(time.monotonic() - soak.started),
                  "faults": [f.__dict__ for f in faults], "events": soak.events}
        result["passed"] = passed(result)
        return result
    finally:
        stack.down(home)
        os.environ.clear()
        os.environ.update(saved)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds over which batches land and faults happen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-soak-"))
    result = run_soak(workdir / "home", args.batches, args.images, args.duration, args.seed)
    print(json.dumps({k: v for k, v in result.items() if k != "events"}, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
