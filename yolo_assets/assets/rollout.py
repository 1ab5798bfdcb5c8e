"""`model_rollout`: the gray release, one materialisation per change (the asset's history is the rollout log).

It runs in the run of every registration (declarative automation) and after fresh batches were scored
by a canary (`rollout_sensor`), and acts on the evidence since its state last changed:
  - each fresh batch scored by both champion and canary -> one step further when the canary holds,
    champion after the last step; rolled back at once (traffic 0, alias removed, alert) when it regresses;
  - then a registered version that passed the offline `promotion_gate` and was never offered -> canary
    at the first of `rollout_steps` (the first model, and `rollout_steps: [100]`, are promoted at once).
A person does the same from the UI (run config `action: promote | rollback`, `reason`) or the CLI
(`yolo-assets rollout promote | rollback --reason TEXT`). The state itself is on the registered model
in MLflow (yolo_assets/release/rollout.py), which the detection service reads.
"""

import json
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg

from resources.alerts import AlertNotifier
from resources.artifact_store import ArtifactStore
from resources.mlflow_tracking import MLflowResource
from resources.model_policy import DEMOTE, ModelPolicy
from yolo_assets.assets.fresh import HOLDS, REGRESSES, fresh_batch_evaluation
from yolo_assets.assets.keys import FRESH_BATCH_EVALUATION, MODEL_ROLLOUT, REGISTERED_MODEL, identity
from yolo_assets.assets.materializations import latest_materialization, metadata_value
from yolo_assets.assets.registry import registered_model
from yolo_assets.assets.retractions import current_retractions
from yolo_assets.core.hashing import hash_json
from yolo_assets.data.retractions import retracted_batches_of
from yolo_assets.release.rollout import ROLLOUT_TAG, RolloutState, RolloutStore, check_steps, hold, offer, promote, roll_back, withdraw

AC = dg.AutomationCondition
# In the same run as every registration; fresh-batch evidence is `rollout_sensor`'s (sensors/rollout.py).
ROLLOUT_ON_REGISTRATION = (AC.any_deps_match(AC.will_be_requested()) & ~AC.in_progress()).with_label("a registration")

# How many recent fresh-batch scorings are read for evidence: far more than batches land between two runs.
EVIDENCE_WINDOW = 200


class RolloutConfig(dg.Config):
    action: Literal["auto", "promote", "rollback"] = "auto"
    """`auto`: act on the evidence; `promote`: the canary becomes champion now; `rollback`: the canary gets no more traffic."""
    reason: str = ""
    """Why a person promoted or rolled back (required for rollback); kept in the state and on the MLflow version."""


def offered_version(instance: dg.DagsterInstance, mlflow: MLflowResource, state: RolloutState) -> str | None:
    """The latest registered version, when it passed the offline gate and the rollout has never seen it."""
    latest = latest_materialization(instance, REGISTERED_MODEL)
    version = metadata_value(latest, "model_version")
    if version is None or not metadata_value(latest, "promotion_gate_passed", False):
        return None
    version = str(version)
    if version in (state.champion, state.canary, state.previous):
        return None
    tags = mlflow.client().get_model_version(mlflow.model_name, version).tags
    return None if "rollout" in tags else version


def fresh_evidence(instance: dg.DagsterInstance, state: RolloutState) -> Iterator[tuple[str, str, str]]:
    """(batch@version, verdict, reasons) of the fresh batches scored by exactly this champion and
    canary and not yet counted, oldest first."""
    records = instance.fetch_materializations(FRESH_BATCH_EVALUATION, limit=EVIDENCE_WINDOW).records
    for record in reversed(records):
        scored = record.asset_materialization
        verdict = metadata_value(scored, "canary_verdict", "")
        if verdict not in (HOLDS, REGRESSES) or scored is None:
            continue
        if metadata_value(scored, "canary_version") != state.canary or metadata_value(scored, "champion_version") != state.champion:
            continue
        evidence = f"{scored.partition}@{str(metadata_value(scored, 'batch_version'))[:12]}"
        if evidence not in state.evidence:
            yield evidence, verdict, "; ".join(metadata_value(scored, "canary_verdict_reasons", []) or [])


def next_state(
    instance: dg.DagsterInstance, mlflow: MLflowResource, state: RolloutState, config: RolloutConfig, steps: tuple[int, ...]
) -> RolloutState:
    if config.action != "auto":
        if state.canary is None:
            raise dg.Failure(f"there is no canary to {config.action} (champion: {state.champion})", allow_retries=False)
        if config.action == "rollback":
            if not config.reason.strip():
                raise dg.Failure("a rollback needs a reason (run config `reason`, or --reason)", allow_retries=False)
            return roll_back(state, f"by hand: {config.reason}")
        return promote(state, state.canary, f"promoted by hand{': ' + config.reason if config.reason else ''}")
    # The running canary's evidence first (it was scored before any newer model existed), then a new offer.
    for evidence, verdict, reasons in fresh_evidence(instance, state) if state.canary else ():
        if verdict == REGRESSES:
            state = roll_back(state, f"regressed on fresh batch {evidence}: {reasons}")
            break
        state = hold(state, evidence)
        if state.canary is None:
            break  # promoted
    version = offered_version(instance, mlflow, state)
    return offer(state, version, steps) if version is not None else state


def without_retracted_models(
    instance: dg.DagsterInstance, mlflow: MLflowResource, store: ArtifactStore, state: RolloutState
) -> tuple[RolloutState, str]:
    """`retraction_policy: demote`: the state with every live version that learned from a retracted batch
    withdrawn (a champion in favour of the newest version that never did), and a warning when a tainted
    champion has no such replacement and keeps serving."""
    records = current_retractions(instance, store).records
    if not records:
        return state, ""
    versions = mlflow.client().search_model_versions(f"name='{mlflow.model_name}'")
    learned = {str(v.version): retracted_batches_of(json.loads(v.tags.get("batches", "{}")), records) for v in versions}
    live_tainted = {v: learned[v] for v in (state.champion, state.canary, state.previous) if v and learned.get(v)}
    if not live_tainted:
        return state, ""
    clean = [
        int(v.version) for v in versions
        if not learned[str(v.version)] and v.tags.get("promotion_gate") == "passed"
        and not v.tags.get(ROLLOUT_TAG, "").startswith(("rolled_back", "withdrawn"))
    ]
    replacement = str(max(clean)) if clean else None
    learned_text = "; ".join(f"version {v} learned from retracted {', '.join(batches)}" for v, batches in sorted(live_tainted.items()))
    reason = f"retraction_policy demote: {learned_text}" + (
        f"; version {replacement}, the newest that never saw a retracted batch, is champion" if state.champion in live_tainted and replacement else ""
    )
    warning = (
        f"champion {state.champion} learned from retracted {', '.join(live_tainted[state.champion])} and no version that never saw a "
        "retracted batch has passed its gate: it keeps serving until a retrained model replaces it"
        if state.champion in live_tainted and not replacement else ""
    )
    return withdraw(state, set(live_tainted), replacement, reason), warning


def rollout_alert(state: RolloutState, run_link: str) -> dict[str, Any]:
    text = f"yolo-assets: {state.reason}. Champion {state.champion} takes all traffic. {run_link}"
    return {"text": text, "event": state.event, "champion": state.champion, "reason": state.reason}


@dg.asset(
    **identity(MODEL_ROLLOUT),
    deps=[registered_model, fresh_batch_evaluation],
    output_required=False,  # no change, no materialisation: the asset's history is the rollout log
    automation_condition=ROLLOUT_ON_REGISTRATION,
    pool="model_rollout",  # one writer of the rollout state at a time (limit 1, as every pool here)
    description="Gray release: canary at 10/50/100 % on fresh-batch evidence, then champion; rolled back when it regresses.",
)
def model_rollout(
    context: dg.AssetExecutionContext,
    config: RolloutConfig,
    mlflow: MLflowResource,
    model_policy: ModelPolicy,
    alert_notifier: AlertNotifier,
    artifact_store: ArtifactStore,
) -> Iterator[dg.MaterializeResult]:
    steps = check_steps(model_policy.rollout_steps)
    store = RolloutStore(mlflow.client(), mlflow.model_name)
    old = store.read()
    new = next_state(context.instance, mlflow, old, config, steps)
    if model_policy.retraction_policy == DEMOTE and config.action == "auto":
        new, warning = without_retracted_models(context.instance, mlflow, artifact_store, new)
        if warning:
            context.log.warning(warning)
    if new == old:
        context.log.info(f"rollout unchanged: champion {old.champion}, canary {old.canary} at {old.canary_percent}%")
        return
    store.write(old, new)
    context.log.info(f"rollout: {new.event}: {new.reason}")
    if new.event in ("rolled_back", "withdrawn"):
        alert_notifier.send(rollout_alert(new, alert_notifier.run_link(context.run.run_id)), context.log)
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(hash_json(new.to_tag())),
        metadata={
            "event": new.event,
            "reason": new.reason,
            "champion": new.champion or "",
            "canary": new.canary or "",
            "canary_percent": new.canary_percent,
            "previous": new.previous or "",
            "step": f"{new.step + 1}/{len(new.steps)}" if new.canary else "",
            "rollout_steps": dg.MetadataValue.json(list(new.steps)),
            "evidence": dg.MetadataValue.json(list(new.evidence)),
            "model_name": mlflow.model_name,
            # When the change began: readers of the registry may see it before this event is stored.
            "changed_at": dg.MetadataValue.timestamp(new.changed_at),
        },
    )
