"""The gray release as a state machine, and its one source of truth: the MLflow registry.

A version that passed the offline gate becomes `canary` at the first of `steps` (percent of traffic).
Every fresh batch scored by both the champion and the canary moves it: it holds -> the next step, and
after it has held at the last step it becomes `champion` (the old champion keeps `previous`); it
regresses -> rolled back at once (traffic 0, alias removed). `steps == (100,)` is immediate promotion.

The state lives on the registered model itself: aliases `champion`, `canary`, `previous`, and a model
tag `rollout` with the canary's step and the batches it held on. One `get_registered_model` reads it
all, on the laptop's SQLite store and on a tracking server alike; the detection service polls it.
Writes are ordered so that a reader between two of them never sends traffic where it should not go.
"""

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CANARY, PREVIOUS = "champion", "canary", "previous"
ROLLOUT_TAG = "rollout"
DEFAULT_STEPS = (10, 50, 100)


def check_steps(steps: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Traffic percentages: rising, each in 1..100, the last 100."""
    steps = tuple(int(step) for step in steps)
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"rollout_steps must rise from above 0 to 100, e.g. [10, 50, 100], not {list(steps)}")
    return steps


@dataclass(frozen=True)
class RolloutState:
    champion: str | None = None
    canary: str | None = None
    previous: str | None = None
    steps: tuple[int, ...] = DEFAULT_STEPS
    step: int = 0
    """Index into `steps` of the canary's current share."""
    evidence: tuple[str, ...] = ()
    """The fresh batches (`batch@version`) the canary held on, one per step passed."""
    event: str = ""
    """What the last change was: promoted, canary_started, canary_advanced, rolled_back, ..."""
    reason: str = ""
    changed_at: float = 0.0
    history: tuple[dict[str, Any], ...] = field(default=())
    """The last few changes (newest last), for `rollout status`; the asset's history holds them all."""

    @property
    def canary_percent(self) -> int:
        return self.steps[self.step] if self.canary else 0

    def live(self) -> dict[str, str]:
        """Route -> model version, for the routes that get traffic."""
        routes = {CHAMPION: self.champion, CANARY: self.canary if self.canary_percent else None}
        return {route: version for route, version in routes.items() if version}

    def to_tag(self) -> str:
        return json.dumps({"canary": self.canary, "steps": list(self.steps), "step": self.step, "evidence": list(self.evidence),
                           "event": self.event, "reason": self.reason, "changed_at": self.changed_at, "history": list(self.history)})

    def describe(self) -> str:
        """`yolo-assets rollout status`: a few lines for a person."""
        canary = f"{self.canary} at {self.canary_percent}% (step {self.step + 1}/{len(self.steps)} of {list(self.steps)})" if self.canary else "none"
        lines = [f"champion: {self.champion or 'none'}", f"canary:   {canary}", f"previous: {self.previous or 'none'}"]
        if self.event:
            lines.append(f"last change: {self.event}: {self.reason}")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "canary_percent": self.canary_percent, "steps": list(self.steps), "evidence": list(self.evidence),
                "history": list(self.history)}


def _changed(state: RolloutState, event: str, reason: str, **changes: Any) -> RolloutState:
    now = time.time()
    entry = {"event": event, "reason": reason, "at": now, "champion": changes.get("champion", state.champion),
             "canary": changes.get("canary", state.canary)}
    return replace(state, event=event, reason=reason, changed_at=now, history=(*state.history, entry)[-20:], **changes)


def promote(state: RolloutState, version: str, reason: str) -> RolloutState:
    """`version` takes all traffic as champion; the champion it replaces keeps `previous`."""
    previous = state.champion if state.champion != version else state.previous
    return _changed(state, "promoted", reason, champion=version, previous=previous, canary=None, step=0, evidence=())


def offer(state: RolloutState, version: str, steps: tuple[int, ...]) -> RolloutState:
    """A version that passed the offline gate: the first model and `steps == (100,)` are promoted at
    once; otherwise it becomes the canary at the first step (replacing a canary still running)."""
    if state.champion is None:
        return promote(replace(state, steps=steps), version, "the first model: nothing to compare it with on fresh data")
    if steps == (100,):
        return promote(replace(state, steps=steps), version, "rollout_steps [100]: promoted when it passed the offline gate")
    replaced = f" (replaces canary {state.canary})" if state.canary else ""
    return _changed(state, "canary_started", f"passed the offline gate; {steps[0]}% of traffic{replaced}",
                    canary=version, steps=steps, step=0, evidence=())


def hold(state: RolloutState, batch: str) -> RolloutState:
    """The canary held on a fresh batch: the next step, or champion after the last one."""
    assert state.canary is not None
    evidence = (*state.evidence, batch)
    if state.step + 1 >= len(state.steps):
        promoted = promote(state, state.canary, f"held on every step {list(state.steps)}: {', '.join(evidence)}")
        return replace(promoted, evidence=evidence)
    return _changed(state, "canary_advanced", f"held on {batch}: {state.steps[state.step + 1]}% of traffic",
                    step=state.step + 1, evidence=evidence)


def roll_back(state: RolloutState, reason: str) -> RolloutState:
    assert state.canary is not None
    return _changed(state, "rolled_back", f"canary {state.canary} rolled back: {reason}",
                    canary=None, step=0, evidence=())


def withdraw(state: RolloutState, tainted: set[str], replacement: str | None, reason: str) -> RolloutState:
    """Versions that learned from a retracted batch leave service at once: a tainted canary is rolled
    back, a tainted `previous` is forgotten (a rollback must never bring one back), and a tainted
    champion hands all traffic to `replacement` (when there is none, it keeps serving: a service with
    no model answers nobody)."""
    canary = None if state.canary in tainted else state.canary
    champion = replacement if state.champion in tainted and replacement else state.champion
    previous = None if state.previous in tainted or state.previous == champion else state.previous
    if canary == champion:
        canary = None  # the canary was the clean replacement: it is the champion now
    if (champion, canary, previous) == (state.champion, state.canary, state.previous):
        return state
    changes: dict[str, Any] = {"champion": champion, "canary": canary, "previous": previous}
    if canary != state.canary:
        changes.update(step=0, evidence=())
    return _changed(state, "withdrawn", reason, **changes)


class RolloutStore:
    """Reads and writes the rollout state on the registered model `model_name`."""

    def __init__(self, client: "MlflowClient", model_name: str) -> None:
        self.client, self.model_name = client, model_name

    def read(self) -> RolloutState:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException:
            return RolloutState()  # nothing registered yet
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        tag = json.loads(model.tags.get(ROLLOUT_TAG) or "{}")
        canary = aliases.get(CANARY)
        tracked = canary is not None and tag.get("canary") == canary  # an alias moved by hand restarts at step 0
        return RolloutState(
            champion=aliases.get(CHAMPION),
            canary=canary if canary != aliases.get(CHAMPION) else None,
            previous=aliases.get(PREVIOUS),
            steps=tuple(tag.get("steps") or DEFAULT_STEPS),
            step=int(tag.get("step", 0)) if tracked else 0,
            # A promoted canary's evidence stays with the state until the next canary starts.
            evidence=tuple(tag.get("evidence", ())) if tracked or (canary is None and tag.get("canary") is None) else (),
            event=tag.get("event", ""),
            reason=tag.get("reason", ""),
            changed_at=float(tag.get("changed_at", 0.0)),
            history=tuple(tag.get("history", ())),
        )

    def write(self, old: RolloutState, new: RolloutState) -> None:
        """Traffic leaves a canary before anything else changes and reaches a new one last; a new
        champion is set before the canary alias (the same version) goes."""
        client, name = self.client, self.model_name
        if old.canary and old.canary != new.canary and new.champion != old.canary:
            client.delete_registered_model_alias(name, CANARY)  # rolled back or replaced: no traffic from now on
        if new.previous != old.previous:  # before the champion moves: a rollback target is always there
            if new.previous:
                client.set_registered_model_alias(name, PREVIOUS, new.previous)
            else:
                client.delete_registered_model_alias(name, PREVIOUS)
        if new.champion and new.champion != old.champion:
            client.set_registered_model_alias(name, CHAMPION, new.champion)
            if old.canary == new.champion:
                client.delete_registered_model_alias(name, CANARY)
        client.set_registered_model_tag(name, ROLLOUT_TAG, new.to_tag())
        if new.canary and new.canary != old.canary:
            client.set_registered_model_alias(name, CANARY, new.canary)
        if new.canary:  # the canary's tag follows its share
            client.set_model_version_tag(name, new.canary, "rollout", f"canary at {new.canary_percent}% ({new.event}: {new.reason})"[:4900])
        if new.champion and new.champion != old.champion:  # the champion's tag says how it got there
            client.set_model_version_tag(name, new.champion, "rollout", f"champion ({new.event}: {new.reason})"[:4900])
        # A canary rolled back or replaced, a champion withdrawn (one replaced by promotion is `previous`).
        for gone in {old.canary, old.champion} - {None, new.canary, new.champion, new.previous}:
            client.set_model_version_tag(name, str(gone), "rollout", f"{new.event}: {new.reason}"[:4900])
