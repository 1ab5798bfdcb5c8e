"""From registry to production: the promotion rule and the gray release's state machine (no Dagster)."""
