"""Sensor-driven retraining: declarative automation from a new dataset version to a registered model.

`trained_weights` materialises when `processed_images` gets a new data version (not merely a new
materialisation), its blocking checks passed (`split_leakage`, and `retrain_gate`: at least
`min_new_images` new images since the dataset the current weights were trained on), and nothing
upstream is running (the advisory `near_duplicates` does not hold it back). `evaluation_report` and
`registered_model` follow in the same run.
"""

import dagster as dg

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
