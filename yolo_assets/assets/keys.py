"""The assets' identities: keys and code versions, in the order one image travels through them.

Bump an asset's code version when its logic changes what it produces (README, "Versioning"): its cache
key changes, so it is rebuilt, and Dagster shows it and everything downstream as stale.
"""

import dagster as dg

LABELED_BATCH = dg.AssetKey("labeled_batch")
BATCH_RETRACTIONS = dg.AssetKey("batch_retractions")
PROCESSED_IMAGES = dg.AssetKey("processed_images")
TRAINED_WEIGHTS = dg.AssetKey("trained_weights")
EVALUATION_REPORT = dg.AssetKey("evaluation_report")
REGISTERED_MODEL = dg.AssetKey("registered_model")
FRESH_BATCH_EVALUATION = dg.AssetKey("fresh_batch_evaluation")
MODEL_ROLLOUT = dg.AssetKey("model_rollout")

CODE_VERSIONS: dict[dg.AssetKey, str] = {
    # 2: metadata size caps and refusals, label_too_large, labels compared with a tolerance.
    LABELED_BATCH: "2",
    BATCH_RETRACTIONS: "1",
    # 3: retracted batches left out, class ids kept from the previous version, splits anchored to it.
    PROCESSED_IMAGES: "3",
    TRAINED_WEIGHTS: "1",
    EVALUATION_REPORT: "1",
    # 2: the gate no longer moves `champion`: model_rollout does (canary first, or at once with rollout_steps [100]).
    REGISTERED_MODEL: "2",
    FRESH_BATCH_EVALUATION: "1",
    MODEL_ROLLOUT: "1",
}


def code_versions_through(last: dg.AssetKey) -> dict[str, str]:
    """Provenance for MLflow tags: asset name -> code version of every asset up to `last`, in order."""
    names: dict[str, str] = {}
    for key, version in CODE_VERSIONS.items():
        names[key.to_user_string()] = version
        if key == last:
            break
    return names
