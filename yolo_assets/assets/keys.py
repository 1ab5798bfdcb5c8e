"""The assets' identities: keys and code versions, in the order one image travels through them.

Bump an asset's code version when its logic changes what it produces (DESIGN.md rule 1): its cache
key changes, so it is rebuilt, and Dagster shows it and everything downstream as stale.
"""

import dagster as dg

LABELED_BATCH = dg.AssetKey("labeled_batch")
PROCESSED_IMAGES = dg.AssetKey("processed_images")
TRAINED_WEIGHTS = dg.AssetKey("trained_weights")
EVALUATION_REPORT = dg.AssetKey("evaluation_report")
REGISTERED_MODEL = dg.AssetKey("registered_model")

CODE_VERSIONS: dict[dg.AssetKey, str] = {
    LABELED_BATCH: "1",
    PROCESSED_IMAGES: "2",
    TRAINED_WEIGHTS: "1",
    EVALUATION_REPORT: "1",
    REGISTERED_MODEL: "1",
}


def code_versions_through(last: dg.AssetKey) -> dict[str, str]:
    """Provenance for MLflow tags: asset name -> code version of every asset up to `last`, in order."""
    names: dict[str, str] = {}
    for key, version in CODE_VERSIONS.items():
        names[key.to_user_string()] = version
        if key == last:
            break
    return names
