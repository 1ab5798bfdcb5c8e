"""`yolo-assets`: synthesise data, tick the sensors, materialise assets, show status, run the demo."""

import argparse
import difflib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resources.mlflow_tracking import MLFLOW_ENVIRONMENT
from yolo_assets.core.home import HOME_ENV_VAR, dagster_home, ensure_home, home_dir, landing_dir, mlflow_dir, mlflow_tracking_uri
from yolo_assets.core.processes import restore_interrupts
from yolo_assets.core.settings_env import KNOWN_VARIABLES, unknown_variable_warnings
from yolo_assets.ops.tables import format_table

if TYPE_CHECKING:
    import dagster as dg

    from yolo_assets.history.recovery import RetryPlan


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


def _open_home(args: argparse.Namespace) -> Path:
    """The home the command works on; a missing or empty one is initialised (as `init` and `make demo`
    do), with a note on stderr so that a mistyped path does not go unnoticed."""
    home = Path(args.home).expanduser().resolve() if args.home else home_dir()
    source = "--home" if args.home else HOME_ENV_VAR
    if home.exists() and not home.is_dir():
        raise UserError(f"{source} {home} is a file, not a folder: name a folder (a missing one is created)")
    fresh = not (dagster_home(home) / "dagster.yaml").exists()
    try:
        ensure_home(home)
    except OSError as error:
        raise UserError(f"cannot create the home {home} ({source}): {error.strerror or error}") from error
    if fresh:
        print(f"yolo-assets: initialising a new home at {home} (set {HOME_ENV_VAR} or pass --home for another)", file=sys.stderr)
    os.environ[HOME_ENV_VAR] = str(home)  # for the processes the CLI starts (dagster dev, run workers)
    return home


def _load_run_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read run config {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise UserError(f"run config {path} must be a mapping (ops: {{asset: {{config: ...}}}})")
    return loaded


def check_run_config(defs: "dg.Definitions", run_config: Mapping[str, Any], path: str) -> None:
    """Refuse, before any run starts, a run config that a run would refuse: Dagster checks a run's
    config only as that run starts, and `tick` applies it to every run it starts (after an ingest
    already ran, a typo would stop the tick half-way)."""
    if not run_config:
        return
    import dagster as dg

    from yolo_assets.ops.runs import with_console_logger

    job = defs.resolve_implicit_global_asset_job_def()
    ops = run_config.get("ops") or {}
    if not isinstance(ops, Mapping):
        raise UserError(f"run config {path}: ops must be a mapping (ops: {{ASSET: {{config: ...}}}})")
    known = sorted(job.graph.node_names())
    unknown = sorted(set(ops) - set(known))
    if unknown:
        raise UserError(f"run config {path}: unknown op {', '.join(map(str, unknown))} under ops (known: {', '.join(known)})")
    # A run checks the config of its own ops and ignores the rest: check the named ops together with
    # every op that runs without config (their resources and executor are configured the same way).
    selection = [
        node.name for node in job.graph.nodes
        if node.name in ops or not (node.definition.config_schema and node.definition.config_schema.as_field().is_required)
    ]
    try:  # checked as the runs will see it
        dg.validate_run_config(job.get_subset(op_selection=selection), with_console_logger(run_config))
    except dg.DagsterInvalidConfigError as error:
        raise UserError(f"run config {path}: {config_problem(error)}") from None


def config_problem(error: "dg.DagsterInvalidConfigError") -> str:
    """Dagster's first config error in one line, with the likely fix for a misspelt or misplaced field."""
    first = error.errors[0]
    text = " ".join(first.message.split())
    text = re.sub(r"at path root:([\w:\[\]]+)", lambda m: "at " + m.group(1).replace(":", "."), text)
    text = re.sub(r' of type "<class \'\w+\'>"', "", text)
    text, _, expected = text.partition(' Expected: "')
    text = text.split(" You must provide")[0].rstrip(".")
    if first.reason.name in ("FIELD_NOT_DEFINED", "FIELDS_NOT_DEFINED"):
        fields, parents = expected_fields(expected)
        names = getattr(first.error_data, "field_names", None) or [getattr(first.error_data, "field_name", "")]
        fixes = []
        for name in names:
            if name in parents:
                fixes.append(f"put {name} under {parents[name]}:")
            elif close := difflib.get_close_matches(name, fields, n=1):
                fixes.append(f"did you mean {close[0]}?")
        text += f": {'; '.join(fixes) + ' ' if fixes else ''}(fields there: {', '.join(fields) or 'none'})"
    if len(error.errors) > 1:
        text += f" (and {len(error.errors) - 1} more)"
    return text


def expected_fields(expected: str) -> tuple[list[str], dict[str, str]]:
    """From Dagster's description of a config type (`{ a?: Int b: { c: String } }`, or `['a', 'b']`):
    its field names, and for each field one level further down, the field it lies under."""
    if expected.startswith("["):
        return re.findall(r"'(\w+)'", expected), {}
    depth, fields = 0, []
    parents: dict[str, str] = {}
    for token in re.finditer(r"[{}]|(\w+)\??:", expected):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
        elif depth == 1:
            fields.append(token.group(1))
        elif depth == 2 and fields:
            parents.setdefault(token.group(1), fields[-1])
    return fields, parents


def _context(args: argparse.Namespace) -> "tuple[Path, dg.Definitions, dg.DagsterInstance]":
    home = _open_home(args)
    import dagster as dg  # imported late: `synth` and errors stay fast

    from resources.settings import DeploymentSettings
    from yolo_assets.definitions import build_definitions

    try:
        instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    except dg.DagsterInvalidConfigError as error:
        missing = re.findall(r'environment variable "([A-Z_]+)"', str(error))
        hint = f"{', '.join(sorted(set(missing)))} not set" if missing else str(error).splitlines()[0]
        raise UserError(f"the Dagster instance of {home} cannot be opened: {hint} "
                        f"(a stack home: source {home}/stack/stack.env)") from error
    return home, build_definitions(home, DeploymentSettings.from_environment()), instance


def cmd_synth(args: argparse.Namespace) -> int:
    from yolo_assets.data.synth import DEFAULT_CLASSES, parse_frame_size, write_batch

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else DEFAULT_CLASSES
    try:
        frame_size = parse_frame_size(args.frame_size) if args.frame_size else None
        out = write_batch(Path(args.out), args.images, args.seed, classes, frame_size=frame_size)
    except ValueError as error:
        raise UserError(str(error)) from error
    print(f"wrote {args.images} images{f' of {args.frame_size}' if frame_size else ''} to {out}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    home = _open_home(args)
    print(f"home ready at {home} (landing zone: {landing_dir(home)})")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    from yolo_assets.ops.runs import resolved_resource

    _, defs, _ = _context(args)
    try:
        with resolved_resource(defs, "landing_zone") as landing_zone:
            count = landing_zone.upload_batch(Path(args.folder), args.batch)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from error
    print(f"landed {args.batch}: {count} files, then its marker {args.batch}.ready")
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from yolo_assets.ops import stack

    home = _open_home(args)
    if args.action == "up":
        try:
            settings = {name: value for name, value in os.environ.items() if name in KNOWN_VARIABLES}
            state = stack.up(home, with_dagster=not args.no_dagster, settings=settings)
        except ValueError as error:
            raise UserError(str(error)) from error
        env_file = stack.environment_file(home, state)
        print(format_table(["service", "state", "where"], [list(row) for row in stack.status(home)]))
        print(f"\nUse it from a shell: source {env_file}   (then: yolo-assets upload DIR --batch NAME)")
    elif args.action == "down":
        stopped = stack.down(home)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    else:
        rows = stack.status(home)
        print(format_table(["service", "state", "where"], [list(row) for row in rows]) if rows else "no stack in this home")
    return 0


def cmd_tick(args: argparse.Namespace) -> int:
    from yolo_assets.ops.runs import DaemonIsScheduling, print_outcomes, tick

    home, defs, instance = _context(args)
    run_config = _load_run_config(args.config)
    check_run_config(defs, run_config, args.config)
    try:
        outcomes = tick(defs, instance, home, run_config, automation=not args.no_automation)
    except DaemonIsScheduling as daemon:
        # Not a failure: what landed is handled, by the daemon (a cron'd tick next to a daemon stays quiet).
        print(daemon)
        return 0
    if not outcomes:
        print("no new batches: nothing to run")
    return 0 if print_outcomes(outcomes) else 1


def cmd_materialize(args: argparse.Namespace) -> int:
    import dagster as dg

    from yolo_assets.ops.runs import execute, print_outcomes

    _, defs, instance = _context(args)
    graph = defs.resolve_asset_graph()
    keys = [dg.AssetKey.from_user_string(name) for name in args.assets]
    unknown = [k.to_user_string() for k in keys if k not in graph.materializable_asset_keys]
    if unknown:
        known = ", ".join(sorted(k.to_user_string() for k in graph.materializable_asset_keys))
        raise UserError(f"unknown asset {', '.join(unknown)} (known: {known})")
    run_config = _load_run_config(args.config)
    check_run_config(defs, run_config, args.config)
    planned: list[tuple[dg.AssetKey, str]] = []  # every partition is checked before the first run starts
    for key in keys:
        partitions_def = graph.get(key).partitions_def
        if partitions_def is None:
            continue
        known_partitions = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
        partitions = args.partition or known_partitions
        missing = sorted(set(partitions) - set(known_partitions))
        if missing:
            raise UserError(f"unknown partition {', '.join(missing)} of {key.to_user_string()}")
        planned.extend((key, partition) for partition in partitions)
    outcomes = [
        execute(defs, instance, [key], partition, run_config=run_config, description=f"{key.to_user_string()}[{partition}]")
        for key, partition in planned
    ]
    unpartitioned = [k for k in keys if graph.get(k).partitions_def is None]
    if unpartitioned:
        names = ",".join(k.to_user_string() for k in unpartitioned)
        outcomes.append(execute(defs, instance, unpartitioned, run_config=run_config, description=names))
    return 0 if print_outcomes(outcomes) else 1


def format_status_table(rows: list[dict[str, Any]]) -> str:
    headers = ["asset", "data version", "code", "materialized (UTC)", "partitions", "stale", "cache hit", "images"]
    return format_table(headers, [
        [
            row["key"],
            (row["data_version"] or "-")[:12],
            row["code_version"] or "-",
            (row["time"] or "-")[:19],
            "-" if row["partitions"] is None else str(row["partitions"]),
            "yes" if row["stale"] else "no",
            str(row["metadata"].get("cache_hit", "-")),
            str(row["metadata"].get("num_images", "-")),
        ]
        for row in rows
    ])


def unique_prefix_match(candidates: Iterable[str], prefix: str, what: str) -> str:
    """The one candidate that `prefix` (the whole value or a unique start of it) names."""
    matches = [c for c in candidates if c.startswith(prefix)]
    if not matches:
        raise UserError(f"no {what} starts with {prefix!r}")
    if len(matches) > 1:
        raise UserError(f"{len(matches)} {what}s start with {prefix!r} ({', '.join(m[:12] for m in matches[:3])}...): give more of it")
    return matches[0]


def resolve_version(store: Any, asset: "dg.AssetKey", prefix: str) -> str:
    return unique_prefix_match(store.versions(asset), prefix, f"stored {asset.to_user_string()} version")


def resolve_run_id(instance: "dg.DagsterInstance", prefix: str) -> str:
    """A run id, or a unique start of one (failure alerts print the first 8 characters)."""
    if instance.has_run(prefix):
        return prefix
    # Dagster has no run-id prefix filter: the ids alone are read, newest first.
    return unique_prefix_match(instance.get_run_ids(), prefix, "run id in this instance")


def cmd_diff(args: argparse.Namespace) -> int:
    from yolo_assets.assets.dataset import read_dataset_manifest
    from yolo_assets.assets.keys import PROCESSED_IMAGES
    from yolo_assets.data.dataset_manifest import dataset_diff
    from yolo_assets.ops.runs import resolved_resource

    _, defs, _ = _context(args)
    with resolved_resource(defs, "artifact_store") as store:
        old, new = (resolve_version(store, PROCESSED_IMAGES, prefix) for prefix in (args.old, args.new))
        diff = dataset_diff(read_dataset_manifest(store, old), read_dataset_manifest(store, new))
    if args.json:
        print(json.dumps({"old": old, "new": new, **diff}, indent=2))
        return 0
    print(f"processed_images {old[:12]} -> {new[:12]}: +{diff['added']} added, -{diff['removed']} removed, {diff['relabeled']} relabeled")
    rows = [[name, str(c["added"]), str(c["removed"]), str(c["relabeled"])] for name, c in sorted(diff["images_per_class"].items())]
    print(format_table(["class", "images added", "removed", "relabeled"], rows))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from yolo_assets.history import lineage
    from yolo_assets.ops.runs import resolved_resource

    _, defs, instance = _context(args)
    try:
        if args.model:
            with resolved_resource(defs, "mlflow") as mlflow:
                result = lineage.model_lineage(instance, mlflow, args.model)
        elif args.asset:
            if args.asset not in {k.to_user_string() for k in defs.resolve_asset_graph().materializable_asset_keys}:
                raise UserError(f"unknown asset {args.asset}")
            result = lineage.asset_lineage(instance, args.asset)
        elif args.run_id:
            result = lineage.run_lineage(instance, resolve_run_id(instance, args.run_id), defs.resolve_asset_graph())
        else:
            raise UserError("give a RUN_ID, --model NAME/VERSION (or NAME@ALIAS), or --asset KEY")
    except (LookupError, ValueError) as error:
        raise UserError(str(error)) from error
    except Exception as error:  # MLflow: unknown model, version or alias (RestException from a server)
        if any(cls.__name__ == "MlflowException" for cls in type(error).__mro__):
            raise UserError(str(error).splitlines()[0]) from error
        raise
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif "failed_steps" in result:
        print("\n".join(lineage.summary_lines(result)))
    else:
        print(yaml.safe_dump(result, sort_keys=False, default_flow_style=False).rstrip())
    return 0


def cmd_retract(args: argparse.Namespace) -> int:
    """`retract BATCH --reason TEXT` / `unretract BATCH`: one batch_retractions run, then (unless
    --no-rebuild) the processed_images version that leaves the batch out or takes it back."""
    from yolo_assets.assets.ingest import BATCH_PARTITIONS
    from yolo_assets.assets.keys import BATCH_RETRACTIONS, PROCESSED_IMAGES
    from yolo_assets.assets.retractions import current_retractions
    from yolo_assets.data.retractions import RetractionError, checked_reason, record_of, unretract
    from yolo_assets.ops.runs import execute, print_outcomes, resolved_resource

    _, defs, instance = _context(args)
    unretracting = args.command == "unretract"
    if args.batch not in instance.get_dynamic_partitions(BATCH_PARTITIONS):
        raise UserError(f"unknown batch {args.batch} (not a labeled_batch partition)")
    with resolved_resource(defs, "artifact_store") as store:
        records = current_retractions(instance, store).records
    # The run applies the same rules to the state it reads; checked here too, a mistake starts no run.
    try:
        if unretracting:
            unretract(records, args.batch)
        else:
            checked_reason(args.reason)
    except RetractionError as error:
        raise UserError(str(error)) from None
    previous = record_of(records, args.batch)
    if previous is not None and not unretracting:
        print(f"batch {args.batch} was already retracted at {previous['retracted_at']} ({previous['reason']}): "
              "the new reason replaces it, the earlier one is kept in the record's history")
    config = {"batch": args.batch, "unretract": True} if unretracting else {"batch": args.batch, "reason": args.reason}
    run_config = {"ops": {BATCH_RETRACTIONS.to_user_string(): {"config": config}}}
    outcomes = [execute(defs, instance, [BATCH_RETRACTIONS], run_config=run_config, description=f"{args.command} {args.batch}")]
    if outcomes[0].success and not args.no_rebuild:
        outcomes.append(execute(defs, instance, [PROCESSED_IMAGES], description=PROCESSED_IMAGES.to_user_string()))
    return 0 if print_outcomes(outcomes) else 1


def cmd_recover(args: argparse.Namespace) -> int:
    from yolo_assets.history.recovery import recover_dead_runs

    _, _, instance = _context(args)
    recovered = recover_dead_runs(instance)
    for run_id in recovered:
        print(f"run {run_id}: its process is gone; marked failed, pool slots freed")
    if not recovered:
        print("no dead runs")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from yolo_assets.ops.demo import run_demo

    home, defs, instance = _context(args)
    return run_demo(home, defs, instance, args.images)


def cmd_status(args: argparse.Namespace) -> int:
    from yolo_assets.history.recovery import pending_retries
    from yolo_assets.history.status import asset_status
    from yolo_assets.ops.runs import resolved_resource

    _, defs, instance = _context(args)
    with resolved_resource(defs, "artifact_store") as store, resolved_resource(defs, "run_recovery") as recovery:
        rows = asset_status(defs, instance, store)
        waiting = [retry_summary(plan) for plan in pending_retries(instance, recovery)]
    if args.json:
        print(json.dumps({"assets": rows, "waiting_for_retry": waiting}, indent=2))
        return 0
    print(format_status_table(rows))
    for entry in waiting:
        print(f"run {entry['run_id'][:8]} ({', '.join(entry['assets'])}{' [' + entry['partition'] + ']' if entry['partition'] else ''}): {entry['plan']}")
    return 0


def retry_summary(plan: "RetryPlan") -> dict[str, Any]:
    return {
        "run_id": plan.run.run_id,
        "assets": sorted(key.to_user_string() for key in plan.run.asset_selection or ()),
        "partition": plan.run.tags.get("dagster/partition"),
        "attempt": plan.attempt,
        "next_at": plan.next_at,
        "plan": plan.describe(),
    }


def serving_target(args: argparse.Namespace) -> tuple[str, str, Path]:
    """(tracking URI, model name, model cache folder): the deployment's tracking server when
    YOLO_ASSETS_MLFLOW_TRACKING_URI is set, else the home's embedded store."""
    home = _open_home(args)
    tracking_uri = os.environ.get("YOLO_ASSETS_MLFLOW_TRACKING_URI") or mlflow_tracking_uri(home)
    model_name = args.model or os.environ.get("YOLO_ASSETS_MODEL_NAME") or "yolo-defect-detector"
    return tracking_uri, model_name, home / "cache" / "serve"


def cmd_serve(args: argparse.Namespace) -> int:
    """The detection service in the foreground: models follow the registry's rollout state."""
    import uvicorn

    from resources.mlflow_tracking import MLflowResource
    from yolo_assets.release.rollout import RolloutStore
    from yolo_assets.serving.app import ServeLimits, create_app, refresh_seconds
    from yolo_assets.serving.models import ModelPool, registry_loader

    tracking_uri, model_name, cache = serving_target(args)
    store = RolloutStore(MLflowResource(tracking_uri=tracking_uri, model_name=model_name).client(), model_name)
    pool = ModelPool(store.read, registry_loader(tracking_uri, model_name, cache), refresh_seconds())
    limits = ServeLimits(max_bytes=args.max_bytes, max_pixels=args.max_pixels, conf=args.conf)
    print(f"serving {model_name} on http://{args.host}:{args.port} (registry refresh every {pool.refresh_s:g}s)", flush=True)
    pool.start()
    try:
        uvicorn.run(create_app(pool, model_name, limits), host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        pool.stop()
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    """`rollout status [--json]`, or `promote` / `rollback --reason` through a model_rollout run."""
    from yolo_assets.assets.keys import MODEL_ROLLOUT
    from yolo_assets.ops.runs import execute, print_outcomes, resolved_resource
    from yolo_assets.release.rollout import RolloutStore

    _, defs, instance = _context(args)
    if args.action != "status":
        if args.action == "rollback" and not (args.reason or "").strip():
            raise UserError("a rollback needs a reason: --reason TEXT")
        config = {"action": args.action, "reason": args.reason or ""}
        outcome = execute(defs, instance, [MODEL_ROLLOUT], run_config={"ops": {"model_rollout": {"config": config}}},
                          description=f"rollout {args.action}")
        if not print_outcomes([outcome]):
            return 1
    with resolved_resource(defs, "mlflow") as mlflow:
        state = RolloutStore(mlflow.client(), mlflow.model_name).read()
    if args.json:
        print(json.dumps(state.summary(), indent=2))
    else:
        print(state.describe())
    return 0


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    home = _open_home(args)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "ui", "--backend-store-uri", mlflow_tracking_uri(home),
               "--default-artifact-root", str(mlflow_dir(home) / "artifacts"), "--host", args.host, "--port", str(args.port)]
    print(" ".join(command))
    os.execve(command[0], command, {**os.environ, **MLFLOW_ENVIRONMENT})
    return 0  # not reached


def cmd_ui(args: argparse.Namespace) -> int:
    home = _open_home(args)
    dagster = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "dev", "-m", "yolo_assets.definitions", "-h", args.host, "-p", str(args.port)]
    print(f"DAGSTER_HOME={dagster_home(home)} {' '.join(command)}")
    os.execv(command[0], command)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-assets", description=__doc__)
    parser.add_argument("--home", help=f"home folder (default: ${HOME_ENV_VAR} or ./.yolo-assets)")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic factory-defect batch in YOLO format")
    synth.add_argument("--out", required=True, help="the batch folder to write")
    synth.add_argument("--images", type=int, default=100, help="images in the batch (default %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="the same seed writes the same batch (default %(default)s)")
    synth.add_argument("--classes", help="comma-separated defect classes, any of scratch,spot,crack,dent (default: scratch,spot,crack)")
    synth.add_argument("--frame-size", help="WIDTHxHEIGHT of every image, e.g. 1920x1080 for camera-size frames "
                       "(default: 320-448 x 256-352 pictures)")
    synth.set_defaults(func=cmd_synth)

    sub.add_parser("init", help="create the home folder").set_defaults(func=cmd_init)

    stack = sub.add_parser("stack", help="start/stop SeaweedFS (S3), PostgreSQL, the MLflow server and Dagster on 127.0.0.1")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--no-dagster", action="store_true", help="only the services, not dagster-webserver and dagster-daemon")
    stack.set_defaults(func=cmd_stack)

    upload = sub.add_parser("upload", help="land a local batch folder in the landing zone (local or S3), its BATCH.ready marker last")
    upload.add_argument("folder")
    upload.add_argument("--batch", required=True, help="batch name (letters, digits, '.', '_', '-')")
    upload.set_defaults(func=cmd_upload)

    tick_parser = sub.add_parser("tick", help="evaluate the sensors once and run what they request")
    tick_parser.add_argument("--config", help="run config YAML applied to the runs")
    tick_parser.add_argument("--no-automation", action="store_true", help="run the sensors only (ingest), not the automation")
    tick_parser.set_defaults(func=cmd_tick)

    mat = sub.add_parser("materialize", help="materialise assets with the current config")
    mat.add_argument("assets", nargs="+")
    mat.add_argument("--partition", action="append", help="partition of a partitioned asset (repeatable; default all)")
    mat.add_argument("--config", help="run config YAML")
    mat.set_defaults(func=cmd_materialize)

    status = sub.add_parser("status", help="latest version, code version and staleness of every asset")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    diff = sub.add_parser("diff", help="images added / removed / relabeled between two processed_images versions")
    diff.add_argument("old", help="data version (or a unique prefix)")
    diff.add_argument("new", help="data version (or a unique prefix)")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(func=cmd_diff)

    lineage = sub.add_parser("lineage", help="why a run failed / what made a model / where an asset came from")
    lineage.add_argument("run_id", nargs="?", help="a Dagster run id, or a unique start of one (alerts print 8 characters)")
    lineage.add_argument("--model", help="NAME/VERSION or NAME@ALIAS of a registered model")
    lineage.add_argument("--asset", help="an asset key: its latest materialisation")
    lineage.add_argument("--json", action="store_true")
    lineage.set_defaults(func=cmd_lineage)

    retract = sub.add_parser("retract", help="take a batch out of every later dataset version, with a reason")
    retract.add_argument("batch", help="the batch (a labeled_batch partition)")
    retract.add_argument("--reason", required=True, help="why (shown in processed_images and model lineage)")
    unretract = sub.add_parser("unretract", help="put a retracted batch back into the next dataset version")
    unretract.add_argument("batch", help="the retracted batch")
    for parser_ in (retract, unretract):
        parser_.add_argument("--no-rebuild", action="store_true", help="record only; the next processed_images build applies it")
        parser_.set_defaults(func=cmd_retract)

    sub.add_parser("recover", help="mark runs whose process died as failed and free their pool slots").set_defaults(func=cmd_recover)

    demo = sub.add_parser("demo", help="the whole product on synthetic data: ingest, train, evaluate, register, retrain")
    demo.add_argument("--images", type=int, default=120, help="images per synthetic batch")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="the HTTP detection service over the registry's champion and canary")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--model", help="registered model name (default: YOLO_ASSETS_MODEL_NAME or yolo-defect-detector)")
    serve.add_argument("--max-bytes", type=int, default=20 * 1024 * 1024, help="largest request body (default 20 MiB)")
    serve.add_argument("--max-pixels", type=int, default=50_000_000, help="decompression-bomb guard (default 50,000,000)")
    serve.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    serve.set_defaults(func=cmd_serve)

    rollout = sub.add_parser("rollout", help="the gray release: status, or promote / roll back the canary by hand")
    rollout.add_argument("action", choices=["status", "promote", "rollback"])
    rollout.add_argument("--reason", help="why (required for rollback)")
    rollout.add_argument("--json", action="store_true")
    rollout.set_defaults(func=cmd_rollout)

    mlflow_ui = sub.add_parser("mlflow-ui", help="start the MLflow UI on the home's tracking store")
    mlflow_ui.add_argument("--host", default="127.0.0.1")
    mlflow_ui.add_argument("--port", type=int, default=5000)
    mlflow_ui.set_defaults(func=cmd_mlflow_ui)

    ui = sub.add_parser("ui", help="start `dagster dev` on the home's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    restore_interrupts()
    args = build_parser().parse_args(argv)
    for warning in unknown_variable_warnings(os.environ):
        print(f"yolo-assets: warning: {warning}", file=sys.stderr)
    try:
        return args.func(args)
    except UserError as error:
        print(f"yolo-assets: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
