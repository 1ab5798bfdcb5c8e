"""Kubernetes, offline: no cluster, no mocks.

For every step, the Job that `k8s_job_executor` would submit is built by dagster-k8s's own code, the way
`K8sStepHandler` builds it: the run launcher and the code location's container context as the Helm chart
renders them from deploy/values.yaml, then the executor config of our Definitions, then the op's real
`dagster-k8s/config` tag, then `construct_dagster_k8s_job`. Each Job, and every manifest in deploy/, is
validated strictly (unknown fields fail) against the OpenAPI schema of a pinned Kubernetes version
(PyPI kubernetes-validate ships the schemas); a custom resource outside that schema (KEDA's ScaledObject)
is checked against the fields its project documents instead.
"""

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import dagster_k8s.client
import kubernetes.client
import kubernetes_validate
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs, ExecuteStepArgs
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    OwnerReference,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_job_name_from_run_id,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)
from kubernetes.utils import parse_quantity
from test_kubernetes_chart import CHART_VERSION, code_location_context, k8s_run_launcher, write_offline_kubeconfig
from test_kubernetes_security import restricted_violations

from resources.kubernetes import (
    DATASET_STEPS,
    DEFAULT_CACHE_MAX_BYTES,
    DEFAULT_SIZES,
    DEFAULT_STEP,
    EXECUTOR_VARIABLE,
    StepResources,
)
from resources.s3_artifact_store import S3ArtifactStore
from resources.settings import DeploymentSettings
from yolo_assets.core.parallel import usable_cpus
from yolo_assets.definitions import STORAGE_VARIABLE, TRACKING_URI_VARIABLE, build_definitions

# The Kubernetes minor the manifests must be valid for (the oldest we support; kubernetes-validate
# 1.37.0 holds the schemas of 1.25-1.37, in a strict variant that refuses unknown fields).
KUBERNETES_VERSION = "1.33"
# The step sizes with no YOLO_ASSETS_K8S_* variable set.
DEFAULTS = StepResources.from_environment({})
RELEASE = NAMESPACE = "yolo-assets"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
VALUES = DEPLOY / "values.yaml"
NOT_MANIFESTS = {VALUES, DEPLOY / "dagster.yaml"}  # Helm values and the instance config of the non-Helm path
APPLIED = DEPLOY / "kubernetes"  # what `kubectl apply -f deploy/kubernetes/` applies (not recursive)
EXAMPLES = DEPLOY / "examples"  # applied by hand, one file at a time (README), never by a folder sync
IMAGE = "registry.example.com/yolo-assets:0.1.0"
RUN_ID = "5b8e3f42-9c1d-4e7a-8b6f-2d0c9a1e7f30"
RUN_POD = ("dagster-run-5b8e3f42-9c1d-4e7a-8b6f-2d0c9a1e7f30", "0f8b6c1a-2d3e-4f50-9a8b-7c6d5e4f3a21")
ASSET_JOB = "__ASSET_JOB"
SERVE = "yolo-assets-serve"  # deploy/kubernetes/serving.yaml: Deployment, Service, PDB; its autoscalers
# API groups of custom resources: not in the Kubernetes schema, so the generic test skips them, and why.
NOT_IN_SCHEMA = {"keda.sh/v1alpha1": "KEDA's CRD; test_the_keda_scaled_object_uses_the_fields_keda_documents checks it"}
# What KEDA documents for a ScaledObject's spec (keda.sh/docs, "Scaling Deployments": ScaledObject spec).
KEDA_SPEC_FIELDS = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
    "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip

# The chart keys values.yaml relies on, from the chart's values schema (helm/dagster/schema/schema/charts/
# dagster/values.py and subschema/, dagster_user_deployments/subschema/user_deployments.py) at CHART_VERSION.
# `[]` is a list item; `.*` below a key: a free-form Kubernetes object (resources) or map.
CHART_KEYS = {
    "global.postgresqlSecretName", "global.serviceAccountName", "global.dagsterHome",
    "serviceAccount.create", "serviceAccount.name", "rbacEnabled", "generatePostgresqlPasswordSecret",
    "postgresql.enabled", "postgresql.postgresqlHost", "postgresql.postgresqlUsername", "postgresql.postgresqlDatabase",
    "postgresql.postgresqlParams.*", "postgresql.postgresqlScheme", "postgresql.service.port",
    "dagster-user-deployments.enabled", "dagster-user-deployments.enableSubchart", "dagster-user-deployments.rbacEnabled",
    "dagster-user-deployments.deployments[].name", "dagster-user-deployments.deployments[].image.repository",
    "dagster-user-deployments.deployments[].image.tag", "dagster-user-deployments.deployments[].image.pullPolicy",
    "dagster-user-deployments.deployments[].dagsterApiGrpcArgs[]", "dagster-user-deployments.deployments[].codeServerArgs[]",
    "dagster-user-deployments.deployments[].port", "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled",
    "dagster-user-deployments.deployments[].envConfigMaps[].name", "dagster-user-deployments.deployments[].envSecrets[].name",
    "dagster-user-deployments.deployments[].resources.*", "dagster-user-deployments.deployments[].labels.*",
    "dagster-user-deployments.deployments[].podSecurityContext.*", "dagster-user-deployments.deployments[].securityContext.*",
    "dagster-user-deployments.deployments[].volumes[].*", "dagster-user-deployments.deployments[].volumeMounts[].*",
    "dagsterWebserver.service.port", "dagsterWebserver.readinessProbe.*", "dagsterWebserver.envSecrets[].name",
    "dagsterWebserver.labels.*", "dagsterWebserver.podSecurityContext.*", "dagsterWebserver.securityContext.*",
    "dagsterWebserver.volumes[].*", "dagsterWebserver.volumeMounts[].*",
    "dagsterDaemon.labels.*", "dagsterDaemon.podSecurityContext.*", "dagsterDaemon.securityContext.*",
    "dagsterDaemon.volumes[].*", "dagsterDaemon.volumeMounts[].*", "runLauncher.config.k8sRunLauncher.securityContext.*",
    "runLauncher.type", "runLauncher.config.k8sRunLauncher.imagePullPolicy", "runLauncher.config.k8sRunLauncher.jobNamespace",
    "runLauncher.config.k8sRunLauncher.envConfigMaps[].name", "runLauncher.config.k8sRunLauncher.envSecrets[].name",
    "runLauncher.config.k8sRunLauncher.failPodOnRunFailure", "runLauncher.config.k8sRunLauncher.runK8sConfig.*",
    "dagsterDaemon.enabled", "dagsterDaemon.runCoordinator.enabled", "dagsterDaemon.runCoordinator.type",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].key",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].value",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].limit",
    # helm/dagster/schema/schema/charts/dagster/subschema/concurrency.py, compute_log_manager.py
    "concurrency.enabled", "concurrency.pools.defaultLimit", "concurrency.pools.granularity",
    "concurrency.runs.maxConcurrentRuns", "concurrency.runs.tagConcurrencyLimits[].key",
    "concurrency.runs.tagConcurrencyLimits[].value", "concurrency.runs.tagConcurrencyLimits[].limit",
    "computeLogManager.type", "computeLogManager.config.s3ComputeLogManager.bucket",
    "computeLogManager.config.s3ComputeLogManager.prefix", "computeLogManager.config.s3ComputeLogManager.region",
    "computeLogManager.config.s3ComputeLogManager.endpointUrl", "computeLogManager.config.s3ComputeLogManager.uploadInterval",
    "computeLogManager.config.s3ComputeLogManager.localDir",
    "dagsterDaemon.runMonitoring.enabled", "dagsterDaemon.runMonitoring.startTimeoutSeconds",
    "dagsterDaemon.runMonitoring.pollIntervalSeconds", "dagsterDaemon.runMonitoring.maxResumeRunAttempts",
    "dagsterDaemon.runRetries.enabled", "dagsterDaemon.runRetries.maxRetries", "dagsterDaemon.runRetries.retryOnAssetOrOpFailure",
    "telemetry.enabled",
}  # fmt: skip

# What the issue allows the Role (jobs and pods create/get/list/watch/delete, pods/log get), plus the two
# read-only rules dagster-k8s's own calls need (test_the_role_covers_every_call_dagster_k8s_makes).
ALLOWED_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"create", "get", "list", "watch", "delete"},
    ("", "pods/log"): {"get"},
    ("batch", "jobs/status"): {"get"},
    ("", "events"): {"list"},
}
# Each Kubernetes API method dagster_k8s/client.py calls, and the permission it needs.
API_PERMISSIONS = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "read_namespaced_job_status": ("batch", "jobs/status", "get"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "read_namespaced_pod": ("", "pods", "get"),
    "list_namespaced_pod": ("", "pods", "list"),
    "delete_namespaced_pod": ("", "pods", "delete"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "list_namespaced_event": ("", "events", "list"),
}
# Credentials a deployment's environment holds; the code location loads with them in these tests.
SENTINELS = {
    "AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-8c1f",
    "AWS_ACCESS_KEY_ID": "sentinel-aws-key-3b7e",
    "DAGSTER_PG_PASSWORD": "sentinel-pg-password-51d0",
    "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-password-9e2a",
    "YOLO_ASSETS_ALERT_WEBHOOK_URL": "https://hooks.example.com/sentinel-webhook-77f3",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|WEBHOOK|ACCESS_KEY|BACKEND_STORE_URI", re.IGNORECASE)
CREDENTIAL_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),  # a URL with a password in it
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"hooks\.slack\.com/services/"),
]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p not in NOT_MANIFESTS)


def all_manifests() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in documents(path)]


def cluster_settings() -> dict[str, str]:
    """The ConfigMap's settings: the environment of every pod the chart starts."""
    return dict(next(doc for doc in all_manifests() if doc["kind"] == "ConfigMap")["data"])


def serving(kind: str) -> dict[str, Any]:
    """The one manifest of `kind` named SERVE, anywhere in deploy/."""
    (doc,) = [doc for doc in all_manifests() if doc["kind"] == kind and doc["metadata"]["name"] == SERVE]
    return doc


def container_port(main: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    return port if isinstance(port, int) else {p["name"]: p["containerPort"] for p in main["ports"]}[port]


def validate(manifest: Mapping[str, Any]) -> None:
    kubernetes_validate.validate(dict(manifest), KUBERNETES_VERSION, strict=True)


def names(refs: list[Mapping[str, str]]) -> list[str]:
    return [ref["name"] for ref in refs]


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dagster-k8s loads a kubeconfig when its launcher and executor start; this one names a cluster
    that is never contacted (nothing here calls the API)."""
    return write_offline_kubeconfig(tmp_path_factory.mktemp("kube") / "config")


@pytest.fixture(scope="module")
def run_launcher(values: dict[str, Any], kubeconfig: Path) -> K8sRunLauncher:
    """The K8sRunLauncher of the instance config the chart renders from values.yaml
    (tests/test_kubernetes_chart.py opens that whole instance against PostgreSQL)."""
    return k8s_run_launcher(values, kubeconfig)


@pytest.fixture(scope="module")
def k8s_definitions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.Definitions]:
    """The code location as the cluster loads it: the ConfigMap's settings and the Secrets' values
    (sentinels) in its environment while it loads, and only then: with the cluster's S3 settings left
    in the environment, a later test could reach AWS."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**cluster_settings(), **SENTINELS}.items():
            patch.setenv(name, value)
        definitions = build_definitions(tmp_path_factory.mktemp("home"), DeploymentSettings.from_environment())
    yield definitions


@pytest.fixture(scope="module")
def executor_config(k8s_definitions: dg.Definitions) -> dict[str, Any]:
    """The executor's config as Dagster processes it (defaults filled in, unknown keys refused)."""
    executor = k8s_definitions.executor
    assert isinstance(executor, dg.ExecutorDefinition) and executor.name == "k8s"

    @dg.op
    def probe() -> None: ...

    @dg.job(executor_def=executor)
    def probe_job() -> None:
        probe()

    return dg.validate_run_config(probe_job, {})["execution"]["k8s"]


@pytest.fixture(scope="module")
def step_tags(k8s_definitions: dg.Definitions) -> dict[str, Mapping[str, str]]:
    """Each step of the code location's asset job and its op tags (what the executor reads per step)."""
    job = k8s_definitions.resolve_implicit_global_asset_job_def()
    return {node.name: node.tags for node in job.graph.nodes}


def job_origin(values: Mapping[str, Any]) -> JobPythonOrigin:
    """A run's origin as the code server reports it: our image, and the container context the chart gives it."""
    return JobPythonOrigin(
        ASSET_JOB,
        RepositoryPythonOrigin(
            executable_path="/usr/local/bin/python",
            code_pointer=ModuleCodePointer("yolo_assets.definitions", "defs", working_directory="/opt/yolo-assets"),
            container_image=IMAGE,
            entry_point=["dagster"],
            container_context=code_location_context(values),
        ),
    )


def build_run_job(values: Mapping[str, Any], launcher: K8sRunLauncher) -> dict[str, Any]:
    """The Job `K8sRunLauncher.launch_run` submits for a run (dagster_k8s/launcher.py), as a manifest."""
    origin = job_origin(values)
    run = DagsterRun(job_name=ASSET_JOB, run_id=RUN_ID, job_code_origin=origin)
    context = launcher.get_container_context_for_run(run)
    job_config = context.get_k8s_job_config(job_image=origin.repository_origin.container_image, run_launcher=launcher)
    job_name = get_job_name_from_run_id(RUN_ID)
    args = ExecuteRunArgs(job_origin=origin, run_id=RUN_ID, instance_ref=None, set_exit_code_on_failure=True).get_command_args()
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=args,
        job_name=job_name,
        pod_name=job_name,
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": ASSET_JOB, "dagster/run-id": RUN_ID},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": ASSET_JOB}],
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def build_step_job(
    step: str, tags: Mapping[str, str], values: Mapping[str, Any], launcher: K8sRunLauncher, executor_config: Mapping[str, Any]
) -> dict[str, Any]:
    """The Job `K8sStepHandler.launch_step` submits for `step` (dagster_k8s/executor.py), as a manifest."""
    origin = job_origin(values)
    run = DagsterRun(job_name=ASSET_JOB, run_id=RUN_ID, job_code_origin=origin)
    # k8s_job_executor: its config becomes a container context.
    executor_context = K8sContainerContext(
        **{field: executor_config.get(field) for field in (
            "image_pull_policy", "image_pull_secrets", "service_account_name", "env_config_maps", "env_secrets", "env_vars",
            "volume_mounts", "volumes", "labels", "resources", "scheduler_name", "security_context")},
        namespace=executor_config.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor_config.get("step_k8s_config", {})),
    )  # fmt: skip
    # K8sStepHandler._get_container_context: launcher + code location, executor, the op's tag, per-step override.
    per_step = executor_config["per_step_k8s_config"]
    context = (
        K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        .merge(executor_context)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
        .merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_step.get(step, {}))))
    )
    job_config = context.get_k8s_job_config(executor_config.get("job_image"), launcher)
    if not job_config.job_image:
        job_config = job_config.with_image(origin.repository_origin.container_image)
    args = ExecuteStepArgs(job_origin=origin, run_id=RUN_ID, step_keys_to_execute=[step])
    job_name = f"dagster-step-{get_k8s_job_name(RUN_ID, step)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=args.get_command_args(skip_serialized_namedtuple=True),
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": ASSET_JOB, "dagster/op": step, "dagster/run-id": RUN_ID},
        env_vars=[
            *args.get_command_env(),
            {"name": "DAGSTER_RUN_JOB_NAME", "value": ASSET_JOB},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step},
        ],
        owner_references=[OwnerReference(kind="Pod", name=RUN_POD[0], uid=RUN_POD[1])]
        if executor_config["enable_owner_references"]
        else [],
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


@pytest.fixture(scope="module")
def step_jobs(
    step_tags: dict[str, Mapping[str, str]], values: dict[str, Any], run_launcher: K8sRunLauncher, executor_config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    return {step: build_step_job(step, tags, values, run_launcher, executor_config) for step, tags in step_tags.items()}


@pytest.fixture(scope="module")
def run_job(values: dict[str, Any], run_launcher: K8sRunLauncher) -> dict[str, Any]:
    return build_run_job(values, run_launcher)


def pod_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def container(job: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(job)["containers"]
    return only


# --- the step Jobs ---------------------------------------------------------------------------------------


def test_every_step_job_is_valid_kubernetes(step_jobs: dict[str, dict[str, Any]], run_job: dict[str, Any]) -> None:
    assert {"labeled_batch", "processed_images", "trained_weights", "evaluation_report", "registered_model"} <= set(step_jobs)
    cpu_image = cluster_settings()["YOLO_ASSETS_K8S_CPU_IMAGE"]
    for step, job in {**step_jobs, "(run)": run_job}.items():
        assert kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION, step
        # The run, the GPU step and the unsized steps run the code location's (CUDA) image; the sized
        # CPU-only steps the CPU image.
        gpu = "nvidia.com/gpu" in container(job).get("resources", {}).get("limits", {})
        cpu_only = step in DEFAULT_SIZES and not gpu
        assert job["kind"] == "Job" and container(job)["image"] == (cpu_image if cpu_only else IMAGE), step
    assert container(step_jobs["trained_weights"])["image"] == IMAGE and container(step_jobs["labeled_batch"])["image"] == cpu_image


def test_every_generated_job_meets_the_restricted_pod_security_standard(step_jobs: dict[str, dict[str, Any]], run_job: dict[str, Any]) -> None:
    """The run pod and every step pod, as dagster-k8s builds them from the chart's launcher settings and the
    code location's context: restricted, a read-only root filesystem, and the two writable emptyDirs."""
    for name, job in {**step_jobs, "(run)": run_job}.items():
        spec = pod_spec(job)
        assert restricted_violations(spec) == [], name
        mounts = {mount["mountPath"] for mount in container(job)["volumeMounts"]}
        assert {"/tmp", "/var/lib/yolo-assets"} <= mounts, name  # /tmp: compute log staging; the home: cache and scratch
        assert job["spec"]["template"]["metadata"]["labels"]["yolo-assets/dagster"] == "true", name  # NetworkPolicy peer


def test_each_steps_pod_config_is_what_the_cluster_settings_make(step_tags: dict[str, Mapping[str, str]], executor_config: dict[str, Any]) -> None:
    """No second source: the executor built with the definitions carries each sized step's config as
    StepResources makes it of the ConfigMap's settings (built here from the manifest), and no asset
    restates it in an op tag fixed at import."""
    cluster = StepResources.from_environment(cluster_settings())
    carried = {step: UserDefinedDagsterK8sConfig.from_dict(config) for step, config in executor_config["per_step_k8s_config"].items()}
    assert carried == {step: UserDefinedDagsterK8sConfig.from_dict(cluster.k8s_config(step)) for step in DEFAULT_SIZES.keys() - {DEFAULT_STEP}}
    assert executor_config["per_step_k8s_config"]["registered_model"]["container_config"]["image"] == cluster_settings()["YOLO_ASSETS_K8S_CPU_IMAGE"]
    assert not [step for step, tags in step_tags.items() if "dagster-k8s/config" in tags]


def test_only_training_asks_for_a_gpu(step_jobs: dict[str, dict[str, Any]]) -> None:
    gpu_steps = {step for step, job in step_jobs.items() if "nvidia.com/gpu" in container(job)["resources"]["limits"]}
    assert gpu_steps == {"trained_weights"}, gpu_steps


def test_each_step_asks_for_its_cpu_memory_and_disk(step_jobs: dict[str, dict[str, Any]]) -> None:
    cluster = StepResources.from_environment(cluster_settings())
    for step, job in step_jobs.items():
        sized = step if step in cluster.sizes else DEFAULT_STEP  # a step without a size: DEFAULT
        size = cluster.sizes[sized]
        expected = {"cpu": size.cpu, "memory": size.memory, "ephemeral-storage": cluster.ephemeral_storage(sized)}
        resources = container(job)["resources"]
        assert resources["requests"] == expected, step
        assert {k: resources["limits"][k] for k in expected} == expected, step
    assert container(step_jobs["labeled_batch"])["resources"]["requests"]["cpu"] == "2"
    assert container(step_jobs["processed_images"])["resources"]["requests"]["cpu"] == "4"


def test_steps_that_read_a_dataset_have_disk_for_the_read_through_cache(step_jobs: dict[str, dict[str, Any]]) -> None:
    """The cache (YOLO_ASSETS_CACHE_DIR, under the home emptyDir) is evicted down to
    YOLO_ASSETS_CACHE_MAX_BYTES; a pod that writes past its ephemeral-storage limit is evicted."""
    configmap = cluster_settings()
    cache = int(configmap["YOLO_ASSETS_CACHE_MAX_BYTES"])
    assert DEFAULT_CACHE_MAX_BYTES == S3ArtifactStore.model_fields["cache_max_bytes"].default == cache
    for step in DATASET_STEPS:
        disk = parse_quantity(container(step_jobs[step])["resources"]["limits"]["ephemeral-storage"])
        assert disk == cache + parse_quantity(DEFAULT_SIZES[step].scratch) and disk - cache >= 4 * 1024**3, step
    for step, job in step_jobs.items():  # every pod's disk is bounded: the home and /tmp emptyDirs count against it
        assert parse_quantity(container(job)["resources"]["limits"]["ephemeral-storage"]) > 0, step
    smaller = StepResources.from_environment({"YOLO_ASSETS_CACHE_MAX_BYTES": str(4 * 1024**3)})
    assert smaller.ephemeral_storage("trained_weights") == "12Gi" and smaller.ephemeral_storage("labeled_batch") == "8Gi"
    with pytest.raises(ValueError, match="YOLO_ASSETS_CACHE_MAX_BYTES"):
        StepResources.from_environment({"YOLO_ASSETS_CACHE_MAX_BYTES": "20GiB"})


def test_trained_weights_gets_a_gpu_shared_memory_and_the_gpu_tolerations(step_jobs: dict[str, dict[str, Any]]) -> None:
    job = step_jobs["trained_weights"]
    spec, main = pod_spec(job), container(job)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {k: main["resources"]["requests"][k] for k in ("cpu", "memory")} == {"cpu": "6", "memory": "24Gi"}
    (shm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "6Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in main["volumeMounts"]
    assert parse_quantity(shm["emptyDir"]["sizeLimit"]) < parse_quantity(main["resources"]["limits"]["memory"])  # shm is memory
    # No node selector: the nvidia.com/gpu request alone places the pod on a node whose device plugin
    # advertises a GPU; nvidia.com/gpu.present exists only with GPU Feature Discovery / the GPU Operator.
    assert "nodeSelector" not in spec
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_only_gpu_steps_go_to_the_gpu_pool(step_jobs: dict[str, dict[str, Any]]) -> None:
    for step, job in step_jobs.items():
        gpu = "nvidia.com/gpu" in container(job)["resources"]["limits"]
        assert gpu == (step == "trained_weights"), step  # evaluation_report: GPU only when a deployment asks
        assert ("tolerations" in pod_spec(job)) == gpu and "nodeSelector" not in pod_spec(job), step
    # The evaluation runs ultralytics' dataloader too: /dev/shm, but on a CPU node by default.
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(step_jobs["evaluation_report"])["volumeMounts"]
    # A deployment that wants a pool or a GPU model names it; the selector lands on GPU steps only.
    pool = StepResources.from_environment({"YOLO_ASSETS_K8S_GPU_NODE_SELECTOR": "nvidia.com/gpu.product=NVIDIA-L4"})
    assert pool.k8s_config("trained_weights")["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert "pod_spec_config" not in pool.k8s_config("processed_images")


# Common node shapes (vCPU, GiB of memory) and what the kubelet and the daemonsets of a GPU node take from
# them. Kubelet reservations as EKS computes them (CPU: 6% of the first core, 1% of the second, 0.5% of
# the next two, 0.25% of the rest; memory: 255 MiB + 11 MiB per pod, 29 pods, + 100 MiB eviction threshold),
# the memory the instance does not report (~4%), and daemonsets: NVIDIA device plugin, GPU Feature
# Discovery, DCGM exporter, CNI, kube-proxy, CSI node, a log agent (~0.5 vCPU, ~1 GiB requested).
NODE_SHAPES = {"4 vCPU / 16 GiB": (4, 16), "8 vCPU / 32 GiB": (8, 32), "16 vCPU / 64 GiB": (16, 64)}
DAEMONSETS = (0.5, 1.0)


def allocatable(vcpus: int, gib: int) -> tuple[float, float]:
    """What pods may request on a node of that shape after the kubelet's reservations and the daemonsets."""
    rates = [0.06, 0.01, 0.005, 0.005] + [0.0025] * max(0, vcpus - 4)
    cpu = vcpus - sum(rates[:vcpus]) - DAEMONSETS[0]
    memory = gib * 0.96 - (255 + 11 * 29 + 100) / 1024 - DAEMONSETS[1]
    return cpu, memory


def fits(step: str, shape: tuple[int, int], settings: StepResources = DEFAULTS) -> bool:
    cpu, memory = allocatable(*shape)
    size = settings.sizes[step]
    return float(parse_quantity(size.cpu)) <= cpu and float(parse_quantity(size.memory)) / 1024**3 <= memory


def test_default_sizes_fit_common_nodes_with_room_for_the_kubelet_and_daemonsets() -> None:
    for step in DEFAULTS.sizes:
        assert fits(step, NODE_SHAPES["8 vCPU / 32 GiB"]), step  # trained_weights was 8 CPU / 32Gi: it fitted no such node
    assert not fits("trained_weights", NODE_SHAPES["4 vCPU / 16 GiB"])
    assert fits("evaluation_report", NODE_SHAPES["4 vCPU / 16 GiB"])  # YOLO_ASSETS_K8S_EVALUATION_REPORT_GPUS=1 on a small GPU node
    # The README's override for a 4 vCPU / 16 GiB GPU node fits it.
    small = StepResources.from_environment({
        "YOLO_ASSETS_K8S_TRAINED_WEIGHTS_CPU": "3", "YOLO_ASSETS_K8S_TRAINED_WEIGHTS_MEMORY": "12Gi", "YOLO_ASSETS_K8S_TRAINED_WEIGHTS_SHM": "3Gi"})  # fmt: skip
    assert fits("trained_weights", NODE_SHAPES["4 vCPU / 16 GiB"], small)


def test_the_readme_node_shape_table_matches_the_defaults() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    section = readme[readme.index("| node shape |"):]
    rows = [line for line in section.splitlines()[2:] if line.startswith("|")][: len(NODE_SHAPES)]
    listed = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        listed[cells[0]] = cells[2]
    for shape, (vcpus, gib) in NODE_SHAPES.items():
        steps = sorted(step for step in DEFAULTS.sizes if step != DEFAULT_STEP and fits(step, (vcpus, gib)))
        assert shape in listed, shape
        named = sorted(re.findall(r"`(\w+)`", listed[shape]))
        assert named == steps or (listed[shape].startswith("every step") and len(steps) == len(DEFAULTS.sizes) - 1), (shape, named, steps)


def test_evaluation_gpu_is_one_variable_away() -> None:
    settings = StepResources.from_environment({"YOLO_ASSETS_K8S_EVALUATION_REPORT_GPUS": "1"})
    config = settings.k8s_config("evaluation_report")
    assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert config["pod_spec_config"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_secrets_reach_step_pods_by_name_and_settings_by_configmap(step_jobs: dict[str, dict[str, Any]], values: dict[str, Any]) -> None:
    for step, job in step_jobs.items():
        main = container(job)
        env_from = main["envFrom"]
        assert {"secretRef": {"name": "yolo-assets-s3"}} in env_from and {"secretRef": {"name": "yolo-assets-mlflow"}} in env_from, step
        assert {"configMapRef": {"name": "yolo-assets-config"}} in env_from, step
        (pg,) = [e for e in main["env"] if e["name"] == "DAGSTER_PG_PASSWORD"]
        secret = {"name": values["global"]["postgresqlSecretName"], "key": "postgresql-password"}
        assert pg == {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"secretKeyRef": secret}}
        assert not [e["name"] for e in main["env"] if SECRET_NAME.search(e["name"]) and "value" in e], step  # no literal secret


def test_step_pods_carry_no_api_token_and_die_with_their_run_pod(step_jobs: dict[str, dict[str, Any]]) -> None:
    for step, job in step_jobs.items():
        assert pod_spec(job)["automountServiceAccountToken"] is False, step
        assert pod_spec(job)["serviceAccountName"] == "yolo-assets-dagster", step
        assert job["metadata"]["ownerReferences"][0]["name"] == RUN_POD[0], step
        assert job["spec"]["backoffLimit"] == 0, step  # a dead pod is a step failure: Dagster's retry policy decides


def test_the_ingest_pool_follows_the_pods_cpu_limit(step_jobs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """The kubelet turns a CPU limit into the cgroup quota `usable_cpus()` reads (period 100 ms)."""

    def cgroup_cpu_max(job: Mapping[str, Any]) -> Path:
        quota = math.ceil(parse_quantity(container(job)["resources"]["limits"]["cpu"]) * 100_000)
        path = tmp_path / f"cpu.max.{quota}"
        path.write_text(f"{quota} 100000\n")
        return path

    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(cgroup_cpu_max(step_jobs["labeled_batch"])) == min(affinity, 2)
    one_cpu = StepResources.from_environment({"YOLO_ASSETS_K8S_LABELED_BATCH_CPU": "1"}).k8s_config("labeled_batch")
    job = {"spec": {"template": {"spec": {"containers": [one_cpu["container_config"]]}}}}
    assert usable_cpus(cgroup_cpu_max(job)) == 1  # one decoding worker, however many cores the node has


def test_the_training_dataloader_fits_its_cpu_limit() -> None:
    configmap = cluster_settings()
    settings = StepResources.from_environment(configmap)
    assert int(configmap["YOLO_ASSETS_TRAIN_WORKERS"]) < parse_quantity(settings.sizes["trained_weights"].cpu)
    # The ConfigMap restates the defaults (and names the CPU image): the Jobs above are the cluster's.
    assert replace(settings, cpu_image="") == DEFAULTS


def test_bad_step_settings_fail_when_the_code_location_loads() -> None:
    for environ, message in [
        ({"YOLO_ASSETS_K8S_TRAINED_WEIGHTS_MEMORY": "32GB"}, "YOLO_ASSETS_K8S_TRAINED_WEIGHTS_MEMORY"),
        ({"YOLO_ASSETS_K8S_TRAINED_WEIGHTS_SHM": "64Gi"}, "counts against"),
        ({"YOLO_ASSETS_K8S_GPU_TOLERATIONS": "nvidia.com/gpu"}, "YOLO_ASSETS_K8S_GPU_TOLERATIONS"),
        ({"YOLO_ASSETS_K8S_GPU_NODE_SELECTOR": "pool"}, "YOLO_ASSETS_K8S_GPU_NODE_SELECTOR"),
        ({"YOLO_ASSETS_K8S_TRAINED_WEIGHTS_GPUS": "one"}, "YOLO_ASSETS_K8S_TRAINED_WEIGHTS_GPUS"),
    ]:
        with pytest.raises(ValueError, match=message):
            StepResources.from_environment(environ)
    custom = StepResources.from_environment(
        {"YOLO_ASSETS_K8S_GPU_TOLERATIONS": "pool=gpu:NoSchedule,nvidia.com/gpu:NoExecute", "YOLO_ASSETS_K8S_GPU_NODE_SELECTOR": ""}
    )
    assert custom.gpu_tolerations == (
        {"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"},
    )
    assert "node_selector" not in custom.k8s_config("trained_weights")["pod_spec_config"]  # empty: any GPU node


# --- the executor switch -----------------------------------------------------------------------------------


def test_the_embedded_default_runs_each_run_in_one_process(tmp_path: Path) -> None:
    executor = build_definitions(tmp_path, DeploymentSettings()).executor
    assert isinstance(executor, dg.ExecutorDefinition) and executor.name == "in_process"


def test_the_k8s_executor_needs_shared_storage(tmp_path: Path) -> None:
    settings = {EXECUTOR_VARIABLE: "k8s", TRACKING_URI_VARIABLE: "http://mlflow:5000"}
    with pytest.raises(ValueError, match="share no disk"):
        build_definitions(tmp_path, DeploymentSettings.from_environment(settings))
    with pytest.raises(ValueError, match="local or k8s"):
        build_definitions(tmp_path, DeploymentSettings.from_environment({**settings, STORAGE_VARIABLE: "s3", EXECUTOR_VARIABLE: "kubernetes"}))
    with pytest.raises(ValueError, match="local or s3"):
        build_definitions(tmp_path, DeploymentSettings.from_environment({STORAGE_VARIABLE: "gcs"}))


# --- deploy/ ---------------------------------------------------------------------------------------------


def test_every_deploy_manifest_is_valid_kubernetes() -> None:
    manifests = all_manifests()
    kinds = sorted(doc["kind"] for doc in manifests)
    assert {"ConfigMap", "Deployment", "Role", "RoleBinding", "Secret", "Service", "ServiceAccount", "NetworkPolicy", "Job"} <= set(kinds)
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject"} <= set(kinds)
    for doc in manifests:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]  # one namespace, nothing cluster-wide
        assert not doc["kind"].startswith("Cluster")
        if doc["apiVersion"] in NOT_IN_SCHEMA:  # the schema really lacks it: the skip is no blanket escape
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                validate(doc)
        else:
            validate(doc)


def test_the_serving_probes_hit_readyz_and_healthz_on_the_container_port() -> None:
    main = container(serving("Deployment"))
    port = container_port(main, "http")
    assert main["command"] == ["yolo-assets", "serve"] and main["args"] == ["--host", "0.0.0.0", "--port", str(port)]
    for probe, path in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        assert main[probe]["httpGet"]["path"] == path, probe
        assert container_port(main, main[probe]["httpGet"]["port"]) == port, probe
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model download and warm-up
    assert serving("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # rollouts wait for /readyz


def test_the_serving_service_reaches_the_container_port() -> None:
    deployment, service = serving("Deployment"), serving("Service")
    (port,) = service["spec"]["ports"]
    assert service["spec"]["type"] == "ClusterIP" and port["name"] == "http" and port["port"] == 80
    assert container_port(container(deployment), port["targetPort"]) == 8080
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_pdb_and_the_autoscalers_target_the_serving_deployment() -> None:
    deployment, pdb = serving("Deployment"), serving("PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"] and pdb["spec"]["minAvailable"] == 1
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    keda, hpa = serving("ScaledObject"), serving("HorizontalPodAutoscaler")
    assert keda["spec"]["scaleTargetRef"] == target and hpa["spec"]["scaleTargetRef"] == target
    assert (keda["spec"]["minReplicaCount"], keda["spec"]["maxReplicaCount"]) == (2, 10)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)


def test_the_keda_scaled_object_uses_the_fields_keda_documents() -> None:
    keda = serving("ScaledObject")
    assert keda["apiVersion"] == "keda.sh/v1alpha1" and keda["spec"].keys() <= KEDA_SPEC_FIELDS
    assert keda["spec"]["scaleTargetRef"]["name"] == serving("Deployment")["metadata"]["name"]
    (trigger,) = keda["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert {"serverAddress", "query", "threshold"} <= metadata.keys()
    assert all(isinstance(value, str) for value in metadata.values())  # KEDA's trigger metadata: map[string]string
    assert metadata["serverAddress"].startswith("http") and "yolo_assets_serve_requests_total" in metadata["query"]
    assert float(metadata["threshold"]) > 0


def test_applying_deploy_kubernetes_creates_one_autoscaler() -> None:
    """`kubectl apply -f deploy/kubernetes/` (not recursive) gets KEDA's; the HPA lives in optional/."""
    applied = [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for doc in documents(path)]
    autoscalers = [doc["kind"] for doc in applied if doc["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}]
    assert autoscalers == ["ScaledObject"]


def test_the_serving_pod_runs_restricted() -> None:
    pod = pod_spec(serving("Deployment"))
    main = container(serving("Deployment"))
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["securityContext"] == {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    # Every writable path is an emptyDir: /tmp and the home the models are downloaded to.
    assert all(volume.keys() == {"name", "emptyDir"} for volume in pod["volumes"])
    home = next(env["value"] for env in main["env"] if env["name"] == "YOLO_ASSETS_HOME")
    assert {mount["mountPath"] for mount in main["volumeMounts"]} == {"/tmp", home}


def test_the_serving_pod_reads_mlflow_and_no_s3_credentials() -> None:
    main = container(serving("Deployment"))
    configmap = next(doc for doc in all_manifests() if doc["kind"] == "ConfigMap")
    env = {e["name"]: e for e in main["env"]}
    ref = env["YOLO_ASSETS_MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == configmap["metadata"]["name"] and ref["key"] in configmap["data"]
    assert env["YOLO_ASSETS_MODEL_NAME"]["value"] and float(env["YOLO_ASSETS_SERVE_REFRESH_S"]["value"]) > 0
    assert [source["secretRef"]["name"] for source in main["envFrom"]] == ["yolo-assets-mlflow"]  # not yolo-assets-s3
    assert not [name for name in env if name.startswith("AWS_")]


def test_the_serving_pod_is_a_guaranteed_cpu_pod() -> None:
    main = container(serving("Deployment"))
    resources = main["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "2", "memory": "2Gi"}
    threads = next(env["value"] for env in main["env"] if env["name"] == "OMP_NUM_THREADS")
    assert int(threads) == parse_quantity(resources["limits"]["cpu"])  # torch: one thread per CPU of the limit
    assert main["image"] == f"{IMAGE}-cpu"  # the CPU tag of the app image


def test_the_role_grants_nothing_beyond_the_list() -> None:
    manifests = all_manifests()
    (role,) = [doc for doc in manifests if doc["kind"] == "Role"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames/nonResourceURLs tricks
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    for key, verbs in granted.items():
        assert verbs <= ALLOWED_RULES.get(key, set()), key
    (binding,) = [doc for doc in manifests if doc["kind"] == "RoleBinding"]
    (account,) = [doc for doc in manifests if doc["kind"] == "ServiceAccount"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]


def test_the_role_covers_every_call_dagster_k8s_makes() -> None:
    """Read from the installed dagster-k8s: an upgrade that calls a new API method fails here first."""
    source = Path(dagster_k8s.client.__file__ or "").read_text()
    calls = set(re.findall(r"self\.(?:batch|core)_api\.(\w+)", source))
    assert calls and calls <= API_PERMISSIONS.keys(), calls - API_PERMISSIONS.keys()
    (role,) = [doc for doc in all_manifests() if doc["kind"] == "Role"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert {API_PERMISSIONS[call] for call in calls} <= granted


def test_helm_values_use_only_chart_keys(values: dict[str, Any]) -> None:
    def paths(node: Any, prefix: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, child in node.items():
                yield from paths(child, f"{prefix}.{key}" if prefix else key)
        elif isinstance(node, list):
            for child in node:
                yield from paths(child, f"{prefix}[]")
        else:
            yield prefix

    def known(path: str) -> bool:
        parts = path.split(".")
        return path in CHART_KEYS or any(".".join(parts[:i]) + ".*" in CHART_KEYS for i in range(1, len(parts)))

    unknown = [p for p in paths(values, "") if not known(p)]
    assert not unknown, f"not a key of the dagster chart {CHART_VERSION}: {unknown}"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False


def test_helm_values_wire_the_deploy_manifests(values: dict[str, Any], k8s_definitions: dg.Definitions) -> None:
    manifests = all_manifests()
    # The Secrets the pods read by name: created by the operator (README); their keys are listed in the example.
    secrets = {doc["metadata"]["name"] for doc in documents(EXAMPLES / "secrets.example.yaml") if doc["kind"] == "Secret"}
    configmaps = {doc["metadata"]["name"] for doc in manifests if doc["kind"] == "ConfigMap"}
    deployment = values["dagster-user-deployments"]["deployments"][0]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["global"]["postgresqlSecretName"] in secrets
    assert set(names(deployment["envSecrets"])) <= secrets and set(names(launcher["envSecrets"])) <= secrets
    assert set(names(deployment["envConfigMaps"])) <= configmaps and set(names(launcher["envConfigMaps"])) <= configmaps
    assert values["global"]["serviceAccountName"] in {doc["metadata"]["name"] for doc in manifests if doc["kind"] == "ServiceAccount"}
    assert values["serviceAccount"]["create"] is False and values["rbacEnabled"] is False
    assert values["dagster-user-deployments"]["rbacEnabled"] is False  # the subchart's own switch
    assert f"{deployment['image']['repository']}:{deployment['image']['tag']}" == IMAGE
    # The GPU queue: the tag limit names the sensor that launches every retraining.
    daemon = values["dagsterDaemon"]
    (limit,) = values["concurrency"]["runs"]["tagConcurrencyLimits"]
    assert limit["key"] == "dagster/sensor_name" and limit["limit"] >= 1
    sensor = next(s for s in k8s_definitions.sensors or [] if s.name == limit["value"])
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert dg.AssetKey("trained_weights") in sensor.asset_selection.resolve(k8s_definitions.resolve_asset_graph())
    assert daemon["runRetries"]["enabled"] and daemon["runRetries"]["maxRetries"] >= 1 and daemon["runMonitoring"]["enabled"]


def test_no_secret_value_in_deploy_docker_or_generated_jobs(step_jobs: dict[str, dict[str, Any]], run_job: dict[str, Any]) -> None:
    for doc in all_manifests():
        if doc["kind"] == "Secret":  # templates: keys only
            assert all(value == "" for value in {**doc.get("data", {}), **doc.get("stringData", {})}.values()), doc["metadata"]["name"]
        for pod in [doc["spec"]["template"]["spec"]] if doc["kind"] == "Deployment" else []:
            for env in [e for c in pod["containers"] for e in c.get("env", [])]:
                assert not (SECRET_NAME.search(env["name"]) and "value" in env), env["name"]
    texts = {str(p): p.read_text() for folder in (DEPLOY, DEPLOY.parent / "docker") for p in folder.rglob("*") if p.is_file()}
    texts.update({step: json.dumps(job) for step, job in {**step_jobs, "(run)": run_job}.items()})
    for where, text in texts.items():
        for pattern in CREDENTIAL_PATTERNS:
            assert not pattern.search(text), (where, pattern.pattern)


def test_secret_values_in_the_environment_never_reach_a_step_job(
    values: dict[str, Any], run_launcher: K8sRunLauncher, executor_config: dict[str, Any], step_jobs: dict[str, dict[str, Any]]
) -> None:
    """Credentials in the environment of the code location (and of the settings) reach no pod spec:
    pods get them from the Secrets by name."""
    settings = StepResources.from_environment({**os.environ, **SENTINELS})
    steps = settings.sizes.keys() - {DEFAULT_STEP}
    jobs = [build_step_job(step, {}, values, run_launcher, {**executor_config, **settings.executor_config()}) for step in steps]
    text = json.dumps([jobs, step_jobs, build_run_job(values, run_launcher), executor_config])
    assert not [name for name, secret in SENTINELS.items() if secret in text]


def test_the_images_install_the_locked_versions() -> None:
    """The Docker images and `make install` share constraints.txt; torch, installed first in the image, too."""
    dockerfile = (DEPLOY.parent / "docker" / "Dockerfile").read_text()
    locked = dict(line.split("==", 1) for line in (DEPLOY.parent / "constraints.txt").read_text().splitlines() if "==" in line)
    assert "pip install -c constraints.txt" in dockerfile and "-c constraints.txt" in (DEPLOY.parent / "Makefile").read_text()
    for package, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        assert f"ARG {arg}={locked[package]}\n" in dockerfile


def test_cpu_steps_can_run_the_cpu_image_and_the_gpu_step_keeps_the_runs_own() -> None:
    from resources.kubernetes import CPU_IMAGE_VARIABLE, StepResources

    configmap = yaml.safe_load((DEPLOY / "kubernetes" / "configmap.yaml").read_text())["data"]
    resources = StepResources.from_environment({CPU_IMAGE_VARIABLE: configmap[CPU_IMAGE_VARIABLE]})
    assert configmap[CPU_IMAGE_VARIABLE].endswith("-cpu")
    for step, size in resources.sizes.items():
        image = resources.k8s_config(step)["container_config"].get("image")
        assert image == (None if size.gpus else configmap[CPU_IMAGE_VARIABLE]), step
    assert "image" not in StepResources.from_environment({}).k8s_config("processed_images")["container_config"]
