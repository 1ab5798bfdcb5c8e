"""Content-addressed, immutable artifact storage: `<root>/<asset>/<data_version>/...`.

Writes are atomic: an artifact is built in a private temporary folder and renamed into place in one
step, so a crash never leaves a half-written artifact at a path that looks valid.
"""


import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from yolo_assets.fileio import atomic_write_bytes, object_file


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Where assets keep what they produce. A local folder now; an S3 prefix implements the same calls."""

    @abstractmethod
    def exists(self, asset: str, version: str) -> bool:
        """True only for a completely written artifact."""

    @abstractmethod
    def uri(self, asset: str, version: str) -> str:
        """Where a person finds the artifact."""

    @abstractmethod
    @contextmanager
    def write_artifact(self, asset: str, version: str) -> Iterator[Path]:
        """Yield an empty local folder; on a clean exit it becomes the artifact, atomically."""

    @abstractmethod
    def local_path(self, asset: str, version: str) -> Path:
        """A local folder holding the artifact (downloaded first by remote stores)."""

    @abstractmethod
    def versions(self, asset: str) -> list[str]:
        """Every stored data version of an asset."""

    @abstractmethod
    def lookup_cache_key(self, asset: str, cache_key: str) -> str | None:
        """The data version an earlier materialisation produced for this cache key, if still stored."""

    @abstractmethod
    def record_cache_key(self, asset: str, cache_key: str, version: str) -> None: ...

    @abstractmethod
    def object_root(self, namespace: str) -> Path:
        """Local folder of a namespace of content-addressed objects (blobs, per-item caches).

        Worker processes write objects there directly with `object_file` + `atomic_write_bytes`.
        """

    def object_path(self, namespace: str, key: str) -> Path:
        return object_file(self.object_root(namespace), key)

    @abstractmethod
    def put_object(self, namespace: str, key: str, data: bytes) -> None:
        """Store bytes under a content key unless they are already there."""

    def read_json(self, asset: str, version: str, name: str) -> Any:
        return json.loads((self.local_path(asset, version) / name).read_text())


class LocalArtifactStore(ArtifactStore):
    """Artifact store on a local (or mounted) filesystem."""

    root: str

    @property
    def _root(self) -> Path:
        return Path(self.root)

    def _final(self, asset: str, version: str) -> Path:
        return self._root / asset / version

    def exists(self, asset: str, version: str) -> bool:
        return self._final(asset, version).is_dir()

    def uri(self, asset: str, version: str) -> str:
        return str(self._final(asset, version))

    @contextmanager
    def write_artifact(self, asset: str, version: str) -> Iterator[Path]:
        staging = self._root / ".staging" / f"{asset}-{version[:16]}-{uuid.uuid4().hex}"
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

    def local_path(self, asset: str, version: str) -> Path:
        path = self._final(asset, version)
        if not path.is_dir():
            raise FileNotFoundError(f"artifact {asset}/{version} is not in the store at {self.root}")
        return path

    def versions(self, asset: str) -> list[str]:
        folder = self._root / asset
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")) if folder.is_dir() else []

    def _key_file(self, asset: str, cache_key: str) -> Path:
        return self._root / asset / "_cache_keys" / f"{cache_key}.json"

    def lookup_cache_key(self, asset: str, cache_key: str) -> str | None:
        key_file = self._key_file(asset, cache_key)
        if not key_file.exists():
            return None
        version = json.loads(key_file.read_text())["data_version"]
        return version if self.exists(asset, version) else None

    def record_cache_key(self, asset: str, cache_key: str, version: str) -> None:
        atomic_write_bytes(self._key_file(asset, cache_key), json.dumps({"data_version": version}).encode())

    def object_root(self, namespace: str) -> Path:
        return self._root / "_objects" / namespace

    def put_object(self, namespace: str, key: str, data: bytes) -> None:
        dst = self.object_path(namespace, key)
        if not dst.exists():
            atomic_write_bytes(dst, data)
