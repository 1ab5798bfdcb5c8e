"""What the Dagster Helm chart renders from deploy/values.yaml, built here the way its templates build it,
and opened for real: no helm binary, no cluster.

The chart writes its own instance config (ConfigMap `<release>-dagster-instance`) and never reads
deploy/dagster.yaml. `instance_config` follows the chart's templates at CHART_VERSION key by key
(helm/dagster/templates/configmap-instance.yaml and helpers/instance/_postgresql.tpl, _run-launcher.tpl,
_run-coordinator.tpl, _compute-log-manager.tpl, _concurrency.tpl); a key our values leave unset takes the
chart's default, which Dagster's own default matches or which is left out here. The test then opens it
as a `DagsterInstance` against the test PostgreSQL and S3 server: storage, run launcher, run coordinator,
compute logs and concurrency pools, the pieces every pod of the release loads.

The other modules (test_kubernetes.py, test_kubernetes_security.py) import the renderers below for the
run launcher, the code location's container context and the chart's own pods.
"""

import copy
import importlib.util
import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy
import yaml
from dagster._core.storage.compute_log_manager import ComputeIOType
from dagster._core.storage.dagster_run import DagsterRun
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher
from dagster_postgres.utils import pg_url_from_config

from yolo_assets.ops.services import Postgres, SeaweedFS

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VALUES = DEPLOY / "values.yaml"
# The official Dagster chart (dagster/dagster), the same release as the pinned dagster.
CHART_VERSION = "1.13.27"
RELEASE = NAMESPACE = "yolo-assets"
# `dagster.fullname`: the release name, then the chart's name unless the release name holds it.
FULLNAME = f"{RELEASE}-dagster"
# The chart's defaults for the keys values.yaml leaves unset and the renderers below read.
CHART_DEFAULTS: dict[str, Any] = {
    "global": {"dagsterHome": "/opt/dagster/dagster_home"},
    "runLauncher": {"config": {"k8sRunLauncher": {"loadInclusterConfig": True}}},
    "postgresql": {"postgresqlParams": {}},
}
DAGSTER_LABEL = {"yolo-assets/dagster": "true"}  # deploy/kubernetes/networkpolicy.yaml: a Dagster pod


def load_values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def with_chart_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """values.yaml over the chart's defaults (Helm's merge: maps deep, everything else replaced)."""

    def merge(onto: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
        for key, value in over.items():
            onto[key] = merge(onto[key], value) if isinstance(value, Mapping) and isinstance(onto.get(key), dict) else copy.deepcopy(value)
        return onto

    return merge(copy.deepcopy(CHART_DEFAULTS), values)


def names(refs: list[Mapping[str, str]]) -> list[str]:
    return [ref["name"] for ref in refs if "name" in ref]


# --- the instance ConfigMap ------------------------------------------------------------------------------


def postgres_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_postgresql.tpl (`dagsterYaml.postgresql.config`)."""
    pg = with_chart_defaults(values)["postgresql"]
    db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],  # dagster.postgresql.host: the external host when enabled is false
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def run_launcher_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_run-launcher.tpl (`dagsterYaml.runLauncher.k8s`)."""
    full = with_chart_defaults(values)
    launcher = full["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": full["global"]["serviceAccountName"],
        "dagster_home": full["global"]["dagsterHome"],
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": full["global"]["postgresqlSecretName"],
    }
    optional = {
        "env_config_maps": names(launcher.get("envConfigMaps", [])),
        "env_secrets": names(launcher.get("envSecrets", [])),
        "env_vars": launcher.get("envVars"),
        "volume_mounts": launcher.get("volumeMounts"),
        "volumes": launcher.get("volumes"),
        "labels": launcher.get("labels"),
        "resources": launcher.get("resources"),
        "fail_pod_on_run_failure": True if launcher.get("failPodOnRunFailure") else None,
        "scheduler_name": launcher.get("schedulerName"),
        "security_context": launcher.get("securityContext"),
    }
    config.update({key: value for key, value in optional.items() if value})
    run_k8s = launcher.get("runK8sConfig") or {}
    keys = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config", "podTemplateSpecMetadata": "pod_template_spec_metadata",
            "jobSpecConfig": "job_spec_config", "jobMetadata": "job_metadata"}  # fmt: skip
    if run_k8s:
        config["run_k8s_config"] = {keys[key]: value for key, value in run_k8s.items() if value}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def run_coordinator_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_run-coordinator.tpl (`dagsterYaml.runCoordinator.queued`, the version that knows
    the top-level `concurrency` section: the queue's limits are written only where values set them)."""
    queued = (values["dagsterDaemon"]["runCoordinator"].get("config") or {}).get("queuedRunCoordinator") or {}
    config: dict[str, Any] = {}
    if queued.get("maxConcurrentRuns") is not None:
        config["max_concurrent_runs"] = queued["maxConcurrentRuns"]
    elif not values.get("concurrency", {}).get("enabled"):
        config["max_concurrent_runs"] = -1
    if queued.get("tagConcurrencyLimits"):
        config["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
    for key, name in (("dequeueIntervalSeconds", "dequeue_interval_seconds"), ("dequeueUseThreads", "dequeue_use_threads"),
                      ("dequeueNumWorkers", "dequeue_num_workers")):  # fmt: skip
        if queued.get(key):
            config[name] = queued[key]
    return {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator", **({"config": config} if config else {})}


def compute_logs_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_compute-log-manager.tpl (`dagsterYaml.computeLogManager.s3`)."""
    manager = values["computeLogManager"]
    assert manager["type"] == "S3ComputeLogManager", manager["type"]
    s3 = manager["config"]["s3ComputeLogManager"]
    config: dict[str, Any] = {"bucket": s3["bucket"], "verify": s3.get("verify") is not False}
    for key, name in (("localDir", "local_dir"), ("prefix", "prefix"), ("useSsl", "use_ssl"), ("verifyCertPath", "verify_cert_path"),
                      ("endpointUrl", "endpoint_url"), ("skipEmptyFiles", "skip_empty_files"), ("uploadInterval", "upload_interval"),
                      ("uploadExtraArgs", "upload_extra_args"), ("showUrlOnly", "show_url_only"), ("region", "region")):  # fmt: skip
        if s3.get(key):
            config[name] = s3[key]
    return {"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager", "config": config}


def concurrency_config(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """helpers/instance/_concurrency.tpl, rendered only with `concurrency.enabled`; the chart refuses a run
    limit in both `concurrency.runs` and the run coordinator, asserted here as a failure too."""
    concurrency = values.get("concurrency") or {}
    if not concurrency.get("enabled"):
        return None
    pools, runs = concurrency.get("pools") or {}, concurrency.get("runs") or {}
    queued = (values["dagsterDaemon"]["runCoordinator"].get("config") or {}).get("queuedRunCoordinator") or {}
    assert not (runs.get("maxConcurrentRuns") is not None and queued.get("maxConcurrentRuns") is not None), "the chart fails: two run limits"
    assert not (runs.get("tagConcurrencyLimits") and queued.get("tagConcurrencyLimits")), "the chart fails: two tag limit lists"
    rendered: dict[str, Any] = {}
    pool_config = {name: pools[key] for key, name in (("defaultLimit", "default_limit"), ("granularity", "granularity"),
                                                      ("opGranularityRunBuffer", "op_granularity_run_buffer")) if pools.get(key) is not None}  # fmt: skip
    if pool_config:
        rendered["pools"] = pool_config
    run_config = {name: runs[key] for key, name in (("maxConcurrentRuns", "max_concurrent_runs"), ("tagConcurrencyLimits", "tag_concurrency_limits"))
                  if runs.get(key)}  # fmt: skip
    if run_config:
        rendered["runs"] = run_config
    return rendered


def instance_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """templates/configmap-instance.yaml: the dagster.yaml of every pod of the release."""
    storage = postgres_config(values)
    daemon = values["dagsterDaemon"]
    config: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage", "config": storage},
        "run_launcher": run_launcher_config(values),
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage", "config": storage},
        "compute_logs": compute_logs_config(values),
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        config["run_coordinator"] = run_coordinator_config(values)
    monitoring = daemon.get("runMonitoring") or {}
    if daemon["enabled"] and monitoring.get("enabled"):
        config["run_monitoring"] = {"enabled": True, "start_timeout_seconds": monitoring["startTimeoutSeconds"],
                                    "poll_interval_seconds": monitoring["pollIntervalSeconds"]}  # fmt: skip
    retries = daemon.get("runRetries") or {}
    if daemon["enabled"] and retries.get("enabled"):
        config["run_retries"] = {"enabled": True, "max_retries": retries["maxRetries"]}
        if retries.get("retryOnAssetOrOpFailure") is not None:
            config["run_retries"]["retry_on_asset_or_op_failure"] = retries["retryOnAssetOrOpFailure"]
    concurrency = concurrency_config(values)
    if concurrency is not None:
        config["concurrency"] = concurrency
    return config


# --- the code location (the dagster-user-deployments subchart) -------------------------------------------


def deployment_values(values: Mapping[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return dict(deployment)


def code_location_context(values: Mapping[str, Any]) -> dict[str, Any]:
    """The container context the code server hands every run launched from it
    (charts/dagster-user-deployments/templates/helpers/_helpers.tpl, `k8sContainerContext`)."""
    deployment = deployment_values(values)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{FULLNAME}-{deployment['name']}-user-env", *names(deployment.get("envConfigMaps", []))],
    }
    optional = {
        "env_secrets": names(deployment.get("envSecrets", [])),
        "volume_mounts": deployment.get("volumeMounts"),
        "volumes": deployment.get("volumes"),
        "labels": deployment.get("labels"),
        "resources": deployment.get("resources"),
        "scheduler_name": deployment.get("schedulerName"),
    }
    k8s.update({key: value for key, value in optional.items() if value})
    k8s["namespace"] = NAMESPACE
    k8s["service_account_name"] = values["global"]["serviceAccountName"]
    k8s["run_k8s_config"] = {"pod_spec_config": {"automount_service_account_token": True}}
    return {"k8s": k8s}


def code_server_deployment(values: Mapping[str, Any]) -> dict[str, Any]:
    """The code server's Deployment (charts/dagster-user-deployments/templates/deployment-user.yaml),
    for the fields values.yaml sets."""
    deployment = deployment_values(values)
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    selector = {"app.kubernetes.io/name": "dagster-user-deployments", "app.kubernetes.io/instance": RELEASE,
                "component": "user-deployments", "deployment": deployment["name"]}  # fmt: skip
    container: dict[str, Any] = {
        "name": "dagster-user-deployments",
        "securityContext": deployment.get("securityContext", {}),
        "imagePullPolicy": deployment["image"]["pullPolicy"],
        "image": image,
        "args": ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(deployment["port"]), *deployment["codeServerArgs"]],
        "env": [
            {"name": "DAGSTER_CURRENT_IMAGE", "value": image},
            {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"secretKeyRef": {"name": values["global"]["postgresqlSecretName"], "key": "postgresql-password"}}},
            {"name": "DAGSTER_CONTAINER_CONTEXT", "value": json.dumps(code_location_context(values))},
        ],
        "envFrom": [
            {"configMapRef": {"name": f"{FULLNAME}-user-deployments-shared-env"}},
            {"configMapRef": {"name": f"{FULLNAME}-{deployment['name']}-user-env"}},
            *({"configMapRef": ref} for ref in deployment.get("envConfigMaps", [])),
            *({"secretRef": ref} for ref in deployment.get("envSecrets", [])),
        ],
        "resources": deployment.get("resources", {}),
        "readinessProbe": {"exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(deployment["port"])]},
                           "periodSeconds": 20, "timeoutSeconds": 10, "successThreshold": 1, "failureThreshold": 15},  # fmt: skip
    }
    if deployment.get("volumeMounts"):
        container["volumeMounts"] = deployment["volumeMounts"]
    spec: dict[str, Any] = {
        "serviceAccountName": values["global"]["serviceAccountName"],
        "securityContext": deployment.get("podSecurityContext", {}),
        "containers": [container],
    }
    if deployment.get("volumes"):
        spec["volumes"] = deployment["volumes"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{FULLNAME}-{deployment['name']}", "namespace": NAMESPACE, "labels": {**selector}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": {**selector, **deployment.get("labels", {})}}, "spec": spec},
        },
    }


def chart_pod_specs(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod specs of the webserver and the daemon (templates/helpers/_deployment-webserver.tpl,
    deployment-daemon.yaml): the pod's securityContext, and the container's on the main container and
    on every init container (check-db-ready, one init-user-deployment per code location)."""
    specs = {}
    deployment = deployment_values(values)
    for component, key in (("webserver", "dagsterWebserver"), ("daemon", "dagsterDaemon")):
        part = values.get(key, {})
        security = part.get("securityContext", {})
        init = [{"name": "check-db-ready", "securityContext": security},
                {"name": f"init-user-deployment-{deployment['name']}", "securityContext": security}]  # fmt: skip
        mounts = [{"name": "dagster-instance", "mountPath": "/opt/dagster/dagster_home/dagster.yaml", "subPath": "dagster.yaml"},
                  *part.get("volumeMounts", [])]  # fmt: skip
        specs[component] = {
            "securityContext": part.get("podSecurityContext", {}),
            "initContainers": init,
            "containers": [{"name": component, "securityContext": security, "volumeMounts": mounts}],
            "volumes": [{"name": "dagster-instance", "configMap": {"name": f"{FULLNAME}-instance"}}, *part.get("volumes", [])],
            "labels": part.get("labels", {}),
        }
    return specs


def chart_roles(values: Mapping[str, Any]) -> list[str]:
    """The Roles the chart and its subchart would create (templates/role.yaml and
    charts/dagster-user-deployments/templates/role.yaml: each `{{- if .Values.rbacEnabled }}`; the
    subchart's default is true)."""
    roles = []
    if values.get("rbacEnabled", True):
        roles.append(f"{FULLNAME}-role")
    subchart = values.get("dagster-user-deployments", {})
    if subchart.get("enabled") and subchart.get("enableSubchart") and subchart.get("rbacEnabled", True):
        roles.append(f"{RELEASE}-dagster-user-deployments-role")
    return roles


def k8s_run_launcher(values: Mapping[str, Any], kubeconfig: Path) -> K8sRunLauncher:
    """The K8sRunLauncher the instance builds from the chart's run_launcher config; only where to find the
    cluster differs (a kubeconfig naming a cluster that is never contacted, instead of in-cluster config)."""
    config = dict(run_launcher_config(values)["config"])
    config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return K8sRunLauncher(**config)


def write_offline_kubeconfig(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "offline", "cluster": {"server": "https://kubernetes.invalid:6443"}}],
                "users": [{"name": "offline", "user": {}}],
                "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline", "namespace": NAMESPACE}}],
                "current-context": "offline",
            }
        )
    )
    return path


# --- tests -----------------------------------------------------------------------------------------------

SENTINEL_DB_PASSWORD = "sentinel-chart-db-4c19"


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_values()


def configmap_data() -> dict[str, str]:
    (configmap,) = [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "configmap.yaml").read_text()) if doc]
    return dict(configmap["data"])


@pytest.fixture
def chart_instance(
    values: dict[str, Any], postgres: Postgres, seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dg.DagsterInstance, dict[str, Any]]]:
    """The release's instance, from the chart-rendered dagster.yaml. What changes from values.yaml is only
    where this machine's servers are: PostgreSQL's host, port, database and user, the S3 endpoint and its
    bucket, and the run launcher's way to the (never contacted) cluster."""
    database, user, bucket = f"dagster_chart_{uuid.uuid4().hex[:8]}", "dagster_chart", f"chart-{uuid.uuid4().hex[:10]}"
    postgres.create_database(database, user, SENTINEL_DB_PASSWORD)
    seaweedfs.create_bucket(bucket)
    here = copy.deepcopy(values)
    here["postgresql"].update(postgresqlHost="127.0.0.1", postgresqlDatabase=database, postgresqlUsername=user, service={"port": postgres.port})
    here["computeLogManager"]["config"]["s3ComputeLogManager"].update(bucket=bucket, endpointUrl=seaweedfs.endpoint_url, region="us-east-1")
    config = instance_config(here)
    config["run_launcher"]["config"].update(load_incluster_config=False, kubeconfig_file=str(write_offline_kubeconfig(tmp_path / "kubeconfig")))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    # What the pods get from the Secrets: the chart's DAGSTER_PG_PASSWORD, yolo-assets-s3.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", SENTINEL_DB_PASSWORD)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance, config
    finally:
        instance.dispose()


def test_every_storage_the_chart_renders_names_psycopg2(values: dict[str, Any]) -> None:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which the images do not install."""
    config = instance_config(values)
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        url = pg_url_from_config({**config[storage]["config"], "postgres_db": {**config[storage]["config"]["postgres_db"], "password": "x"}})
        assert url.startswith("postgresql+psycopg2://dagster:x@postgresql.example.internal:5432/dagster"), (storage, url)
    # The same driver as the non-Helm instance (deploy/dagster.yaml, `yolo-assets stack`).
    non_helm = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["postgresql"]["postgresqlScheme"] == non_helm == "postgresql+psycopg2"


def test_without_the_scheme_every_pod_would_fail_to_open_the_instance(values: dict[str, Any], postgres: Postgres) -> None:
    """Why the scheme is set: the chart's default (none) gives a bare postgresql:// URL, which SQLAlchemy 2.1
    opens with psycopg 3; the images install psycopg2 (dagster-postgres' driver) only."""
    bare = copy.deepcopy(values)
    del bare["postgresql"]["postgresqlScheme"]
    bare["postgresql"].update(postgresqlHost="127.0.0.1", service={"port": postgres.port})
    storage = instance_config(bare)["run_storage"]["config"]
    storage = {**storage, "postgres_db": {**storage["postgres_db"], "password": SENTINEL_DB_PASSWORD}}
    assert "scheme" not in storage["postgres_db"]
    assert sqlalchemy.engine.make_url(pg_url_from_config(storage)).get_dialect().driver == "psycopg"
    ours = instance_config(values)["run_storage"]["config"]
    assert sqlalchemy.engine.make_url(pg_url_from_config({**ours, "postgres_db": {**ours["postgres_db"], "password": "x"}})).get_dialect().driver == "psycopg2"
    if importlib.util.find_spec("psycopg") is None:  # as in the images: what every pod would hit
        from dagster_postgres.run_storage import PostgresRunStorage

        with pytest.raises(ModuleNotFoundError, match="psycopg"):
            PostgresRunStorage.from_config_value(None, storage)


def test_the_chart_instance_opens_on_postgres_with_its_launcher_queue_pools_and_s3_compute_logs(
    chart_instance: tuple[dg.DagsterInstance, dict[str, Any]], values: dict[str, Any], seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    instance, config = chart_instance
    # Storage: runs, events and schedules in PostgreSQL, through psycopg2.
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    run = instance.add_run(DagsterRun(job_name="probe", run_id=str(uuid.uuid4())))
    instance.report_engine_event("chart instance probe", dagster_run=run)
    assert instance.get_run_by_id(run.run_id) is not None
    assert any(record.message == "chart instance probe" for record in instance.all_logs(run.run_id))
    assert instance.schedule_storage is not None and list(instance.all_instigator_state()) == []
    # The run launcher every run goes through, with the settings values.yaml gives it.
    launcher = instance.run_launcher
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.service_account_name == values["global"]["serviceAccountName"] and launcher.job_namespace == NAMESPACE
    assert launcher.instance_config_map == f"{FULLNAME}-instance" and launcher.postgres_password_secret == values["global"]["postgresqlSecretName"]
    assert list(launcher.env_secrets) == names(k8s["envSecrets"]) and list(launcher.env_config_maps) == names(k8s["envConfigMaps"])
    assert launcher.security_context == k8s["securityContext"] and launcher.fail_pod_on_run_failure
    assert launcher.run_k8s_config["pod_spec_config"]["securityContext"] == k8s["runK8sConfig"]["podSpecConfig"]["securityContext"]
    # The run queue: the daemon's QueuedRunCoordinator with the GPU limit.
    queued = values["concurrency"]["runs"]
    coordinator = instance.run_coordinator
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    run_queue = instance.get_concurrency_config().run_queue_config
    assert run_queue is not None and run_queue.max_concurrent_runs == queued["maxConcurrentRuns"]
    assert [dict(limit) for limit in run_queue.tag_concurrency_limits] == queued["tagConcurrencyLimits"]
    # Concurrency pools: each pool of the code location starts at the chart's default limit (1).
    assert instance.global_op_concurrency_default_limit == values["concurrency"]["pools"]["defaultLimit"] == 1
    for pool in ("gpu", "batch_retractions", "model_rollout"):
        assert instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
        assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1, pool
    # Compute logs: what a step prints reaches S3, and another pod (the webserver) reads it back from there.
    writer = instance.compute_log_manager
    assert isinstance(writer, S3ComputeLogManager)
    log_key = [run.run_id, "compute_logs", "trained_weights"]
    with writer.capture_logs(log_key):
        print("Epoch 1/20 ... mAP50 0.412 (chart instance probe)", flush=True)
    s3_config = config["compute_logs"]["config"]
    reader = S3ComputeLogManager(**{**s3_config, "local_dir": str(tmp_path / "webserver")})
    assert reader.is_capture_complete(log_key)
    assert b"Epoch 1/20" in (reader.get_log_data(log_key).stdout or b"")
    keys = [o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=s3_config["bucket"]).get("Contents", [])]
    assert keys and all(key.startswith(values["computeLogManager"]["config"]["s3ComputeLogManager"]["prefix"] + "/") for key in keys)
    assert any(key.endswith(ComputeIOType.STDOUT.value) or key.endswith(".out") for key in keys), keys


def test_compute_logs_go_to_the_store_s_bucket_and_region(values: dict[str, Any]) -> None:
    s3 = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    data = configmap_data()
    assert (s3["bucket"], s3["region"]) == (data["YOLO_ASSETS_S3_BUCKET"], data["YOLO_ASSETS_S3_REGION"])
    assert 0 < s3["uploadInterval"] <= 60  # training's epochs appear on the run page while it trains
    assert not s3.get("skipEmptyFiles")  # other pods see a capture complete by its (often empty) stderr object
    # Every pod that writes or reads them has the bucket's credentials.
    deployment = deployment_values(values)
    for refs in (values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"], deployment["envSecrets"], values["dagsterWebserver"]["envSecrets"]):
        assert "yolo-assets-s3" in names(refs)


def test_the_chart_binds_no_role_of_its_own(values: dict[str, Any]) -> None:
    """Both RBAC switches off: the only Role bound to our ServiceAccount is deploy/kubernetes/rbac.yaml's."""
    assert values["rbacEnabled"] is False and values["dagster-user-deployments"]["rbacEnabled"] is False
    assert chart_roles(values) == []
    assert chart_roles({**values, "dagster-user-deployments": {**values["dagster-user-deployments"], "rbacEnabled": True}}) == [
        f"{RELEASE}-dagster-user-deployments-role"
    ]  # the subchart's default, which the top-level switch does not reach
    # No ServiceAccount from either chart: ours is named globally (the subchart creates none then).
    assert values["serviceAccount"]["create"] is False and values["global"]["serviceAccountName"] == "yolo-assets-dagster"
    roles = [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "rbac.yaml").read_text()) if doc and doc["kind"] in {"Role", "RoleBinding"}]
    assert {doc["kind"] for doc in roles} == {"Role", "RoleBinding"} and len(roles) == 2


def test_the_concurrency_section_leaves_the_run_queue_to_the_run_coordinator(values: dict[str, Any]) -> None:
    config = instance_config(values)
    """Dagster refuses run-queue limits in the run coordinator once `concurrency` has pools or runs (and
    the chart refuses them in both places): the queue's limits are in `concurrency.runs` only."""
    config = instance_config(values)
    runs = values["concurrency"]["runs"]
    assert config["concurrency"] == {
        "pools": {"default_limit": 1},
        "runs": {"max_concurrent_runs": runs["maxConcurrentRuns"], "tag_concurrency_limits": runs["tagConcurrencyLimits"]},
    }
    assert "config" not in config["run_coordinator"] and config["run_coordinator"]["class"] == "QueuedRunCoordinator"
