"""`yolo-assets`: synthesise data, tick the sensors, materialise assets, show status, run the demo."""

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from yolo_assets.home import HOME_ENV_VAR, dagster_home, ensure_home, home_dir, landing_dir


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


def _open_home(args: argparse.Namespace, create: bool = False) -> Path:
    home = Path(args.home).expanduser().resolve() if args.home else home_dir()
    if not create and not (dagster_home(home) / "dagster.yaml").exists():
        raise UserError(f"no yolo-assets home at {home} (set {HOME_ENV_VAR}, pass --home, or run `yolo-assets init`)")
    os.environ[HOME_ENV_VAR] = str(home)
    return ensure_home(home)


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


def _context(args: argparse.Namespace, create: bool = False):  # type: ignore[no-untyped-def]
    home = _open_home(args, create)
    import dagster as dg  # imported late: `synth` and errors stay fast

    from yolo_assets.definitions import build_definitions

    return home, build_definitions(home), dg.DagsterInstance.from_config(str(dagster_home(home)))


def _print_outcomes(outcomes: Sequence[Any]) -> bool:
    for outcome in outcomes:
        state = "SUCCESS" if outcome.success else f"FAILURE ({outcome.failure})"
        print(f"run {outcome.run_id} {outcome.description}: {state}")
    return all(outcome.success for outcome in outcomes)


def cmd_synth(args: argparse.Namespace) -> int:
    from yolo_assets.synth import write_batch

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        out = write_batch(Path(args.out), args.images, args.seed, *(classes and [classes] or []))
    except ValueError as error:
        raise UserError(str(error)) from error
    print(f"wrote {args.images} images to {out}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    home = _open_home(args, create=True)
    print(f"home ready at {home} (landing zone: {landing_dir(home)})")
    return 0


def cmd_tick(args: argparse.Namespace) -> int:
    from yolo_assets.runs import tick

    home, defs, instance = _context(args)
    outcomes = tick(defs, instance, home, _load_run_config(args.config))
    if not outcomes:
        print("no new batches: nothing to run")
    return 0 if _print_outcomes(outcomes) else 1


def cmd_materialize(args: argparse.Namespace) -> int:
    import dagster as dg

    from yolo_assets.runs import execute

    _, defs, instance = _context(args)
    graph = defs.resolve_asset_graph()
    keys = [dg.AssetKey.from_user_string(name) for name in args.assets]
    unknown = [k.to_user_string() for k in keys if k not in graph.materializable_asset_keys]
    if unknown:
        known = ", ".join(sorted(k.to_user_string() for k in graph.materializable_asset_keys))
        raise UserError(f"unknown asset {', '.join(unknown)} (known: {known})")
    run_config = _load_run_config(args.config)
    outcomes = []
    for key in [k for k in keys if graph.get(k).partitions_def is not None]:
        partitions_def = graph.get(key).partitions_def
        partitions = args.partition or partitions_def.get_partition_keys(dynamic_partitions_store=instance)
        missing = sorted(set(partitions) - set(partitions_def.get_partition_keys(dynamic_partitions_store=instance)))
        if missing:
            raise UserError(f"unknown partition {', '.join(missing)} of {key.to_user_string()}")
        for partition in partitions:
            outcomes.append(execute(defs, instance, [key], partition, run_config=run_config, description=f"{key.to_user_string()}[{partition}]"))
    unpartitioned = [k for k in keys if graph.get(k).partitions_def is None]
    if unpartitioned:
        names = ",".join(k.to_user_string() for k in unpartitioned)
        outcomes.append(execute(defs, instance, unpartitioned, run_config=run_config, description=names))
    return 0 if _print_outcomes(outcomes) else 1


def format_status_table(rows: list[dict[str, Any]]) -> str:
    headers = ["asset", "data version", "code", "materialized (UTC)", "partitions", "stale", "cache hit", "images"]
    table = [
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
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from yolo_assets.status import asset_status

    _, defs, instance = _context(args)
    rows = asset_status(defs, instance)
    print(json.dumps({"assets": rows}, indent=2) if args.json else format_status_table(rows))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from yolo_assets.runs import tick
    from yolo_assets.status import asset_status
    from yolo_assets.synth import write_batch

    started = time.perf_counter()
    home, defs, instance = _context(args, create=True)
    print(f"home: {home}")
    for index, (name, count) in enumerate((("batch_001", args.images), ("batch_002", args.images)), start=1):
        target = landing_dir(home) / name
        if not target.exists():
            write_batch(target, count, seed=index)
            print(f"landed {name}: {count} synthetic images")
    ok = _print_outcomes(tick(defs, instance, home))
    print()
    print(format_status_table(asset_status(defs, instance)))
    print(f"\ndemo finished in {time.perf_counter() - started:.1f}s")
    print(f"open the Dagster UI with: make ui   (or: {HOME_ENV_VAR}={home} yolo-assets ui)")
    return 0 if ok else 1


def cmd_ui(args: argparse.Namespace) -> int:
    home = _open_home(args, create=True)
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
    synth.add_argument("--out", required=True)
    synth.add_argument("--images", type=int, default=100)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--classes", help="comma-separated defect classes (scratch,spot,crack,dent)")
    synth.set_defaults(func=cmd_synth)

    sub.add_parser("init", help="create the home folder").set_defaults(func=cmd_init)

    tick_parser = sub.add_parser("tick", help="evaluate the sensors once and run what they request")
    tick_parser.add_argument("--config", help="run config YAML applied to the runs")
    tick_parser.set_defaults(func=cmd_tick)

    mat = sub.add_parser("materialize", help="materialise assets with the current config")
    mat.add_argument("assets", nargs="+")
    mat.add_argument("--partition", action="append", help="partition of a partitioned asset (repeatable; default all)")
    mat.add_argument("--config", help="run config YAML")
    mat.set_defaults(func=cmd_materialize)

    status = sub.add_parser("status", help="latest version, code version and staleness of every asset")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help="synthesise batches, ingest them through the sensor, print status")
    demo.add_argument("--images", type=int, default=120, help="images per synthetic batch")
    demo.set_defaults(func=cmd_demo)

    ui = sub.add_parser("ui", help="start `dagster dev` on the home's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:
        print(f"yolo-assets: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
