"""`yolo-assets stack up | down | status`: the production architecture on one machine, on 127.0.0.1.

SeaweedFS (the S3 landing zone and artifact store), PostgreSQL (the Dagster instance and MLflow's
backend), the MLflow tracking server (artifacts in S3), and a Dagster code server with dagster-webserver
and dagster-daemon on it, on the PostgreSQL instance with `YOLO_ASSETS_STORAGE=s3`. State, logs and data
live under `<home>/stack/`; `down` stops exactly the processes `up` started (their pids are in `state.json`).
"""

import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from yolo_assets.core.home import HOME_ENV_VAR, dagster_home
from yolo_assets.core.processes import tcp_answers
from yolo_assets.ops.services import (
    BIN,
    MlflowServer,
    Postgres,
    SeaweedFS,
    alive,
    clean_environment,
    free_ports,
    http_status,
    spawn,
    stop_group,
    wait_until,
)

BUCKET = "yolo-assets"
DEPLOY_INSTANCE = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


def stack_dir(home: Path) -> Path:
    return home / "stack"


def reachable_by_other_users(path: Path) -> bool:
    """Every folder above `path` lets other users through (the `postgres` user must reach its data)."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents if parent.exists())


def postgres_root(home: Path) -> Path:
    """Under the home when the `postgres` user can reach it there, else a folder of its own in /var/tmp."""
    inside = stack_dir(home) / "postgres"
    if os.geteuid() != 0 or reachable_by_other_users(inside):
        return inside
    return Path("/var/tmp") / f"yolo-assets-stack-{hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]}" / "postgres"


def load_state(home: Path) -> dict[str, Any]:
    path = stack_dir(home) / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(home: Path, state: dict[str, Any]) -> None:
    path = stack_dir(home) / "state.json"
    path.write_text(json.dumps(state, indent=1))
    path.chmod(0o600)  # it holds the stack's generated credentials


def client_environment(state: dict[str, Any]) -> dict[str, str]:
    """What a process needs to use the stack: the same variables a deployment sets."""
    return {
        "YOLO_ASSETS_STORAGE": "s3",
        "YOLO_ASSETS_S3_BUCKET": BUCKET,
        "YOLO_ASSETS_S3_ENDPOINT_URL": f"http://127.0.0.1:{state['seaweedfs']['ports']['s3']}",
        "YOLO_ASSETS_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": state["credentials"]["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": state["credentials"]["s3_secret_key"],
        "YOLO_ASSETS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{state['mlflow']['port']}",
        "DAGSTER_HOME": state["dagster_home"],
        HOME_ENV_VAR: str(Path(state["dagster_home"]).parent),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(state["postgres"]["port"]),
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": state["credentials"]["dagster_db_password"],
        "DAGSTER_PG_DB": "dagster",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def up(home: Path, with_dagster: bool = True, settings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Start what is not running yet; returns the state (ports, pids, credentials). `settings`
    (`YOLO_ASSETS_*` deployment settings) reach the Dagster processes it starts."""
    state = load_state(home)
    root = stack_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    credentials = state.setdefault("credentials", {
        name: secrets.token_urlsafe(18) for name in ("s3_access_key", "s3_secret_key", "postgres_password", "dagster_db_password", "mlflow_db_password")
    })
    if "root" not in state.setdefault("postgres", {}):
        pg_root = postgres_root(home)
        if (pg_root / "data").exists():  # its superuser password went with the earlier home's state.json
            raise ValueError(f"{pg_root} holds PostgreSQL data without its credentials (an earlier stack home at {home} "
                             "kept them in its stack/state.json): remove that folder to start afresh")
        state["postgres"]["root"] = str(pg_root)
    save_state(home, state)

    weed = SeaweedFS(root / "seaweedfs", credentials["s3_access_key"], credentials["s3_secret_key"], **state.get("seaweedfs", {}))
    if not (weed.pid and alive(weed.pid)):
        weed.start()
        weed.create_bucket(BUCKET)
    state["seaweedfs"] = {"ports": weed.ports, "pid": weed.pid}
    save_state(home, state)

    pg_root = Path(state["postgres"]["root"])
    postgres = Postgres(pg_root, credentials["postgres_password"], port=state["postgres"].get("port", 0))
    if not postgres.running():
        postgres.start()
    for database, password in (("dagster", credentials["dagster_db_password"]), ("mlflow", credentials["mlflow_db_password"])):
        postgres.create_database(database, database, password)
    state["postgres"] = {"root": str(pg_root), "port": postgres.port}
    save_state(home, state)

    mlflow = MlflowServer(root / "mlflow", postgres.url("mlflow", "mlflow", credentials["mlflow_db_password"]), f"s3://{BUCKET}/mlflow",
                          weed.endpoint_url, weed.access_key, weed.secret_key, **state.get("mlflow", {}))
    if not (mlflow.pid and alive(mlflow.pid)):
        mlflow.start()
    state["mlflow"] = {"port": mlflow.port, "pid": mlflow.pid}
    state["dagster_home"] = str(use_production_instance(home))
    save_state(home, state)
    if with_dagster:
        start_dagster(home, state, settings or {})
    return state


def use_production_instance(home: Path) -> Path:
    """Make the home's Dagster instance the PostgreSQL one of `deploy/dagster.yaml`, so the CLI, the
    webserver and the daemon all use it. A home holding an embedded (SQLite) history is left alone."""
    instance = dagster_home(home)
    config = instance / "dagster.yaml"
    embedded = config.exists() and config.read_text() != DEPLOY_INSTANCE.read_text()
    if embedded and (any(instance.glob("*.db")) or (instance / "history").exists()):
        raise ValueError(f"{home} has an embedded (SQLite) Dagster instance with history; give the stack a home "
                         "of its own (YOLO_ASSETS_HOME=.yolo-assets-stack, as `make stack` does)")
    instance.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY_INSTANCE, config)
    return instance


# The code location's name, as `dagster dev -m yolo_assets.definitions` and the CLI name it: runs launched
# by the stack's daemon can be re-executed from any of them.
LOCATION_NAME = "yolo_assets.definitions"


def workspace_file(home: Path, code_server_port: int) -> Path:
    """The workspace the stack's webserver and daemon share: the stack's code server."""
    path = stack_dir(home) / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": code_server_port, "location_name": LOCATION_NAME}
    path.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}, sort_keys=False))
    return path


def start_dagster(home: Path, state: dict[str, Any], settings: Mapping[str, str]) -> None:
    """The code server, then dagster-webserver and dagster-daemon on it, as a deployment runs them: one
    process loads the code and launches the runs (its children), and the daemon does not start and replace
    a code server of its own every minute (Dagster reloads a workspace it manages every 60 s)."""
    env = clean_environment(**{**settings, **client_environment(state)})  # the stack's own settings win
    processes = state.setdefault("dagster", {})
    code_port = processes.get("code_server_port") or free_ports(1)[0]
    port = processes.get("webserver_port") or free_ports(1)[0]
    workspace = str(workspace_file(home, code_port))
    commands = {
        "code_server": [str(BIN / "dagster"), "code-server", "start", "-m", "yolo_assets.definitions", "--location-name", LOCATION_NAME,
                        "-h", "127.0.0.1", "-p", str(code_port)],
        "webserver": [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
    }
    processes["code_server_port"], processes["webserver_port"] = code_port, port
    for name, command in commands.items():
        if not (processes.get(name) and alive(processes[name])):
            processes[name] = spawn(command, stack_dir(home) / f"dagster-{name}.log", env, Path.cwd())
            save_state(home, state)
        if name == "code_server":  # it listens once the code is loaded: the others find it ready
            wait_until(lambda: tcp_answers("127.0.0.1", code_port, 1.0), processes[name], 180, "dagster code-server",
                       stack_dir(home) / "dagster-code_server.log")
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/server_info") == 200, processes["webserver"], 180,
               "dagster-webserver", stack_dir(home) / "dagster-webserver.log")


def down(home: Path) -> list[str]:
    """Stop every process `up` started, newest first; returns what was stopped."""
    state = load_state(home)
    stopped = []
    for name in ("daemon", "webserver", "code_server"):  # the code server last: the others use it
        pid = state.get("dagster", {}).pop(name, None)
        if pid and alive(pid):
            stop_group(pid)
            stopped.append(f"dagster-{name}".replace("_", "-"))
    if state.get("mlflow", {}).get("pid") and alive(state["mlflow"]["pid"]):
        stop_group(state["mlflow"].pop("pid"))
        stopped.append("mlflow")
    if state.get("postgres"):
        Postgres(Path(state["postgres"]["root"]), state["credentials"]["postgres_password"]).stop()
        stopped.append("postgres")
    if state.get("seaweedfs", {}).get("pid") and alive(state["seaweedfs"]["pid"]):
        SeaweedFS(stack_dir(home) / "seaweedfs", "", "", **state["seaweedfs"]).stop(graceful=True)
        state["seaweedfs"].pop("pid")
        stopped.append("seaweedfs")
    if state:
        save_state(home, state)
    return stopped


def status(home: Path) -> list[tuple[str, str, str]]:
    """(service, running or stopped, where) for each part of the stack."""
    state = load_state(home)
    if not state:
        return []
    rows = [
        ("seaweedfs (S3)", state.get("seaweedfs", {}).get("pid"), f"http://127.0.0.1:{state.get('seaweedfs', {}).get('ports', {}).get('s3')}"),
        ("mlflow", state.get("mlflow", {}).get("pid"), f"http://127.0.0.1:{state.get('mlflow', {}).get('port')}"),
        ("dagster-webserver", state.get("dagster", {}).get("webserver"), f"http://127.0.0.1:{state.get('dagster', {}).get('webserver_port')}"),
        ("dagster-daemon", state.get("dagster", {}).get("daemon"), ""),
        ("dagster code-server", state.get("dagster", {}).get("code_server"), f"127.0.0.1:{state.get('dagster', {}).get('code_server_port')} (gRPC)"),
    ]
    result = [(name, "running" if pid and alive(pid) else "stopped", where) for name, pid, where in rows]
    pg = state.get("postgres", {})
    running = bool(pg) and Postgres(Path(pg["root"]), "").running()
    return [*result, ("postgres", "running" if running else "stopped", f"127.0.0.1:{pg.get('port')}")]


def environment_file(home: Path, state: dict[str, Any]) -> Path:
    """`source` it to point the CLI (upload, tick, status, lineage) at the stack."""
    path = stack_dir(home) / "stack.env"
    path.write_text("".join(f"export {name}={value}\n" for name, value in client_environment(state).items()))
    path.chmod(0o600)
    return path
