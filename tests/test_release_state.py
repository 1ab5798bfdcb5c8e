"""The release state where it lives: the rollout aliases and evidence in an MLflow registry (a SQLite
tracking store), and drift read from a Dagster instance's fresh-batch scorings. The state machine they
hold is unit-tested in tests/unit/test_release.py."""

import os
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from yolo_assets.release.rollout import CANARY, CHAMPION, PREVIOUS, RolloutState, RolloutStore, hold, offer, roll_back, withdraw

if TYPE_CHECKING:
    from mlflow import MlflowClient

STEPS = (10, 50, 100)


@pytest.fixture(scope="module")
def mlflow_client(tmp_path_factory: pytest.TempPathFactory) -> "MlflowClient":
    """One SQLite tracking store for the module (creating its tables costs seconds); a model per test."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")


_model_numbers = count()


@pytest.fixture
def store(mlflow_client: "MlflowClient", tmp_path: Path) -> RolloutStore:
    """A registered model with versions 1, 2 and 3."""
    name = f"detector-{next(_model_numbers)}"
    mlflow_client.create_registered_model(name)
    for _ in range(3):
        mlflow_client.create_model_version(name, source=str(tmp_path), run_id=None)
    return RolloutStore(mlflow_client, name)


def aliases(store: RolloutStore) -> dict[str, str]:
    return {alias: str(version) for alias, version in store.client.get_registered_model(store.model_name).aliases.items()}


def apply(store: RolloutStore, new: RolloutState) -> RolloutState:
    """Write the change from what the store holds, and read it back."""
    store.write(store.read(), new)
    return store.read()


def test_an_unregistered_model_reads_as_the_empty_state(mlflow_client: "MlflowClient") -> None:
    assert RolloutStore(mlflow_client, "never-registered").read() == RolloutState()


def test_the_store_round_trips_a_canary_and_its_evidence(store: RolloutStore) -> None:
    first = apply(store, offer(RolloutState(), "1", STEPS))
    assert (first.champion, first.canary, first.previous) == ("1", None, None)
    started = apply(store, offer(first, "2", STEPS))
    advanced = hold(started, "b1@v1")
    read = apply(store, advanced)
    assert (read.champion, read.canary, read.previous, read.steps) == ("1", "2", None, STEPS)
    assert (read.step, read.evidence, read.canary_percent) == (1, ("b1@v1",), 50)
    assert (read.event, read.reason, read.history) == (advanced.event, advanced.reason, advanced.history)
    assert aliases(store) == {CHAMPION: "1", CANARY: "2"}


def test_a_rolled_back_canary_loses_its_alias(store: RolloutStore) -> None:
    running = apply(store, offer(apply(store, offer(RolloutState(), "1", STEPS)), "2", STEPS))
    read = apply(store, roll_back(running, "regressed"))
    assert (read.champion, read.canary, read.canary_percent, read.event) == ("1", None, 0, "rolled_back")
    assert aliases(store) == {CHAMPION: "1"}


def test_a_promoted_canary_becomes_champion_and_the_old_one_previous(store: RolloutStore) -> None:
    state = apply(store, offer(apply(store, offer(RolloutState(), "1", STEPS)), "2", STEPS))
    for batch in ("b1@v1", "b2@v1", "b3@v1"):
        state = apply(store, hold(state, batch))
    assert (state.champion, state.canary, state.previous, state.event) == ("2", None, "1", "promoted")
    assert aliases(store) == {CHAMPION: "2", PREVIOUS: "1"}


def test_a_replacing_canary_moves_the_alias(store: RolloutStore) -> None:
    running = apply(store, hold(apply(store, offer(apply(store, offer(RolloutState(), "1", STEPS)), "2", STEPS)), "b1@v1"))
    read = apply(store, offer(running, "3", STEPS))
    assert (read.canary, read.step, read.evidence) == ("3", 0, ())
    assert aliases(store) == {CHAMPION: "1", CANARY: "3"}


def test_a_withdrawn_champion_loses_every_alias_and_says_why(store: RolloutStore) -> None:
    state = apply(store, offer(apply(store, offer(RolloutState(), "1", (100,))), "2", (100,)))
    assert aliases(store) == {CHAMPION: "2", PREVIOUS: "1"}
    read = apply(store, withdraw(state, {"2"}, "1", "version 2 learned from retracted b"))
    assert (read.champion, read.previous, read.event) == ("1", None, "withdrawn")
    assert aliases(store) == {CHAMPION: "1"}
    assert store.client.get_model_version(store.model_name, "2").tags["rollout"].startswith("withdrawn: version 2 learned")


def test_a_canary_alias_moved_by_hand_restarts_at_step_zero(store: RolloutStore) -> None:
    running = apply(store, hold(apply(store, offer(apply(store, offer(RolloutState(), "1", STEPS)), "2", STEPS)), "b1@v1"))
    assert running.step == 1
    store.client.set_registered_model_alias(store.model_name, CANARY, "3")
    read = store.read()
    assert (read.canary, read.step, read.evidence, read.canary_percent) == ("3", 0, (), 10)


def test_a_drift_since_the_last_training_is_a_retraining_trigger() -> None:
    import dagster as dg

    from yolo_assets.assets.keys import FRESH_BATCH_EVALUATION, TRAINED_WEIGHTS
    from yolo_assets.assets.training import drifted_batches_since_training

    def scored(batch: str, drift: bool) -> None:
        instance.report_runless_asset_event(dg.AssetMaterialization(FRESH_BATCH_EVALUATION, partition=batch, metadata={"drift": drift}))

    with dg.DagsterInstance.ephemeral() as instance:
        scored("before_training", True)
        instance.report_runless_asset_event(dg.AssetMaterialization(TRAINED_WEIGHTS))
        assert drifted_batches_since_training(instance) == []  # that drift was trained on already
        scored("b1", False)
        assert drifted_batches_since_training(instance) == []
        scored("b2", True)
        assert drifted_batches_since_training(instance) == ["b2"]
