"""Small atomic file helpers. Dagster-free on purpose: preprocessing workers import this module."""

import os
import shutil
import uuid
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    """Write `data` to `path` via a temporary sibling and a rename (atomic on POSIX).

    `durable` adds an fsync before the rename, for the few files (manifests) whose loss on power
    failure would matter; per-item cache files can always be recomputed from their sources.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link when possible (same filesystem, no bytes copied), copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def object_relpath(key: str) -> str:
    """Layout of content-addressed objects: fan out on the key's first two characters."""
    return f"{key[:2]}/{key}"


def object_file(namespace_root: Path, key: str) -> Path:
    return namespace_root / object_relpath(key)
