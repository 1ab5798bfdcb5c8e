"""Reading back what the Dagster instance recorded: latest materialisations, their data versions,
metadata values and provenance (the input data versions Dagster tags every materialisation with)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
INPUT_DATA_VERSION_TAG_PREFIX = "dagster/input_data_version/"


def tags_of(materialization: dg.AssetMaterialization | None) -> Mapping[str, str]:
    return (materialization.tags if materialization else None) or {}


def data_version_of(materialization: dg.AssetMaterialization | None) -> str | None:
    return tags_of(materialization).get(DATA_VERSION_TAG)


def code_version_of(materialization: dg.AssetMaterialization | None) -> str | None:
    return tags_of(materialization).get(CODE_VERSION_TAG)


def latest_materialization(instance: dg.DagsterInstance, asset: dg.AssetKey) -> dg.AssetMaterialization | None:
    event = instance.get_latest_materialization_event(asset)
    return event.asset_materialization if event else None


def latest_data_version(instance: dg.DagsterInstance, asset: dg.AssetKey) -> str | None:
    return data_version_of(latest_materialization(instance, asset))


def input_data_versions(tags: Mapping[str, str]) -> dict[str, str]:
    """Parent asset -> the data version it had when a materialisation read it (Dagster's provenance tags)."""
    return {tag.rsplit("/", 1)[-1]: value for tag, value in tags.items() if tag.startswith(INPUT_DATA_VERSION_TAG_PREFIX)}


def metadata_value(materialization: dg.AssetMaterialization | dg.AssetObservation | None, name: str, default: Any = None) -> Any:
    if materialization is None or name not in materialization.metadata:
        return default
    return getattr(materialization.metadata[name], "value", default)


def metadata_to_json(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        raw = getattr(value, "value", value)
        out[name] = raw if isinstance(raw, (str, int, float, bool, list, dict, type(None))) else str(raw)
    return out
