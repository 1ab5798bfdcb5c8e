"""The artifact store on S3 (dagster-aws `S3Resource`): the layout of the local store under a bucket
prefix, for a team whose runs execute on several machines.

- `<prefix>/<asset>/<data_version>/<file>` plus `_COMPLETE.json` (the file list), written LAST: an
  artifact without it does not exist, so an upload cut short never looks valid.
- `<prefix>/_packs/<namespace>/...`: blobs, per-item caches and dataset items, packed: what one call
  publishes is one object plus its index, read back with ranged GETs (yolo_assets/core/s3_packs.py).
- `<prefix>/_objects/<namespace>/...`: objects that change in place (a training's checkpoint), one per
  key; stores written before packs keep every object here, and stay readable.
- A local read-through cache (`cache_dir`): artifacts by data version, bounded by `cache_max_bytes`
  (least recently used first out), and the object mirror that worker processes and ultralytics read.
"""

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from resources.artifact_store import ArtifactStore, asset_folder
from resources.s3_client import transfer_prefix
from yolo_assets.core.s3 import S3Prefix, parallel
from yolo_assets.core.s3_packs import ObjectPacks

COMPLETE = "_COMPLETE.json"
CACHE_KEYS = "_cache_keys"
OBJECTS = "_objects"
PACKS = "_packs"
# A local artifact is complete once this is written (after its files), and its mtime says when it was last used.
LOCAL_COMPLETE = ".complete"


class S3ArtifactStore(ArtifactStore):
    s3: S3Resource
    """Endpoint, region and credentials (from the environment through EnvVar)."""
    bucket: str
    prefix: str = "store"
    cache_dir: str
    """This machine's read-through cache; the same path on every machine keeps dataset lists valid."""
    cache_max_bytes: int = 20 * 1024**3
    """Artifacts beyond this total are evicted from the local cache, least recently used first."""

    _root: S3Prefix | None = PrivateAttr(default=None)
    _known: set[tuple[str, str]] = PrivateAttr(default_factory=set)
    _packs: dict[str, ObjectPacks] = PrivateAttr(default_factory=dict)

    @property
    def remote(self) -> S3Prefix:
        if self._root is None:
            self._root = transfer_prefix(self.s3, self.bucket, self.prefix)
        return self._root

    def _artifact(self, asset: dg.AssetKey, version: str) -> S3Prefix:
        return self.remote.child(f"{asset_folder(asset)}/{version}")

    def _local(self, asset: dg.AssetKey, version: str) -> Path:
        return Path(self.cache_dir) / asset_folder(asset) / version

    def exists(self, asset: dg.AssetKey, version: str) -> bool:
        # Artifacts are immutable: once seen complete, always complete.
        if (asset_folder(asset), version) in self._known:
            return True
        if self._artifact(asset, version).head(COMPLETE) is None:
            return False
        self._known.add((asset_folder(asset), version))
        return True

    def uri(self, asset: dg.AssetKey, version: str) -> str:
        return f"s3://{self.bucket}/{self._artifact(asset, version).key('')}"

    @contextmanager
    def write_artifact(self, asset: dg.AssetKey, version: str) -> Iterator[Path]:
        staging = Path(self.cache_dir) / ".staging" / f"{asset_folder(asset)}-{version[:16]}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            yield staging
            files = sorted(p for p in staging.rglob("*") if p.is_file())
            names = {p.relative_to(staging).as_posix(): p.stat().st_size for p in files}
            target = self._artifact(asset, version)
            if target.head(COMPLETE) is None:  # else another writer committed the same version first
                parallel(lambda name: target.upload(name, staging / name), names)
                target.put_bytes(COMPLETE, json.dumps({"files": names}, sort_keys=True).encode())
            self._known.add((asset_folder(asset), version))
            self._keep_locally(staging, self._local(asset, version))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _keep_locally(self, folder: Path, local: Path) -> None:
        """Move a complete artifact folder into the local cache (unless it is there already); its
        marker records its size, so keeping the cache bounded reads no folder."""
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        (folder / LOCAL_COMPLETE).write_text(str(size))
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, local)
        except OSError:
            if not (local / LOCAL_COMPLETE).exists():
                raise
        self._evict()

    def local_path(self, asset: dg.AssetKey, version: str) -> Path:
        local = self._local(asset, version)
        if (local / LOCAL_COMPLETE).exists():
            os.utime(local / LOCAL_COMPLETE)  # recently used
            return local
        target = self._artifact(asset, version)
        listing = target.get_bytes(COMPLETE)
        if listing is None:
            raise FileNotFoundError(f"artifact {asset_folder(asset)}/{version} is not in the store at {self.uri(asset, version)}")
        download = Path(self.cache_dir) / ".staging" / f"get-{asset_folder(asset)}-{version[:16]}-{uuid.uuid4().hex}"
        try:
            names = json.loads(listing)["files"]
            parallel(lambda name: target.download(name, download / name), names)
            self._keep_locally(download, local)
        finally:
            shutil.rmtree(download, ignore_errors=True)
        return local

    def _evict(self) -> None:
        """Keep the cached artifacts under `cache_max_bytes`: the least recently used go first."""
        cached = []
        for marker in Path(self.cache_dir).glob(f"*/*/{LOCAL_COMPLETE}"):
            folder = marker.parent
            if folder.parent.name.startswith((".", "_")):
                continue
            cached.append((marker.stat().st_mtime, int(marker.read_text() or 0), folder))
        total = sum(size for _, size, _ in cached)
        for _, size, folder in sorted(cached):
            if total <= self.cache_max_bytes:
                break
            (folder / LOCAL_COMPLETE).unlink(missing_ok=True)  # incomplete first, then gone
            shutil.rmtree(folder, ignore_errors=True)
            total -= size

    def versions(self, asset: dg.AssetKey) -> list[str]:
        folders, _ = self.remote.child(asset_folder(asset)).list_level()
        return sorted(v for v in folders if not v.startswith("_") and self.exists(asset, v))

    def lookup_cache_key(self, asset: dg.AssetKey, cache_key: str) -> str | None:
        pointer = self.remote.get_bytes(f"{asset_folder(asset)}/{CACHE_KEYS}/{cache_key}.json")
        if pointer is None:
            return None
        version: str = json.loads(pointer)["data_version"]
        return version if self.exists(asset, version) else None

    def record_cache_key(self, asset: dg.AssetKey, cache_key: str, version: str) -> None:
        self.remote.put_bytes(f"{asset_folder(asset)}/{CACHE_KEYS}/{cache_key}.json", json.dumps({"data_version": version}).encode())

    def object_root(self, namespace: str) -> Path:
        return Path(self.cache_dir) / OBJECTS / namespace

    def packs(self, namespace: str) -> ObjectPacks:
        """The namespace's packed objects (its pack indexes read once per store instance and machine)."""
        if namespace not in self._packs:
            self._packs[namespace] = ObjectPacks(
                self.remote.child(f"{PACKS}/{namespace}"), self.remote.child(f"{OBJECTS}/{namespace}"),
                Path(self.cache_dir) / PACKS / namespace,
            )
        return self._packs[namespace]

    def publish_objects(self, namespace: str, names: Iterable[str], replace: bool = False) -> int:
        if not replace:
            return self.packs(namespace).publish(self.object_root(namespace), names)
        remote, root = self.remote.child(f"{OBJECTS}/{namespace}"), self.object_root(namespace)
        names = sorted(set(names))
        parallel(lambda name: remote.upload(name, root / name), names)
        return len(names)

    def publish_snapshot(self, namespace: str, name: str, snapshot: Path) -> None:
        # One PUT (or a multipart upload completed at its end): readers see the previous object or this one.
        self.remote.child(f"{OBJECTS}/{namespace}").upload(name, snapshot)

    def fetch_objects(self, namespace: str, names: Iterable[str]) -> int:
        return self.packs(namespace).fetch(self.object_root(namespace), names)

    def delete_objects(self, namespace: str, names: Iterable[str]) -> None:
        names = list(names)
        self.remote.child(f"{OBJECTS}/{namespace}").delete(names)
        for name in names:
            (self.object_root(namespace) / name).unlink(missing_ok=True)

