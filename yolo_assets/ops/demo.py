"""The demo `make demo` runs: the whole product on synthetic data, on an empty home in ~10 minutes."""

import time
from pathlib import Path
from typing import Any

import dagster as dg

from yolo_assets.core.home import HOME_ENV_VAR, landing_dir
from yolo_assets.data.synth import write_batch
from yolo_assets.history.status import asset_status
from yolo_assets.ops.runs import print_outcomes, resolved_resource, tick
from yolo_assets.ops.tables import format_table


def model_versions(defs: dg.Definitions) -> list[dict[str, Any]]:
    """Registered versions of the model with their aliases and lineage tags, newest first."""
    with resolved_resource(defs, "mlflow") as mlflow:
        client, model_name = mlflow.client(), mlflow.model_name
    try:
        aliases = client.get_registered_model(model_name).aliases
    except Exception:  # no model registered yet
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for version in client.search_model_versions(f"name='{model_name}'"):
        rows.append(
            {
                "version": int(version.version),
                "aliases": sorted(by_version.get(str(version.version), [])),
                "mAP50": version.tags.get("mAP50"),
                "mAP50-95": version.tags.get("mAP50-95"),
                "dataset_version": version.tags.get("dataset_version", "")[:12],
                "batches": version.tags.get("batch_names", ""),
                "promotion_gate": version.tags.get("promotion_gate", ""),
            }
        )
    return sorted(rows, key=lambda row: -row["version"])


def demo_summary(defs: dg.Definitions, instance: dg.DagsterInstance, registered: list[dict[str, Any]]) -> str:
    key_metrics = ("num_images", "num_processed", "epochs", "train_mAP50", "mAP50", "mAP50-95", "champion_mAP50-95", "model_version", "alias")
    rows = []
    with resolved_resource(defs, "artifact_store") as store:
        statuses = asset_status(defs, instance, store)
    for row in statuses:
        metadata = row["metadata"]
        metrics = " ".join(f"{name}={metadata[name]}" for name in key_metrics if metadata.get(name) is not None)
        rows.append([row["key"], (row["data_version"] or "-")[:12], str(metadata.get("cache_hit", "-")), metrics])
    versions = [
        [str(v["version"]), ",".join(v["aliases"]) or "-", v["mAP50"] or "-", v["mAP50-95"] or "-", v["promotion_gate"], v["dataset_version"], v["batches"]]
        for v in registered
    ]
    return (
        format_table(["asset", "data version", "cache hit", "key metrics"], rows)
        + "\n\nMLflow model versions:\n"
        + format_table(["version", "aliases", "mAP50", "mAP50-95", "gate", "dataset", "batches"], versions)
    )


def land_synthetic(home: Path, name: str, images: int, seed: int) -> None:
    target = landing_dir(home) / name
    if not target.exists():
        write_batch(target, images, seed=seed)
        print(f"landed {name}: {images} synthetic images", flush=True)


def run_demo(home: Path, defs: dg.Definitions, instance: dg.DagsterInstance, images: int) -> int:
    """Two batches -> ingest -> train v1 -> evaluate -> register (champion); a third batch -> retrain
    (warm start) -> evaluate against the champion -> register v2 (promoted or not by the gate)."""
    started = time.perf_counter()
    print(f"home: {home}", flush=True)
    outcomes = []
    for step, batches in enumerate(((("batch_001", 1), ("batch_002", 2)), (("batch_003", 3),)), start=1):
        for name, seed in batches:
            land_synthetic(home, name, images, seed)
        print(f"\n[{step}/2] tick: ingest through the sensor, then retrain/evaluate/register through automation", flush=True)
        step_outcomes = tick(defs, instance, home)
        print_outcomes(step_outcomes)
        outcomes += step_outcomes
    versions = model_versions(defs)
    print()
    print(demo_summary(defs, instance, versions))
    served = serve_one_request(defs, home) if versions else False
    print(f"\ndemo finished in {time.perf_counter() - started:.0f}s")
    print(f"Dagster UI: make ui          (or: {HOME_ENV_VAR}={home} yolo-assets ui)  -> http://127.0.0.1:3000")
    print(f"MLflow UI:  make mlflow-ui   (or: {HOME_ENV_VAR}={home} yolo-assets mlflow-ui)  -> http://127.0.0.1:5000")
    # A challenger refused by the promotion gate is a normal outcome; anything else failing is not.
    unexpected = [o for o in outcomes if not o.success and "promotion_gate" not in o.failure]
    return 0 if versions and served and not unexpected else 1


def serve_one_request(defs: dg.Definitions, home: Path) -> bool:
    """The rollout state, then `yolo-assets serve` answering one picture of the last batch."""
    import requests

    from yolo_assets.ops.services import DetectionService
    from yolo_assets.release.rollout import RolloutStore

    with resolved_resource(defs, "mlflow") as mlflow:
        print("\nGray release (yolo-assets rollout status):\n" + RolloutStore(mlflow.client(), mlflow.model_name).read().describe())
    # The picture of the last batch with the most labeled defects: something to detect.
    labels = sorted((landing_dir(home) / "batch_003" / "labels").glob("*.txt"), key=lambda label: (-label.stat().st_size, label.name))
    picture = next((landing_dir(home) / "batch_003" / "images").glob(f"{labels[0].stem}.*"))
    service = DetectionService(home, home / "logs" / "serve-demo.log").start()
    try:
        with open(picture, "rb") as image:
            response = requests.post(f"{service.url}/v1/detect", files={"file": (picture.name, image)}, headers={"X-Request-Key": "demo"}, timeout=60)
        answer = response.json()
    finally:
        service.stop()
    print(f"\nyolo-assets serve: POST /v1/detect {picture.name} -> HTTP {response.status_code}, model {answer.get('model')} "
          f"version {answer.get('version')} ({answer.get('route')}), {answer.get('latency_ms')} ms")
    for found in answer.get("detections", [])[:10]:
        box = ", ".join(f"{found[k]:.0f}" for k in ("x1", "y1", "x2", "y2"))
        print(f"  {found['class_name']:<12} {found['confidence']:.2f}  [{box}]")
    if response.status_code == 200 and not answer.get("detections"):
        print("  (no detection above the confidence threshold: a demo model trains for minutes, not hours)")
    return response.status_code == 200
