"""Least privilege in deploy/ and docker/, offline: the restricted Pod Security Standard on every pod we
ship or the chart renders from our values (the generated run and step Jobs are checked in
test_kubernetes.py with the same `restricted_violations`), who reaches PostgreSQL and MLflow under
deploy/kubernetes/networkpolicy.yaml, no Secret that `kubectl apply -f deploy/kubernetes/` could blank,
and a Docker build context without homes or credentials.
"""

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_kubernetes_chart import DAGSTER_LABEL, chart_pod_specs, code_location_context, code_server_deployment, load_values

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
APPLIED = DEPLOY / "kubernetes"
EXAMPLES = DEPLOY / "examples"
README = REPO / "README.md"
NAMESPACE = "yolo-assets"

# --- the restricted Pod Security Standard ------------------------------------------------------------------
# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.33): "restricted" includes
# "baseline". Checked on the pod spec as the API server's PodSecurity admission would see it.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard refuses in a pod spec (camelCase, as applied), plus our
    own rule: every container's root filesystem is read-only (its writable paths are emptyDirs)."""
    problems: list[str] = []
    pod = spec.get("securityContext") or {}
    containers = [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(flag)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    for sysctl in pod.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']}")
    if (pod.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("hostProcess")
    if pod.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    if pod.get("runAsNonRoot") is False:
        problems.append("pod runAsNonRoot false")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        problems.append(f"pod seccomp {pod_seccomp}")
    if (pod.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append("pod AppArmor Unconfined")
    for c in containers:
        name, sc = c["name"], c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{name}: hostProcess")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        non_root = sc.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ALLOWED_SECCOMP:
            problems.append(f"{name}: seccomp {seccomp}")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities not dropped (ALL)")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added {capabilities['add']}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{name}: AppArmor Unconfined")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem writable")
    return problems


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests(folder: Path = DEPLOY) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(folder.rglob("*.yaml")):
        if path.name not in {"values.yaml", "dagster.yaml"}:
            yield from ((path, doc) for doc in documents(path))


def pod_template(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = doc["kind"]
    if kind == "Pod":
        return dict(doc)
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return dict(doc["spec"]["template"])
    if kind == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"])
    return None


def test_the_violation_check_catches_what_the_standard_refuses() -> None:
    """The checker itself, on a pod that breaks each rule once."""
    bad = {
        "hostNetwork": True,
        "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "Unconfined"}},
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                        "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}],
    }  # fmt: skip
    found = " ".join(restricted_violations(bad))
    for rule in ("hostNetwork", "hostPath", "pod runAsUser 0", "pod seccomp Unconfined", "privileged", "allowPrivilegeEscalation",
                 "runAsNonRoot", "capabilities not dropped", "SYS_ADMIN", "hostPort", "root filesystem writable"):  # fmt: skip
        assert rule in found, rule


def test_every_pod_we_ship_meets_the_restricted_standard() -> None:
    shipped = {f"{path.relative_to(DEPLOY)}:{doc['metadata']['name']}": template for path, doc in manifests() if (template := pod_template(doc))}
    assert {"kubernetes/mlflow.yaml:mlflow", "kubernetes/serving.yaml:yolo-assets-serve", "examples/gpu-check.yaml:yolo-assets-gpu-check"} <= set(shipped)
    for name, template in shipped.items():
        assert restricted_violations(template["spec"]) == [], name
        assert template["spec"].get("automountServiceAccountToken") is False, name  # none of them calls the API


def test_the_pods_the_chart_renders_from_our_values_meet_the_restricted_standard() -> None:
    values = load_values()
    code_server = code_server_deployment(values)["spec"]["template"]["spec"]
    assert restricted_violations(code_server) == []
    assert {m["mountPath"] for m in code_server["containers"][0]["volumeMounts"]} == {"/tmp", "/var/lib/yolo-assets"}
    for component, spec in chart_pod_specs(values).items():
        assert restricted_violations(spec) == [], component  # main container and its init containers
        assert "/tmp" in {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}, component
    # The webserver listens above 1024: a process without capabilities cannot bind port 80 on every runtime.
    web = values["dagsterWebserver"]
    assert web["service"]["port"] > 1024 and web["readinessProbe"]["httpGet"]["port"] == web["service"]["port"]


def test_the_container_context_passes_the_writable_volumes_to_run_and_step_pods() -> None:
    k8s = code_location_context(load_values())["k8s"]
    assert {v["name"] for v in k8s["volumes"]} == {m["name"] for m in k8s["volume_mounts"]} == {"tmp", "home"}
    assert all(set(v) == {"name", "emptyDir"} for v in k8s["volumes"])
    assert k8s["labels"] == DAGSTER_LABEL


# --- NetworkPolicy ---------------------------------------------------------------------------------------
POSTGRES = "192.0.2.10"  # networkpolicy.yaml's POSTGRES_CIDR placeholder (a documentation address)
S3 = "52.218.0.10"  # somewhere on the internet
KUBE_DNS = {"namespace": {"kubernetes.io/metadata.name": "kube-system"}, "labels": {"k8s-app": "kube-dns"}}


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions); empty selects everything."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]  # fmt: skip
        if not ok:
            return False
    return True


def peer_matches(peer: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    if "ipBlock" in peer:
        if "ip" not in target:
            return False
        ip = ipaddress.ip_address(target["ip"])
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if "pod" not in target:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], target["namespace"])
    else:
        namespace_ok = target["namespace"].get("kubernetes.io/metadata.name") == NAMESPACE
    return namespace_ok and selects(peer.get("podSelector"), target["pod"])


def port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    return not ports or any(p.get("port") in (None, port) and p.get("protocol", "TCP") == protocol for p in ports)


def allowed(policies: list[Mapping[str, Any]], direction: str, labels: Mapping[str, str], peer: Mapping[str, Any], port: int, protocol: str) -> bool:
    """NetworkPolicy semantics: a pod no policy of that direction selects is unrestricted; otherwise the
    union of the selecting policies' rules decides."""
    kind, rules_key, peers_key = ("Egress", "egress", "to") if direction == "egress" else ("Ingress", "ingress", "from")
    selecting = [p for p in policies if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key, []):
            peers = rule.get(peers_key)
            if (not peers or any(peer_matches(p, peer) for p in peers)) and port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def connects(policies: list[Mapping[str, Any]], source: Mapping[str, str], destination: Mapping[str, Any], port: int, protocol: str = "TCP") -> bool:
    """Both ends must let the connection through: the source's egress, the destination pod's ingress."""
    if not allowed(policies, "egress", source, destination, port, protocol):
        return False
    if "pod" in destination and destination["namespace"].get("kubernetes.io/metadata.name") == NAMESPACE:
        here = {"namespace": {"kubernetes.io/metadata.name": NAMESPACE}, "pod": source}
        return allowed(policies, "ingress", destination["pod"], here, port, protocol)
    return True


def pod_labels() -> dict[str, dict[str, str]]:
    """The labels of every kind of pod in the namespace, from the manifests and from what the chart and
    dagster-k8s put on theirs (test_kubernetes.py checks the generated run and step Jobs carry DAGSTER_LABEL)."""
    values = load_values()
    labels = {name: template["metadata"]["labels"] for path, doc in manifests() if (template := pod_template(doc))
              for name in [doc["metadata"]["name"]]}  # fmt: skip
    labels["code-server"] = code_server_deployment(values)["spec"]["template"]["metadata"]["labels"]
    labels["run-and-step-pods"] = {"app.kubernetes.io/component": "step_worker", **code_location_context(values)["k8s"]["labels"]}
    for component, spec in chart_pod_specs(values).items():
        labels[component] = {"component": component, **spec["labels"]}
    labels["debugging-pod"] = {"run": "debug"}
    return labels


def test_only_dagster_pods_and_mlflow_reach_postgresql_and_only_dagster_and_serving_pods_reach_mlflow() -> None:
    policies = [doc for _, doc in manifests(APPLIED) if doc["kind"] == "NetworkPolicy"]
    assert policies
    pods = pod_labels()
    mlflow = {"namespace": {"kubernetes.io/metadata.name": NAMESPACE}, "pod": pods["mlflow"]}
    dagster = {"code-server", "run-and-step-pods", "webserver", "daemon"}
    for name, labels in pods.items():
        reaches_postgres = connects(policies, labels, {"ip": POSTGRES}, 5432)
        reaches_mlflow = connects(policies, labels, mlflow, 5000)
        assert reaches_postgres == (name in dagster | {"mlflow"}), name
        if name != "mlflow":
            assert reaches_mlflow == (name in dagster | {"yolo-assets-serve"}), name
    serve = pods["yolo-assets-serve"]
    assert connects(policies, serve, {"pod": KUBE_DNS["labels"], "namespace": KUBE_DNS["namespace"]}, 53, "UDP")
    assert not connects(policies, serve, {"ip": S3}, 443)  # the MLflow server serves the artifacts
    assert connects(policies, pods["debugging-pod"], {"ip": S3}, 443)  # the rest of the namespace is not cut off
    assert connects(policies, pods["run-and-step-pods"], {"ip": S3}, 443)


def test_the_postgresql_address_is_one_placeholder_the_readme_names() -> None:
    text = (APPLIED / "networkpolicy.yaml").read_text()
    assert text.count(f"{POSTGRES}/32") == 1 and "POSTGRES_CIDR" in text
    assert "POSTGRES_CIDR" in README.read_text()


# --- Secrets ---------------------------------------------------------------------------------------------


def test_nothing_kubectl_applies_from_deploy_kubernetes_is_a_secret() -> None:
    """`kubectl apply -f deploy/kubernetes/` (or a GitOps sync of the folder, recursive) would overwrite the
    real Secrets with whatever a Secret manifest there holds, blanks included."""
    applied = list(manifests(APPLIED))
    assert applied
    assert [doc["metadata"]["name"] for _, doc in applied if doc["kind"] == "Secret"] == []


def test_every_secret_the_pods_read_is_listed_in_the_example_and_created_by_the_readme() -> None:
    example = {doc["metadata"]["name"]: doc for doc in documents(EXAMPLES / "secrets.example.yaml")}
    for name, doc in example.items():
        assert doc["kind"] == "Secret" and "data" not in doc, name
        assert all(value == "" for value in doc.get("stringData", {}).values()), name  # keys only
    values = load_values()
    read = {values["global"]["postgresqlSecretName"]}
    for refs in (values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"], values["dagster-user-deployments"]["deployments"][0]["envSecrets"],
                 values["dagsterWebserver"]["envSecrets"]):  # fmt: skip
        read |= {ref["name"] for ref in refs}
    for _, doc in manifests(APPLIED):
        template = pod_template(doc)
        for c in (template or {}).get("spec", {}).get("containers", []):
            read |= {src["secretRef"]["name"] for src in c.get("envFrom", []) if "secretRef" in src}
            read |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    assert read == set(example)
    created = set(re.findall(r"kubectl -n yolo-assets create secret generic ([a-z0-9-]+)", README.read_text()))
    assert read <= created


# --- the Docker build context ----------------------------------------------------------------------------


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """One .dockerignore line as Docker reads it (relative to the context root; `**` any number of folders)."""
    pattern = pattern.strip().lstrip("/").rstrip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern that matches a folder excludes what it holds."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not negated
    return result


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.startswith("!"), dockerignore_regex(line.removeprefix("!"))) for line in lines]


def build_context(root: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """The files `docker build` sends (folders that are ignored as a whole are not walked; no `!` rule here
    re-includes anything below an ignored folder)."""
    assert not any(negated for negated, _ in rules)
    files = []
    for folder, dirs, names in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not ignored(prefix + d, rules)]
        files += [prefix + name for name in names if not ignored(prefix + name, rules)]
    return sorted(files)


RULES = dockerignore_rules((REPO / ".dockerignore").read_text())


def test_the_build_context_leaves_homes_credentials_and_caches_out(tmp_path: Path) -> None:
    """A working tree as a developer's looks after `make demo` and `make stack`, and the repository itself."""
    planted = [
        ".yolo-assets/dagster/history/runs.db", ".yolo-assets-stack/stack/stack.env", ".yolo-assets-stack/stack/pg/pwfile",
        ".venv/lib/python3.11/site-packages/x.py", ".git/config", "yolo_assets/__pycache__/a.cpython-311.pyc", ".env",
        "deploy/prod.env", "certs/tls.key", ".aws/credentials", ".kube/config", ".pytest_cache/v/x", ".mypy_cache/x.json",
        "yolo_assets.egg-info/PKG-INFO", "mlruns/0/meta.yaml",
    ]  # fmt: skip
    kept = ["pyproject.toml", "README.md", "workspace.yaml", "yolo_assets/definitions.py", "resources/kubernetes.py", "sensors/dataset.py"]
    for name in planted + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert build_context(tmp_path, RULES) == sorted(kept)


def test_the_repository_context_holds_what_the_dockerfile_copies_and_no_secret() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    sources = [source for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE) for source in line.split()[:-1]]
    assert sources and all(not ignored(source, RULES) and (REPO / source).exists() for source in sources)
    context = build_context(REPO, RULES)
    assert not [f for f in context if f.startswith((".venv", ".yolo-assets", ".git/", "tests/", "deploy/")) or "__pycache__" in f]
    from sentinels import SENTINEL_PG_PASSWORD, SENTINEL_S3_KEY, SENTINEL_S3_SECRET
    from test_kubernetes import CREDENTIAL_PATTERNS, SENTINELS

    secrets = [*SENTINELS.values(), SENTINEL_PG_PASSWORD, SENTINEL_S3_KEY, SENTINEL_S3_SECRET]
    for name in context:
        text = (REPO / name).read_text(errors="replace")
        # A URL with a password in it, unless the password is a placeholder the code fills in ({password}).
        found = [m.group(0) for p in CREDENTIAL_PATTERNS for m in p.finditer(text) if "{" not in m.group(0)]
        assert not found, (name, found)
        assert not [s for s in secrets if s in text], name


def test_one_dockerfile_builds_the_cpu_and_gpu_images_from_pinned_bases_with_dependencies_apart_from_code() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert not (REPO / "docker" / "Dockerfile.base").exists()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base  # an exact tag, never `latest`
    assert re.search(r"^ARG VARIANT=gpu$", dockerfile, re.MULTILINE) and "cpu)" in dockerfile and "gpu)" in dockerfile
    lines = dockerfile.splitlines()
    first = {what: next(i for i, line in enumerate(lines) if line.startswith(what)) for what in (
        "COPY pyproject.toml", "COPY yolo_assets", "RUN pip install --no-deps .")}  # fmt: skip
    dependencies = next(i for i, line in enumerate(lines) if "pip install -c constraints.txt -r /tmp/requirements.txt" in line)
    assert first["COPY pyproject.toml"] < dependencies < first["COPY yolo_assets"] < first["RUN pip install --no-deps ."]
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)  # the UID the manifests run as
    # The images the manifests name: the GPU variant for the code location, the CPU one for MLflow and serving.
    images = {doc["metadata"]["name"]: c["image"] for _, doc in manifests() if (t := pod_template(doc)) for c in t["spec"]["containers"]}
    assert images["mlflow"].endswith("-cpu") and images["yolo-assets-serve"].endswith("-cpu")
    assert not images["yolo-assets-gpu-check"].endswith("-cpu")


@pytest.mark.parametrize("path", [".yolo-assets", ".yolo-assets-stack/stack/stack.env", "a/b/.env", ".venv", ".git"])
def test_dockerignore_patterns_match_like_docker(path: str) -> None:
    assert ignored(path, RULES)
