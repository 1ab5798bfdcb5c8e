"""`model_automation_sensor`: evaluates the model assets' automation conditions (assets/automation.py)
and launches what they request: retrain, evaluate, register."""

import dagster as dg

from yolo_assets.assets.keys import EVALUATION_REPORT, MODEL_ROLLOUT, REGISTERED_MODEL, TRAINED_WEIGHTS

AUTOMATED_ASSETS = [TRAINED_WEIGHTS, EVALUATION_REPORT, REGISTERED_MODEL, MODEL_ROLLOUT]

model_automation_sensor = dg.AutomationConditionSensorDefinition(
    "model_automation_sensor",
    target=dg.AssetSelection.assets(*AUTOMATED_ASSETS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Retrains, evaluates and registers when processed_images gets a new data version; offers the registered version to the gray release.",
)
