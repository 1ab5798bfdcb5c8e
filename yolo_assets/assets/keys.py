"""The assets' identities: keys, code versions, groups, owners and retry policies, in the order one
image travels through them (the decorators take their row with `**identity(KEY)`).

Bump an asset's code version when its logic changes what it produces (README, "Versioning"): its cache
key changes, so it is rebuilt, and Dagster shows it and everything downstream as stale.
"""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from yolo_assets.assets.retries import TRAINING_RETRY, TRANSIENT_RETRY

LABELED_BATCH = dg.AssetKey("labeled_batch")
BATCH_RETRACTIONS = dg.AssetKey("batch_retractions")
PROCESSED_IMAGES = dg.AssetKey("processed_images")
TRAINED_WEIGHTS = dg.AssetKey("trained_weights")
EVALUATION_REPORT = dg.AssetKey("evaluation_report")
REGISTERED_MODEL = dg.AssetKey("registered_model")
FRESH_BATCH_EVALUATION = dg.AssetKey("fresh_batch_evaluation")
MODEL_ROLLOUT = dg.AssetKey("model_rollout")

@dataclass(frozen=True)
class AssetIdentity:
    """What an asset is, apart from what it computes: one row of IDENTITIES, spread into its decorator."""

    code_version: str
    group: str
    owner: str
    domain: str
    kinds: tuple[str, ...]
    retry: dg.RetryPolicy = TRANSIENT_RETRY


IDENTITIES: dict[dg.AssetKey, AssetIdentity] = {
    # 2: metadata size caps and refusals, label_too_large, labels compared with a tolerance.
    LABELED_BATCH: AssetIdentity("2", "data", "team:data", "ingest", ("python",)),
    BATCH_RETRACTIONS: AssetIdentity("1", "data", "team:data", "dataset", ("python",)),
    # 3: retracted batches left out, class ids kept from the previous version, splits anchored to it.
    PROCESSED_IMAGES: AssetIdentity("3", "data", "team:data", "dataset", ("python",)),
    TRAINED_WEIGHTS: AssetIdentity("1", "model", "team:ml", "training", ("pytorch",), TRAINING_RETRY),
    EVALUATION_REPORT: AssetIdentity("1", "model", "team:ml", "evaluation", ("pytorch", "mlflow")),
    # 2: the gate no longer moves `champion`: model_rollout does (canary first, or at once with rollout_steps [100]).
    REGISTERED_MODEL: AssetIdentity("2", "model", "team:ml", "registry", ("mlflow",)),
    FRESH_BATCH_EVALUATION: AssetIdentity("1", "release", "team:ml", "release", ("pytorch", "mlflow")),
    MODEL_ROLLOUT: AssetIdentity("1", "release", "team:ml", "release", ("mlflow",)),
}
CODE_VERSIONS: dict[dg.AssetKey, str] = {key: row.code_version for key, row in IDENTITIES.items()}


def identity(key: dg.AssetKey) -> dict[str, Any]:
    """`@dg.asset` arguments from the asset's row: key, code version, group, owner, domain tag, kinds, retry policy."""
    row = IDENTITIES[key]
    return {"key": key, "code_version": row.code_version, "group_name": row.group, "owners": [row.owner],
            "tags": {"domain": row.domain}, "kinds": set(row.kinds), "retry_policy": row.retry}


def code_versions_through(last: dg.AssetKey) -> dict[str, str]:
    """Provenance for MLflow tags: asset name -> code version of every asset up to `last`, in order."""
    names: dict[str, str] = {}
    for key, version in CODE_VERSIONS.items():
        names[key.to_user_string()] = version
        if key == last:
            break
    return names
