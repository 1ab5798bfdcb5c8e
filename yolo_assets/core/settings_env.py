"""The `YOLO_ASSETS_*` environment variables a deployment may set, in one place.

A misspelt variable is otherwise ignored without a word (its setting keeps the default), so the CLI
warns about every `YOLO_ASSETS_*` name it does not know. The README's "Environment variables" table
documents exactly these, and tests/unit/test_cli_readme.py keeps the list, the table and the names
the code reads equal. Plain data: no Dagster import, so `synth` and `--help` stay fast.
"""

import difflib
from collections.abc import Iterable

PREFIX = "YOLO_ASSETS_"

SETTINGS = (
    "HOME", "LOG_LEVEL", "MLFLOW_TRACKING_URI", "MODEL_NAME", "MIN_NEW_IMAGES", "FIRST_MODEL_MIN_MAP50",
    "ROLLOUT_STEPS", "DRIFT_TOLERANCE", "RETRACTION_POLICY", "SERVE_REFRESH_S", "NEW_CLASS_POLICY", "LABEL_CONFLICTS", "MISSING_LABEL",
    "HONOUR_EXPORT_SPLIT", "ALERT_WEBHOOK_URL", "UI_URL", "RETRY_MAX_ATTEMPTS", "RETRY_FIRST_DELAY_S", "STORAGE", "S3_BUCKET", "S3_STORE_PREFIX",
    "S3_LANDING_PREFIX", "S3_LANDING_BUCKET", "S3_ENDPOINT_URL", "S3_REGION", "CACHE_DIR", "CACHE_MAX_BYTES",
    "EXECUTOR", "K8S_GPU_NODE_SELECTOR", "K8S_GPU_TOLERATIONS", "K8S_CPU_IMAGE",
)
# YOLO_ASSETS_TRAIN_<FIELD>: the fields of the training_defaults resource (resources/trainer.py).
TRAINING_FIELDS = ("epochs", "warm_start_epochs", "imgsz", "batch", "workers", "plots")
# YOLO_ASSETS_K8S_<STEP>_<SIZE>: the step pod sizes of resources/kubernetes.py.
K8S_STEPS = (
    "default", "labeled_batch", "processed_images", "trained_weights", "evaluation_report", "registered_model",
    "fresh_batch_evaluation",
)
K8S_SIZES = ("cpu", "memory", "gpus", "shm", "scratch")

KNOWN_VARIABLES: frozenset[str] = frozenset((
    *(PREFIX + name for name in SETTINGS),
    *(f"{PREFIX}TRAIN_{field.upper()}" for field in TRAINING_FIELDS),
    *(f"{PREFIX}K8S_{step.upper()}_{size.upper()}" for step in K8S_STEPS for size in K8S_SIZES),
))


def unknown_variable_warnings(names: Iterable[str]) -> list[str]:
    """One line per unknown `YOLO_ASSETS_*` name among `names`, with the closest known variable."""
    lines = []
    for name in sorted(n for n in names if n.startswith(PREFIX) and n not in KNOWN_VARIABLES):
        # Compared without the common prefix, which would make every name look close.
        closest = difflib.get_close_matches(name.removeprefix(PREFIX), [k.removeprefix(PREFIX) for k in KNOWN_VARIABLES], n=1)
        hint = f"did you mean {PREFIX}{closest[0]}?" if closest else "see the README's Environment variables"
        lines.append(f"unknown environment variable {name} is ignored ({hint})")
    return lines
