"""Faults on the model path (the MLflow server down at registration, a training killed on one machine),
on MLflow servers of the file's own (the one the first test stops is its alone): nothing is lost, nothing trains twice, and
what failed says why. A file of its own so that it runs beside test_production_faults.py."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from helpers import REPO, ProductionHome, kill_in_state, production_home, s3_client, subprocess_env, training_run_config, upload_batch
from latency_proxy import LatencyProxy

from yolo_assets.detector.checkpoint import checkpoint_epoch
from yolo_assets.ops.cli import main
from yolo_assets.ops.services import MlflowServer, Postgres, SeaweedFS

pytestmark = pytest.mark.slow


@contextmanager
def mlflow_server(seaweedfs: SeaweedFS, postgres: Postgres, folder: Path) -> Iterator[MlflowServer]:
    """An MLflow server of its own (database and artifact prefix), stopped afterwards."""
    database = f"mlflow_{uuid.uuid4().hex[:8]}"
    postgres.create_database(database, database, "sentinel-mlflow-fault-2c")
    seaweedfs.create_bucket("mlflow-artifacts")
    server = MlflowServer(folder, postgres.url(database, database, "sentinel-mlflow-fault-2c"), f"s3://mlflow-artifacts/{database}",
                          seaweedfs.endpoint_url, seaweedfs.access_key, seaweedfs.secret_key).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_mlflow(seaweedfs: SeaweedFS, postgres: Postgres, tmp_path: Path) -> Iterator[MlflowServer]:
    """For the test that stops it."""
    with mlflow_server(seaweedfs, postgres, tmp_path / "mlflow") as server:
        yield server


@pytest.fixture(scope="module")
def shared_mlflow(seaweedfs: SeaweedFS, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """For the tests that leave it running (~10 s of CPU to start one)."""
    with mlflow_server(seaweedfs, postgres, tmp_path_factory.mktemp("mlflow")) as server:
        yield server


def test_the_mlflow_server_down_at_registration_fails_clearly_and_is_attempted_again_without_training_once_it_answers(
    seaweedfs: SeaweedFS, postgres: Postgres, own_mlflow: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # MLflow's client retries a refused connection for minutes by default; the step's retries are ours.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with production_home(tmp_path / "home", seaweedfs, postgres, own_mlflow.tracking_uri, YOLO_ASSETS_RETRY_FIRST_DELAY_S="0") as home:
        upload_batch(home, "line_a", 24, seed=25)
        assert all(o.success for o in home.tick())
        config = training_run_config()
        assert home.materialize(["trained_weights", "evaluation_report"], run_config=config).success
        weights = home.data_version("trained_weights")
        own_mlflow.stop()
        failed = home.materialize("registered_model")
        assert not failed.success and "Exceeded max_retries of 3" in failed.failure
        assert "Connection refused" in failed.failure, failed.failure  # the cause, not only the retries
        assert len(home.instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)) == 3
        # While the server is down, the run waits for it: status says so, and a tick starts nothing.
        assert not [o for o in home.tick() if "transient_failure_retry" in o.description]
        capsys.readouterr()
        assert main(["--home", str(home.path), "status", "--json"]) == 0
        [waiting] = json.loads(capsys.readouterr().out)["waiting_for_retry"]
        assert waiting["run_id"] == failed.run_id and waiting["assets"] == ["registered_model"]
        assert waiting["plan"].startswith("will retry at") and "attempt 2 of 6" in waiting["plan"]
        assert "will retry at" in home.instance.get_run_by_id(failed.run_id).tags["yolo_assets/retry"]  # on the run's page
        own_mlflow.start()  # same port, same backend
        trainings = len(home.instance.fetch_materializations(dg.AssetKey("trained_weights"), limit=10).records)
        [retry] = [o for o in home.tick() if "transient_failure_retry" in o.description]
        assert retry.success, retry.failure
        tags = home.instance.get_run_by_id(retry.run_id).tags
        assert (tags["yolo_assets/attempt"], tags["yolo_assets/retry_of"], tags["yolo_assets/first_attempt"]) == ("2", failed.run_id, failed.run_id)
        assert not [o for o in home.tick() if "transient_failure_retry" in o.description]  # once
        assert home.materialize("model_rollout").success
        assert home.data_version("trained_weights") == weights
        assert len(home.instance.fetch_materializations(dg.AssetKey("trained_weights"), limit=10).records) == trainings
        version = home.resource("mlflow").alias_version("champion")
        assert version is not None and version.tags["weights_version"] == weights
        assert len(home.resource("mlflow").client().search_model_versions("name='yolo-defect-detector'")) == 1


def stored_checkpoint_keys(home: ProductionHome, client: Any) -> list[str]:
    """The checkpoints the store holds complete (an upload is one PUT: a key is there whole or not at all)."""
    listed = client.list_objects_v2(Bucket=home.bucket, Prefix="store/_objects/checkpoints/").get("Contents", [])
    return [entry["Key"] for entry in listed if entry["Key"].endswith(".pt")]


def stored_checkpoint_epoch(home: ProductionHome, client: Any, workdir: Path) -> int:
    """The epoch of the checkpoint the store holds now (0 when none), read from S3 directly."""
    keys = stored_checkpoint_keys(home, client)
    if not keys:
        return 0
    target = workdir / f"stored-{uuid.uuid4().hex[:6]}.pt"
    # One GET: the bytes of one version, even when the training replaces the object meanwhile
    # (download_file reads a large object in ranges pinned to its ETag and fails if it changes).
    target.write_bytes(client.get_object(Bucket=home.bucket, Key=keys[0])["Body"].read())
    return checkpoint_epoch(target)


@pytest.mark.parametrize("during_upload", [False, True], ids=["between-epochs", "during-a-checkpoint-upload"])
def test_a_training_killed_on_one_machine_resumes_on_another_with_an_empty_cache(
    seaweedfs: SeaweedFS, postgres: Postgres, shared_mlflow: MlflowServer, tmp_path: Path, during_upload: bool
) -> None:
    """Each epoch's checkpoint is uploaded while the next epoch trains. Killed at any moment, even in
    the middle of an upload (the first machine's uploads held to 1 MB/s by a proxy), the training
    resumes on another machine from the last checkpoint the store holds complete.

    How many epochs end during one upload depends on the machine (uploads coalesce: newest wins), so
    the kill waits for a state, not an epoch: a complete checkpoint stored and, as the variant asks,
    an upload in flight or none. The first machine is frozen (SIGSTOP) while its state is read, so the
    state it is killed in is the state the test saw; a cheap listing spots the first checkpoint, so a
    loaded machine cannot run to its last epoch while the test looks."""
    import torch  # noqa: F401 - imported now, not in the first look at a checkpoint while the training runs

    epochs = 6
    with production_home(tmp_path / "home", seaweedfs, postgres, shared_mlflow.tracking_uri) as home, \
            LatencyProxy(seaweedfs.ports["s3"], delay_s=0.0, upload_bytes_per_s=1e6 if during_upload else None) as proxy:
        upload_batch(home, "line_a", 32, seed=26)
        assert all(o.success for o in home.tick())
        config = training_run_config(epochs=epochs)
        (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
        command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "yolo_assets.definitions",
                   "--select", "trained_weights", "-c", str(tmp_path / "train.yaml")]
        machines = {name: tmp_path / f"cache-{name}" for name in ("first", "second")}
        env = {name: subprocess_env(home.path, **home.settings, YOLO_ASSETS_CACHE_DIR=str(cache)) for name, cache in machines.items()}
        env["first"]["YOLO_ASSETS_S3_ENDPOINT_URL"] = proxy.url
        checkpoints = machines["first"] / "_objects" / "checkpoints"
        with open(tmp_path / "first.log", "w") as log:
            first = subprocess.Popen(command, cwd=REPO, env=env["first"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = s3_client(home)  # one client for the whole watch: making one costs more CPU than a look
        stored, uploading = 0, False

        def in_the_wanted_state() -> bool:
            nonlocal stored, uploading
            uploading = any(checkpoints.rglob("*.pt.uploading"))
            stored = stored_checkpoint_epoch(home, client, tmp_path)
            return uploading == during_upload

        kill_in_state(first, lambda: bool(stored_checkpoint_keys(home, client)), in_the_wanted_state)
        first.wait(30)
        assert 1 <= stored < epochs and uploading == during_upload, (stored, uploading, (tmp_path / "first.log").read_text()[-3000:])
        # The store holds a complete checkpoint, not half of the one that was being uploaded.
        assert stored_checkpoint_epoch(home, client, tmp_path) >= stored
        assert main(["--home", str(home.path), "recover"]) == 0
        second = subprocess.run(command, cwd=REPO, env=env["second"], capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        event = home.instance.get_latest_materialization_event(dg.AssetKey("trained_weights"))
        assert event is not None
        messages = [e.user_message for e in home.instance.all_logs(event.run_id)]
        resumed = [m for m in messages if m.startswith("resuming from epoch")]
        # From the last checkpoint the first machine uploaded, not an older one.
        assert resumed and int(resumed[0].split()[3]) >= stored + 1, (stored, messages[-20:])
        started = [int(m.split()[1].split("/")[0]) for m in messages if m.startswith("epoch ")]
        assert min(started) > 1 and max(started) == epochs
