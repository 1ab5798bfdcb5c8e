"""The production path end to end on real servers on 127.0.0.1: batches uploaded to S3 (SeaweedFS),
the Dagster instance on PostgreSQL, artifacts in the S3 store, models on an MLflow tracking server
(PostgreSQL backend, artifacts served from S3). Selected by configuration alone (YOLO_ASSETS_STORAGE=s3
and friends), as a deployment would.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from helpers import DAGSTER_DB_PASSWORD, REPO, ProductionHome, production_home, training_run_config
from sentinels import SENTINEL_PG_PASSWORD, SENTINEL_S3_SECRET

from resources.mlflow_tracking import MLFLOW_ENVIRONMENT
from yolo_assets.core.s3 import request_counts
from yolo_assets.data.synth import write_batch
from yolo_assets.detector.serving import DETECTION_COLUMNS
from yolo_assets.ops.cli import main
from yolo_assets.ops.services import MlflowServer, Postgres, SeaweedFS, clean_environment

pytestmark = pytest.mark.slow

TINY = training_run_config()
MLFLOW_DB_PASSWORD = "sentinel-mlflow-db-1f3a"
SECRETS = (SENTINEL_S3_SECRET, SENTINEL_PG_PASSWORD, DAGSTER_DB_PASSWORD, MLFLOW_DB_PASSWORD)


@pytest.fixture(scope="module")
def mlflow_server(seaweedfs: SeaweedFS, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    postgres.create_database("mlflow", "mlflow", MLFLOW_DB_PASSWORD)
    seaweedfs.create_bucket("mlflow-artifacts")
    server = MlflowServer(
        tmp_path_factory.mktemp("mlflow-server"), postgres.url("mlflow", "mlflow", MLFLOW_DB_PASSWORD),
        "s3://mlflow-artifacts/mlflow", seaweedfs.endpoint_url, seaweedfs.access_key, seaweedfs.secret_key,
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def production(
    seaweedfs: SeaweedFS, postgres: Postgres, mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProductionHome]:
    """A home configured for production (S3, PostgreSQL, the MLflow server) through the environment
    alone, after one batch was uploaded and ticked through to a registered model, then an idle tick."""
    path = tmp_path_factory.mktemp("production") / "home"
    with production_home(path, seaweedfs, postgres, mlflow_server.tracking_uri) as home:
        source = write_batch(path.parent / "upload" / "line_a", 24, seed=11)
        assert main(["--home", str(path), "upload", str(source), "--batch", "line_a"]) == 0
        home.tick(TINY, automation=True, name="first")
        home.tick(TINY, automation=True, name="idle")
        yield home


def bucket_keys(server: SeaweedFS, bucket: str, prefix: str = "") -> list[str]:
    paginator = server.client().get_paginator("list_objects_v2")
    return [entry["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for entry in page.get("Contents", [])]


def test_an_upload_is_ingested_trained_and_registered_on_the_servers(production: ProductionHome, seaweedfs: SeaweedFS, postgres: Postgres) -> None:
    ingest, dataset, model = production.outcomes["first"]
    assert ingest.success and dataset.success and model.success, (ingest, dataset, model)
    assert "registered_model" in model.description
    # The runs are in PostgreSQL.
    assert type(production.instance.run_storage).__name__ == "PostgresRunStorage"
    connection = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="dagster", password=DAGSTER_DB_PASSWORD, dbname=production.database)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id FROM runs")
        assert {row[0] for row in cursor.fetchall()} == {ingest.run_id, dataset.run_id, model.run_id}
    connection.close()
    # Every artifact is in the S3 store, complete; none in the home's local store.
    keys = bucket_keys(seaweedfs, production.bucket, "store/")
    for asset in ("labeled_batch", "processed_images", "trained_weights", "evaluation_report"):
        version = production.data_version(asset, "line_a" if asset == "labeled_batch" else None)
        assert f"store/{asset}/{version}/_COMPLETE.json" in keys
        assert production.metadata(asset, "line_a" if asset == "labeled_batch" else None)["path"].startswith(f"s3://{production.bucket}/store/{asset}/")
    assert not any(production.store.rglob("*.json"))
    assert not [key for key in keys if "/checkpoints/" in key]  # removed after the training finished
    # The model is registered on the tracking server, its files in S3 behind it.
    mlflow = production.resource("mlflow")
    version = mlflow.alias_version("champion")
    assert version is not None and version.tags["dataset_version"] == production.data_version("processed_images")
    assert bucket_keys(seaweedfs, "mlflow-artifacts", "mlflow/")


def test_the_champion_loads_and_predicts_with_only_the_tracking_uri(production: ProductionHome, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    image = next((production.path.parent / "upload" / "line_a" / "images").glob("*.jpg"))
    script = (
        "import base64, json, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/yolo-defect-detector@champion')\n"
        f"detections = model.predict(pd.DataFrame({{'image': [{str(image)!r}]}}), params={{'conf': 0.001}})\n"
        # What a remote caller of MLflow's scoring server or KServe sends: the picture's bytes as base64.
        f"encoded = base64.b64encode(open({str(image)!r}, 'rb').read()).decode()\n"
        "remote = model.predict(pd.DataFrame({'image': [encoded]}), params={'conf': 0.001})\n"
        "print(json.dumps({'columns': list(detections.columns), 'rows': len(detections),"
        " 'classes': sorted(set(detections['class_name'])), 'same_from_bytes': remote.equals(detections)}))\n"
    )
    env = clean_environment(MLFLOW_TRACKING_URI=mlflow_server.tracking_uri, TMPDIR=str(tmp_path), **MLFLOW_ENVIRONMENT)
    assert not [name for name in env if name.startswith("AWS_")]
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = json.loads(result.stdout.strip().splitlines()[-1])
    assert predicted["columns"] == DETECTION_COLUMNS and predicted["rows"] > 0, predicted
    assert predicted["same_from_bytes"], predicted
    assert set(predicted["classes"]) <= {"scratch", "spot", "crack"}


def test_an_idle_tick_runs_nothing_and_an_unchanged_build_is_a_cache_hit(production: ProductionHome) -> None:
    assert production.outcomes["idle"] == []
    before = request_counts()
    assert production.materialize("processed_images").success
    assert production.metadata("processed_images")["cache_hit"] is True
    assert (request_counts() - before)["PutObject"] == 0


def test_adding_k_images_uploads_and_decodes_o_k_items(production: ProductionHome) -> None:
    source = write_batch(production.path.parent / "upload" / "line_b", 5, seed=12)
    assert main(["--home", str(production.path), "upload", str(source), "--batch", "line_b"]) == 0
    before = request_counts()
    batch_run, dataset_run = production.tick()
    assert batch_run.success and dataset_run.success
    spent = request_counts() - before
    puts = spent["PutObject"]
    print(f"S3 requests to ingest 5 new images into a dataset of 24: {dict(spent)}")
    # The new batch's images are decoded once, when the champion scores the fresh batch; the dataset
    # build that follows finds them in the shared preprocessing cache.
    assert production.metadata("fresh_batch_evaluation", "line_b")["num_processed"] == 5
    assert production.metadata("processed_images")["num_processed"] == 0
    # The new images' objects go up in three packs (blobs, cache images + records, dataset pairs), a pack
    # and its index each whatever their number, plus the three artifacts' few files (fresh_batch_evaluation
    # too) and the cache keys: 20 here. One object per image and kind cost 6 x 5 + 16.
    assert puts <= 2 * 3 + 16, puts


def test_no_secret_reaches_runs_metadata_mlflow_or_the_ui(production: ProductionHome) -> None:
    instance = production.instance
    for run in instance.get_runs():
        logged = " ".join(str(entry) for entry in instance.all_logs(run.run_id))
        shown = json.dumps(run.run_config, default=str) + json.dumps(dict(run.tags))
        for secret in SECRETS:
            assert secret not in logged and secret not in shown
    for asset in ("processed_images", "trained_weights", "evaluation_report", "registered_model"):
        metadata = json.dumps(production.metadata(asset), default=str)
        assert not any(secret in metadata for secret in SECRETS)
    client = production.resource("mlflow").client()
    for run in client.search_runs([production.resource("mlflow").experiment_id()]):
        assert not any(secret in repr(run.data.params) + repr(run.data.tags) for secret in SECRETS)
    for version in client.search_model_versions("name='yolo-defect-detector'"):
        assert not any(secret in repr(version.tags) for secret in SECRETS)
    snapshot = dg.serialize_value(RepositorySnap.from_def(production.defs.get_repository_def()))
    assert "AWS_SECRET_ACCESS_KEY" in snapshot and not any(secret in snapshot for secret in SECRETS)
