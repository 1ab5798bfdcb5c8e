"""Sensor-driven retraining: declarative automation from a new dataset version to a registered model.

`trained_weights` materialises when `processed_images` gets a new data version (not merely a new
materialisation), its blocking checks passed (`split_leakage`, and `retrain_gate`: at least
`min_new_images` new images since the dataset the current weights were trained on), and nothing
upstream is running (the advisory `near_duplicates` does not hold it back). `evaluation_report` and
`registered_model` follow in the same run.
"""


import dagster as dg

from resources.artifact_store import ArtifactStore
from resources.model_policy import ModelPolicy
from yolo_assets.processed_images import PROCESSED_IMAGES, processed_images
from yolo_assets.versioning import latest_data_version, latest_materialization, metadata_value

AC = dg.AutomationCondition

# The very first build: as soon as the inputs exist, even when they appeared before the automation
# sensor's first tick (AutomationCondition.on_missing() only covers targets added after that tick).
FIRST_BUILD = (
    (AC.missing() & ~AC.any_deps_missing()).newly_true() & ~AC.in_progress() & ~AC.any_deps_in_progress()
).with_label("first build once the inputs exist")

RETRAIN_ON_NEW_DATA = (
    (
        AC.any_deps_match(AC.data_version_changed()).since_last_handled()
        & AC.any_deps_match(AC.all_checks_match(AC.check_passed(), blocking_only=True))
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("new dataset version with enough new images")
    | FIRST_BUILD
)

FOLLOW_UPSTREAM = (
    (
        AC.any_deps_match(AC.data_version_changed() | AC.will_be_requested()).since_last_handled()
        & AC.all_deps_blocking_checks_passed()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("upstream has a new version")
    | FIRST_BUILD
)


def dataset_images(store: ArtifactStore, version: str) -> set[str]:
    return {item["sha"] for item in store.read_json(PROCESSED_IMAGES, version, "manifest.json")["items"]}


@dg.asset_check(
    asset=processed_images,
    name="retrain_gate",
    # Blocking so RETRAIN_ON_NEW_DATA can require it with the blocking checks (split_leakage) and
    # leave out the advisory near_duplicates; it only ever fails with WARN severity, which halts nothing.
    blocking=True,
    description="Passes when at least min_new_images images are new since the dataset the current weights were trained on.",
)
def retrain_gate(
    context: dg.AssetCheckExecutionContext, artifact_store: ArtifactStore, model_policy: ModelPolicy
) -> dg.AssetCheckResult:
    current = latest_data_version(context.instance, PROCESSED_IMAGES)
    trained_on = metadata_value(latest_materialization(context.instance, "trained_weights"), "dataset_version")
    if current is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"reason": "no dataset yet"})
    if not trained_on or not artifact_store.exists(PROCESSED_IMAGES, trained_on):
        return dg.AssetCheckResult(passed=True, metadata={"reason": "no trained model yet", "min_new_images": model_policy.min_new_images})
    new_images = len(dataset_images(artifact_store, current) - dataset_images(artifact_store, trained_on))
    passed = new_images >= model_policy.min_new_images
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if passed else dg.AssetCheckSeverity.WARN,
        metadata={
            "new_images": new_images,
            "min_new_images": model_policy.min_new_images,
            "trained_on_dataset": trained_on,
            "reason": f"{new_images} new images since the last trained dataset (minimum {model_policy.min_new_images})",
        },
    )
