"""The chaos soak's short form (benchmarks/chaos_soak.py has the full one): the local stack under the
daemon, SeaweedFS, PostgreSQL and the MLflow server each killed once for a while and the daemon killed
once, while batches land; with no hand on it, everything ends ingested, built, trained and registered."""

import os
import shutil
from pathlib import Path

import pytest
from chaos_soak import run_soak

from yolo_assets.ops.stack import load_state

pytestmark = pytest.mark.slow


def test_a_short_soak_heals_every_outage_by_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environment = dict(os.environ)
    home = tmp_path / "home"
    # 150 s: the same outages as over 180 s (seed 1: S3 27 s, MLflow 31 s, PostgreSQL 17 s, the daemon), closer together.
    result = run_soak(home, batches=3, images=4, duration_s=150, seed=1, min_down_s=15, max_down_s=40, settle_s=1200)
    events = "\n".join([*result["events"], f"not ingested: {result['batches_not_ingested']}", f"in progress: {result['runs_in_progress']}"])
    assert result["batch_success_rate"] == 1.0, events
    assert result["latest_dataset_holds_every_batch"] and result["latest_dataset_registered"], events
    assert result["duplicate_run_keys"] == {} and result["incomplete_artifacts"] == [], result
    assert result["trainings_per_dataset_version_max"] <= 1, result
    assert result["passed"]
    assert dict(os.environ) == environment  # the stack's settings do not outlive the soak (later tests' homes)
    postgres_data = Path(load_state(home)["postgres"]["root"])
    if not postgres_data.is_relative_to(home):  # in /var/tmp (kept, like the home, when the soak fails)
        shutil.rmtree(postgres_data.parent)
    with capsys.disabled():
        print({k: v for k, v in result.items() if k not in ("events", "faults")})
