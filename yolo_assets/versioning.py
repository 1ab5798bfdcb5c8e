"""DESIGN.md's versioning rules in one place: cache keys, data versions, memoised lookups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from yolo_assets.hashing import canonical_json, hash_json, sha256_bytes


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


def materialization_data_version(record: dg.EventLogRecord) -> str | None:
    materialization = record.asset_materialization
    return materialization.tags.get("dagster/data_version") if materialization and materialization.tags else None


def materialization_code_version(record: dg.EventLogRecord) -> str | None:
    materialization = record.asset_materialization
    return materialization.tags.get("dagster/code_version") if materialization and materialization.tags else None


def latest_materialization(instance: dg.DagsterInstance, asset: str) -> dg.AssetMaterialization | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return event.asset_materialization if event else None


def latest_data_version(instance: dg.DagsterInstance, asset: str) -> str | None:
    materialization = latest_materialization(instance, asset)
    return materialization.tags.get("dagster/data_version") if materialization and materialization.tags else None


def input_data_versions(tags: Mapping[str, str]) -> dict[str, str]:
    """Parent asset -> the data version it had when a materialisation read it (Dagster's provenance tags)."""
    return {tag.rsplit("/", 1)[-1]: value for tag, value in tags.items() if tag.startswith("dagster/input_data_version/")}


def metadata_value(materialization: dg.AssetMaterialization | None, name: str, default: Any = None) -> Any:
    if materialization is None or name not in materialization.metadata:
        return default
    return getattr(materialization.metadata[name], "value", default)


def metadata_to_json(metadata: dict[str, dg.MetadataValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        raw = getattr(value, "value", value)
        out[name] = raw if isinstance(raw, (str, int, float, bool, list, dict, type(None))) else str(raw)
    return out
