"""Retries for faults that can be transient (landing-zone and store I/O, MLflow calls, a killed
training worker). Deterministic failures are never retried: bad data raises `dg.Failure(allow_retries=
False)`, and a failed blocking check is a Dagster framework error, which retry policies skip."""

import dagster as dg

TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
# Training resumes from its last checkpoint (see training.py), so a retry loses at most one epoch.
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)
