"""Content-addressed, immutable artifact storage: `<root>/<asset>/<data_version>/...`.

Writes are atomic: an artifact is built in a private temporary folder and renamed into place in one
step, so a crash never leaves a half-written artifact at a path that looks valid. `cached` is the one
memoised path every asset takes (README, "Versioning"): cache key -> stored artifact, or build -> record.
"""

import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import dagster as dg

from yolo_assets.core.fileio import atomic_write_bytes, object_file

T = TypeVar("T")


@dataclass(frozen=True)
class Built(Generic[T]):
    """A freshly computed artifact: its data version, what the asset reports from it, and how to
    fill the artifact's folder (only called when the store does not hold this version yet)."""

    version: str
    summary: T
    write: Callable[[Path], None]


@dataclass(frozen=True)
class Cached(Generic[T]):
    """An artifact the store holds, either found by its cache key or just built."""

    version: str
    summary: T
    cache_hit: bool
    cache_key: str
    uri: str

    def metadata(self) -> dict[str, Any]:
        """The memoisation metadata every asset shows: cache_hit, cache_key, path."""
        return {"cache_hit": self.cache_hit, "cache_key": self.cache_key, "path": dg.MetadataValue.path(self.uri)}


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Where assets keep what they produce. A local folder now; an S3 prefix implements the same calls."""

    @abstractmethod
    def exists(self, asset: dg.AssetKey, version: str) -> bool:
        """True only for a completely written artifact."""

    @abstractmethod
    def uri(self, asset: dg.AssetKey, version: str) -> str:
        """Where a person finds the artifact."""

    @abstractmethod
    @contextmanager
    def write_artifact(self, asset: dg.AssetKey, version: str) -> Iterator[Path]:
        """Yield an empty local folder; on a clean exit it becomes the artifact, atomically."""

    @abstractmethod
    def local_path(self, asset: dg.AssetKey, version: str) -> Path:
        """A local folder holding the artifact (downloaded first by remote stores)."""

    @abstractmethod
    def versions(self, asset: dg.AssetKey) -> list[str]:
        """Every stored data version of an asset."""

    @abstractmethod
    def lookup_cache_key(self, asset: dg.AssetKey, cache_key: str) -> str | None:
        """The data version an earlier materialisation produced for this cache key, if still stored."""

    @abstractmethod
    def record_cache_key(self, asset: dg.AssetKey, cache_key: str, version: str) -> None: ...

    @abstractmethod
    def object_root(self, namespace: str) -> Path:
        """Local folder of a namespace of content-addressed objects (blobs, per-item caches, dataset
        items, checkpoints): worker processes and ultralytics read and write files there directly.
        A remote store mirrors it: `publish_objects` after writing, `fetch_objects` before reading."""

    def object_path(self, namespace: str, key: str) -> Path:
        return object_file(self.object_root(namespace), key)

    def publish_objects(self, namespace: str, names: Iterable[str], replace: bool = False) -> int:
        """Make objects written under `object_root` durable in the store (paths relative to it);
        returns how many were uploaded. Content-addressed objects are uploaded once; `replace` for the
        few that change in place (a training's checkpoint). A local store holds them already."""
        return 0

    def fetch_objects(self, namespace: str, names: Iterable[str]) -> int:
        """Bring the named objects into `object_root` where they are missing on this machine (those
        the store does not hold either are skipped); returns how many were downloaded."""
        return 0

    def publish_snapshot(self, namespace: str, name: str, snapshot: Path) -> None:
        """Make `snapshot` (a stable copy of the object `name`, which changes in place under
        `object_root`) durable as that object. A local store holds the object already."""

    def delete_objects(self, namespace: str, names: Iterable[str]) -> None:
        """Remove objects that are no longer needed (a finished training's checkpoint)."""
        for name in names:
            (self.object_root(namespace) / name).unlink(missing_ok=True)

    def read_json(self, asset: dg.AssetKey, version: str, name: str) -> Any:
        return json.loads((self.local_path(asset, version) / name).read_text())

    def cached(
        self,
        asset: dg.AssetKey,
        key: str,
        build: Callable[[], AbstractContextManager[Built[T]]],
        load: Callable[[str], T],
        publish: Callable[[str, T], None] | None = None,
    ) -> Cached[T]:
        """The memoised materialisation: when `key` names a stored artifact, `load` its summary and
        compute nothing; otherwise `build` it, write it unless that version is stored already
        (content-addressed: same bytes, same place), `publish` it (MLflow), and only then record the
        key, so a failure before that point is retried in full.

        `build` returns a context manager, so that what the artifact is written from (an extracted
        archive, a training's work folder) stays there until it is written; `nullcontext(built)`
        when there is nothing to hold open.
        """
        version = self.lookup_cache_key(asset, key)
        if version is not None:
            return Cached(version, load(version), True, key, self.uri(asset, version))
        with build() as built:
            if not self.exists(asset, built.version):
                with self.write_artifact(asset, built.version) as staging:
                    built.write(staging)
        if publish is not None:
            publish(built.version, built.summary)
        self.record_cache_key(asset, key, built.version)
        return Cached(built.version, built.summary, False, key, self.uri(asset, built.version))


def asset_folder(asset: dg.AssetKey) -> str:
    """The store folder of an asset: its key as the UI writes it (`labeled_batch`)."""
    return asset.to_user_string()


class LocalArtifactStore(ArtifactStore):
    """Artifact store on a local (or mounted) filesystem."""

    root: str

    @property
    def _root(self) -> Path:
        return Path(self.root)

    def _final(self, asset: dg.AssetKey, version: str) -> Path:
        return self._root / asset_folder(asset) / version

    def exists(self, asset: dg.AssetKey, version: str) -> bool:
        return self._final(asset, version).is_dir()

    def uri(self, asset: dg.AssetKey, version: str) -> str:
        return str(self._final(asset, version))

    @contextmanager
    def write_artifact(self, asset: dg.AssetKey, version: str) -> Iterator[Path]:
        staging = self._root / ".staging" / f"{asset_folder(asset)}-{version[:16]}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            yield staging
            final = self._final(asset, version)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError:
                # Another writer committed the same content-addressed version first: keep theirs.
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def local_path(self, asset: dg.AssetKey, version: str) -> Path:
        path = self._final(asset, version)
        if not path.is_dir():
            raise FileNotFoundError(f"artifact {asset_folder(asset)}/{version} is not in the store at {self.root}")
        return path

    def versions(self, asset: dg.AssetKey) -> list[str]:
        folder = self._root / asset_folder(asset)
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")) if folder.is_dir() else []

    def _key_file(self, asset: dg.AssetKey, cache_key: str) -> Path:
        return self._root / asset_folder(asset) / "_cache_keys" / f"{cache_key}.json"

    def lookup_cache_key(self, asset: dg.AssetKey, cache_key: str) -> str | None:
        key_file = self._key_file(asset, cache_key)
        if not key_file.exists():
            return None
        version = json.loads(key_file.read_text())["data_version"]
        return version if self.exists(asset, version) else None

    def record_cache_key(self, asset: dg.AssetKey, cache_key: str, version: str) -> None:
        atomic_write_bytes(self._key_file(asset, cache_key), json.dumps({"data_version": version}).encode())

    def object_root(self, namespace: str) -> Path:
        return self._root / "_objects" / namespace
