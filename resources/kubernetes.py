"""Kubernetes: which executor runs a run's steps, and what each step's pod asks the cluster for.

`YOLO_ASSETS_EXECUTOR=k8s` (the cluster's ConfigMap sets it) runs every step in a pod of its own
(dagster-k8s `k8s_job_executor`); unset or `local`, Dagster's default executor runs the steps as
processes of the run, as on a laptop.

Each step's pod config comes from ONE settings object, `StepResources`, read from the environment
(`YOLO_ASSETS_K8S_*`) when the definitions are built (never when a module is imported): the executor
carries it as `per_step_k8s_config`, keyed by the asset's op name, and the run pod, which builds the
same definitions from the same ConfigMap, launches each step's Job with it. A step reads its own GPU
request (`gpus_requested`) from the environment it runs in. Nothing here needs a Dagster run or a cluster.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg

EXECUTOR_VARIABLE = "YOLO_ASSETS_EXECUTOR"
PREFIX = "YOLO_ASSETS_K8S_"
NODE_SELECTOR_VARIABLE = f"{PREFIX}GPU_NODE_SELECTOR"
TOLERATIONS_VARIABLE = f"{PREFIX}GPU_TOLERATIONS"
CPU_IMAGE_VARIABLE = f"{PREFIX}CPU_IMAGE"
GPU_RESOURCE = "nvidia.com/gpu"
SHM_VOLUME = "dshm"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class PodSize:
    """What one step's pod asks for. CPU, memory and disk are each both request and limit (Guaranteed
    QoS: a training pod is the last one evicted; the CPU limit is what the process pools size themselves
    by)."""

    cpu: str
    memory: str
    gpus: int = 0
    shm: str | None = None
    """Size of a memory-backed /dev/shm; PyTorch dataloader workers pass batches through it and die
    with a bus error on the runtime's 64 MiB default. It counts against `memory`."""
    scratch: str = "2Gi"
    """Node disk (ephemeral storage) for the step's own files: a downloaded batch, ultralytics' working
    folder, checkpoints. A step that reads a dataset (DATASET_STEPS) gets the read-through cache's bound
    (YOLO_ASSETS_CACHE_MAX_BYTES) on top: `StepResources.ephemeral_storage`."""


# The defaults a deployment starts from; every field is overridden by YOLO_ASSETS_K8S_<STEP>_<FIELD>.
# DEFAULT sizes every step without a size of its own (asset checks, assets added later), through the
# executor's step config: no step pod runs without requests.
# Sized to fit common nodes with room left for the kubelet's reservations and the daemonsets of a GPU
# node (device plugin, feature discovery, DCGM exporter, CNI, kube-proxy, CSI, a log agent): the
# training pod fits an 8 vCPU / 32 GiB GPU node, evaluation a 4 vCPU / 16 GiB one (README, "Kubernetes",
# and tests/test_kubernetes.py's NODE_SHAPES).
DEFAULT_STEP = "default"
DEFAULT_SIZES: Mapping[str, PodSize] = {
    DEFAULT_STEP: PodSize(cpu="1", memory="2Gi"),
    # Image decoding: one pool worker per CPU of the limit; the batch is downloaded to scratch.
    "labeled_batch": PodSize(cpu="2", memory="4Gi", scratch="8Gi"),
    "processed_images": PodSize(cpu="4", memory="8Gi", scratch="4Gi"),
    "trained_weights": PodSize(cpu="6", memory="24Gi", gpus=1, shm="6Gi", scratch="8Gi"),
    "evaluation_report": PodSize(cpu="3", memory="12Gi", shm="3Gi", scratch="4Gi"),  # _GPUS=1: on a GPU node
    "registered_model": PodSize(cpu="1", memory="2Gi"),
    # One batch's val run in each ingest run: a dataloader worker per CPU, /dev/shm for their batches.
    "fresh_batch_evaluation": PodSize(cpu="2", memory="4Gi", shm="1Gi", scratch="8Gi"),
}
# The steps that read a dataset version through the S3 store's read-through cache (YOLO_ASSETS_CACHE_DIR,
# under YOLO_ASSETS_HOME: an emptyDir on the node's disk): their disk is the cache's bound + scratch.
DATASET_STEPS = frozenset({"processed_images", "trained_weights", "evaluation_report"})
CACHE_MAX_BYTES_VARIABLE = "YOLO_ASSETS_CACHE_MAX_BYTES"
DEFAULT_CACHE_MAX_BYTES = 20 * 1024**3  # resources/s3_artifact_store.py's default (a test keeps them equal)
# No node selector by default: a step that asks for `nvidia.com/gpu` is only ever scheduled on a node
# whose device plugin advertises GPUs, on every cluster. A label such as `nvidia.com/gpu.present` exists
# only where GPU Feature Discovery (or the GPU Operator) runs; a selector on it strands the pod Pending
# elsewhere. Set YOLO_ASSETS_K8S_GPU_NODE_SELECTOR to pick a pool or a GPU model.
DEFAULT_NODE_SELECTOR = ""
DEFAULT_TOLERATIONS = f"{GPU_RESOURCE}:NoSchedule"  # GPU pools are commonly tainted so CPU work stays off them


def parse_node_selector(text: str) -> dict[str, str]:
    """`key=value,key2=value2` (empty: no selector)."""
    selector = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{NODE_SELECTOR_VARIABLE}: {pair!r} is not key=value")
        selector[key.strip()] = value.strip()
    return selector


def parse_tolerations(text: str) -> list[dict[str, str]]:
    """Taints in kubectl's syntax, comma-separated: `key=value:Effect` tolerates that value,
    `key:Effect` any value of the key (empty: no toleration)."""
    tolerations = []
    for taint in filter(None, (t.strip() for t in text.split(","))):
        key_value, _, effect = taint.rpartition(":")
        key, sep, value = key_value.partition("=")
        if not key or effect not in TAINT_EFFECTS:
            raise ValueError(f"{TOLERATIONS_VARIABLE}: {taint!r} is not key[=value]:{'|'.join(TAINT_EFFECTS)}")
        toleration = {"key": key, "operator": "Equal", "value": value} if sep else {"key": key, "operator": "Exists"}
        tolerations.append({**toleration, "effect": effect})
    return tolerations


def _quantity(variable: str, value: str) -> str:
    """`value` if Kubernetes can parse it as a positive quantity: a typo fails when the code location
    loads, naming the variable, not when a pod is refused mid-run."""
    from kubernetes.utils import parse_quantity

    try:
        if parse_quantity(value) <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{variable}={value!r} is not a positive Kubernetes quantity (e.g. 500m, 4, 8Gi)") from None
    return value


def _check_size(name: str, size: PodSize) -> None:
    from kubernetes.utils import parse_quantity

    for field, value in (("CPU", size.cpu), ("MEMORY", size.memory), ("SHM", size.shm), ("SCRATCH", size.scratch)):
        if value is not None:
            _quantity(f"{name}{field}", value)
    if size.shm and parse_quantity(size.shm) >= parse_quantity(size.memory):
        raise ValueError(f"{name}SHM ({size.shm}) must be below {name}MEMORY ({size.memory}): /dev/shm counts against it")


def _count(variable: str, value: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"{variable}={value!r} is not a whole number of GPUs (0 or more)")
    return int(value)


def _bytes(value: str) -> int:
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(value))


def _binary_quantity(size: int) -> str:
    """`size` bytes as the largest binary unit that holds it exactly (21474836480 -> 20Gi)."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


@dataclass(frozen=True)
class StepResources:
    """Every step's pod size and where GPU steps may run: the one source of the step pods' config."""

    sizes: Mapping[str, PodSize]
    gpu_node_selector: Mapping[str, str]
    gpu_tolerations: tuple[Mapping[str, str], ...]
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    cpu_image: str = ""
    """The image of the steps that ask for no GPU (docker/Dockerfile, VARIANT=cpu: no CUDA libraries, a
    smaller pull); empty: every step runs the run's own image (the code location's)."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "StepResources":
        env = os.environ if environ is None else environ
        sizes = {}
        for step, default in DEFAULT_SIZES.items():
            name = f"{PREFIX}{step.upper()}_"
            size = replace(
                default,
                cpu=env.get(f"{name}CPU", default.cpu),
                memory=env.get(f"{name}MEMORY", default.memory),
                gpus=_count(f"{name}GPUS", env.get(f"{name}GPUS", str(default.gpus))),
                shm=env.get(f"{name}SHM", default.shm) or None,
                scratch=env.get(f"{name}SCRATCH", default.scratch),
            )
            if size != default:  # the defaults are known good: only what the environment changed is checked
                _check_size(name, size)
            sizes[step] = size
        cache = env.get(CACHE_MAX_BYTES_VARIABLE, str(DEFAULT_CACHE_MAX_BYTES))
        if not cache.strip().isdigit():
            raise ValueError(f"{CACHE_MAX_BYTES_VARIABLE}={cache!r} is not a whole number of bytes")
        return cls(
            sizes=sizes,
            gpu_node_selector=parse_node_selector(env.get(NODE_SELECTOR_VARIABLE, DEFAULT_NODE_SELECTOR)),
            gpu_tolerations=tuple(parse_tolerations(env.get(TOLERATIONS_VARIABLE, DEFAULT_TOLERATIONS))),
            cache_max_bytes=int(cache),
            cpu_image=env.get(CPU_IMAGE_VARIABLE, "").strip(),
        )

    def ephemeral_storage(self, step: str) -> str:
        """The node disk `step` may fill: its scratch, plus the read-through cache's bound for a step
        that reads a dataset. Request = limit: the scheduler places the pod on a node with that much
        free disk, and the kubelet evicts the pod (a step failure, retried) rather than the node
        running out of disk."""
        size = _bytes(self.sizes[step].scratch) + (self.cache_max_bytes if step in DATASET_STEPS else 0)
        return _binary_quantity(size)

    def k8s_config(self, step: str) -> dict[str, Any]:
        """The `dagster-k8s/config` of `step` (UserDefinedDagsterK8sConfig keys, snake_case)."""
        size = self.sizes[step]
        requests = {"cpu": size.cpu, "memory": size.memory, "ephemeral-storage": self.ephemeral_storage(step)}
        limits = dict(requests)
        if size.gpus:
            limits[GPU_RESOURCE] = str(size.gpus)  # extended resources: the request defaults to the limit
        container: dict[str, Any] = {"resources": {"requests": requests, "limits": limits}}
        if not size.gpus and self.cpu_image:
            container["image"] = self.cpu_image
        pod: dict[str, Any] = {}
        if size.shm:
            container["volume_mounts"] = [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}]
            pod["volumes"] = [{"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": size.shm}}]
        if size.gpus and self.gpu_node_selector:
            pod["node_selector"] = dict(self.gpu_node_selector)
        if size.gpus and self.gpu_tolerations:
            pod["tolerations"] = [dict(t) for t in self.gpu_tolerations]
        return {"container_config": container, **({"pod_spec_config": pod} if pod else {})}

    def executor_config(self) -> dict[str, Any]:
        """`k8s_job_executor`'s config. `step_k8s_config` is every step's base: the DEFAULT size, and
        no service account token, since step pods never call the Kubernetes API (only the run pod
        launches and watches Jobs). `per_step_k8s_config` (deep-merged over it, by op name) sizes each
        step of `DEFAULT_SIZES`. Owner references tie a run's step Jobs to its run pod: a run pod that
        dies takes its steps with it, and the retried run never races an orphaned training."""
        step_config = self.k8s_config(DEFAULT_STEP)
        step_config["pod_spec_config"] = {**step_config.get("pod_spec_config", {}), "automount_service_account_token": False}
        # The base must name no image: per-step configs deep-merge over it, and a GPU step, which names
        # none, would inherit the CPU image. Unsized steps (small bookkeeping) run the run's own image.
        step_config["container_config"].pop("image", None)
        per_step = {step: self.k8s_config(step) for step in self.sizes if step != DEFAULT_STEP}
        return {"step_k8s_config": step_config, "per_step_k8s_config": per_step, "enable_owner_references": True}


def gpus_requested(step: str, environ: Mapping[str, str] | None = None) -> int:
    """The GPUs `step`'s pod asked for: its size under the k8s executor (the step's own environment,
    the same ConfigMap its Job was built from); none when steps run locally."""
    env = os.environ if environ is None else environ
    if env.get(EXECUTOR_VARIABLE, "local") != "k8s":
        return 0
    sizes = StepResources.from_environment(env).sizes
    return sizes.get(step, sizes[DEFAULT_STEP]).gpus


def executor_from_environment(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """`k8s_job_executor` when `YOLO_ASSETS_EXECUTOR=k8s`; None (the local executor) otherwise."""
    choice = (os.environ if environ is None else environ).get(EXECUTOR_VARIABLE, "local")
    if choice == "local":
        return None
    if choice != "k8s":
        raise ValueError(f"{EXECUTOR_VARIABLE} must be local or k8s, not {choice!r}")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(StepResources.from_environment(environ).executor_config())
