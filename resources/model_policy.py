"""When to retrain and when to promote: deployment settings, the same for every run."""

from typing import Any

import dagster as dg
from pydantic import field_validator

RETRAIN, DEMOTE = "retrain", "demote"
# Plain str (not Literal) so that a deployment can fill it with EnvVar; checked once it is resolved.
RETRACTION_POLICIES = (RETRAIN, DEMOTE)


class ModelPolicy(dg.ConfigurableResource):
    min_new_images: int = 1
    """Automatic retraining waits until at least this many images are new since the last trained dataset."""
    promotion_tolerance: float = 0.01
    """The challenger's mAP50-95 may be at most this much below the champion's."""
    max_class_ap_drop: float = 0.05
    """No class's AP50-95 may drop by more than this versus the champion."""
    first_model_min_map50: float = 0.3
    """With no champion yet, a model is promoted when its mAP50 reaches this floor."""
    rollout_steps: list[int] = [10, 50, 100]
    """Gray release: the canary's share of traffic at each step (percent, the last 100); every fresh
    batch it holds on moves it one step, and after the last it becomes champion. [100] = promote at once."""
    drift_tolerance: float = 0.1
    """fresh_data_drift warns (and retraining is triggered) when the champion's mAP50-95 on a fresh
    batch is more than this below its own offline validation figure."""
    retraction_policy: str = RETRAIN
    """What a retraction does to a model trained on the retracted batch. `retrain`: a new model is trained
    without it and goes through the promotion gate and the gray release; the champion serves until then.
    `demote`: the same, and the champion is also taken out of service at once in favour of the newest
    version that never saw a retracted batch (passed its gate, never rolled back)."""

    @field_validator("retraction_policy", mode="before")
    @classmethod
    def _known_retraction_policy(cls, value: Any) -> Any:
        if isinstance(value, dg.EnvVar) or value in RETRACTION_POLICIES:
            return value
        raise ValueError(f"retraction_policy must be one of {', '.join(RETRACTION_POLICIES)}, not {value!r}")
