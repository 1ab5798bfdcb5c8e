"""Credentials of the test servers: recognisable values that the tests look for wherever a secret must
never appear (logs, metadata, manifests). Their own module, as test modules import them: importing
`conftest` by name picks whichever conftest.py was loaded first (tests/ or tests/unit/)."""

SENTINEL_S3_KEY = "sentinel-s3-access-4d2a"
SENTINEL_S3_SECRET = "sentinel-s3-secret-9b71e0"
SENTINEL_PG_PASSWORD = "sentinel-pg-password-37c5"
