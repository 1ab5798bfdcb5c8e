"""When to retrain and when to promote: deployment settings, the same for every run."""

import dagster as dg


class ModelPolicy(dg.ConfigurableResource):
    min_new_images: int = 1
    """Automatic retraining waits until at least this many images are new since the last trained dataset."""
    promotion_tolerance: float = 0.01
    """The challenger's mAP50-95 may be at most this much below the champion's."""
    max_class_ap_drop: float = 0.05
    """No class's AP50-95 may drop by more than this versus the champion."""
    first_model_min_map50: float = 0.3
    """With no champion yet, a model is promoted when its mAP50 reaches this floor."""
