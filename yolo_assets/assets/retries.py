"""Retries for faults that can be transient (landing-zone and store I/O, MLflow calls, a killed
training worker). Deterministic failures are never retried: bad data raises `dg.Failure(allow_retries=
False)`, and a failed blocking check is a Dagster framework error, which retry policies skip."""

import dagster as dg

# Waits of about 5, 10 and 20 s: long enough for a restarting S3 server, database or MLflow server
# (SeaweedFS takes ~12 s to come back with its data), short enough to fail a run within a minute.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
# Training resumes from its last checkpoint (see training.py), so a retry loses at most one epoch.
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)
