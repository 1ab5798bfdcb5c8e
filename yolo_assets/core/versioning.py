"""The versioning rules (README, "Versioning") as pure functions: cache keys and data versions of JSON documents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yolo_assets.core.hashing import canonical_json, hash_json, sha256_bytes

# The file a batch's or a dataset version's manifest is stored as in its artifact.
MANIFEST = "manifest.json"


def cache_key(code_version: str, inputs: Any, config: Mapping[str, Any]) -> str:
    """Rule 4: hash(code_version, input data versions, config) names a unique output."""
    return hash_json({"code_version": code_version, "inputs": inputs, "config": dict(config)})


def encoded_manifest(manifest: Mapping[str, Any]) -> tuple[str, bytes]:
    """Rule 2: the data version of an artifact described by one JSON document (a dataset manifest,
    metrics.json) is that document's hash. Returns (version, the canonical bytes that hash to it), so
    the bytes written are the bytes hashed, serialised once."""
    data = canonical_json(manifest)
    return sha256_bytes(data), data


def manifest_version(manifest: Mapping[str, Any]) -> str:
    return encoded_manifest(manifest)[0]
