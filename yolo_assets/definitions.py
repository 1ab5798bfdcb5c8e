"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here."""


from pathlib import Path

import dagster as dg

from resources.artifact_store import LocalArtifactStore
from resources.landing_zone import LocalLandingZone
from sensors.labeled_data import labeled_data_sensor
from yolo_assets.batches import labeled_batch
from yolo_assets.home import hash_cache_path, home_dir, landing_dir, store_dir
from yolo_assets.processed_images import processed_images


def build_definitions(home: Path) -> dg.Definitions:
    """Everything wired to one home folder (the embedded default)."""
    return dg.Definitions(
        assets=[labeled_batch, processed_images],
        sensors=[labeled_data_sensor],
        resources={
            "landing_zone": LocalLandingZone(root=str(landing_dir(home)), hash_cache_path=str(hash_cache_path(home))),
            "artifact_store": LocalArtifactStore(root=str(store_dir(home))),
        },
    )


defs = build_definitions(home_dir())
