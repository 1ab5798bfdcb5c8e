"""Data trusted at the batch level (issue 12), through the real assets on a real Dagster instance:
the same boxes from two exports are one labeling, hostile metadata is refused without cost, a batch
can be retracted and put back, and a split never moves."""

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
import exports
import numpy as np
import pytest
import yaml
from helpers import Home, training_run_config
from PIL import Image

from resources.dataset_policy import DatasetPolicy
from resources.settings import DeploymentSettings
from yolo_assets.assets.keys import BATCH_RETRACTIONS, PROCESSED_IMAGES
from yolo_assets.assets.retractions import RETRACTIONS_POOL
from yolo_assets.core.home import dagster_home, ensure_home
from yolo_assets.data.splits import split_of
from yolo_assets.definitions import build_definitions
from yolo_assets.ops.cli import main

BILLION_LAUGHS = (Path(__file__).parent / "unit" / "test_metadata_limits.py").read_text().split('BILLION_LAUGHS = """')[1].split('"""')[0]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ingest(home: Home) -> list[Any]:
    """The sensor's ingest runs, then one dataset version (explicitly: how processed_images is
    triggered is automation's business, not this file's)."""
    outcomes = home.tick()
    runs = home.instance.get_runs(dg.RunsFilter(run_ids=[o.run_id for o in outcomes])) if outcomes else []
    if not any(PROCESSED_IMAGES in (run.asset_selection or ()) for run in runs):
        outcomes.append(home.materialize("processed_images"))
    return outcomes


def retraction_config(batch: str, reason: str = "", unretract: bool = False) -> dict[str, Any]:
    """What the launchpad sends when Materialize is clicked on batch_retractions."""
    return {"ops": {"batch_retractions": {"config": {"batch": batch, "reason": reason, "unretract": unretract}}}}


# --- 1. the same boxes up to rounding are the same labels ---------------------------------------

def cross_export_batches(home: Home, count: int) -> tuple[Path, Path, str]:
    """The same pictures as YOLO text (Label Studio) and as COCO JSON whose pixel boxes carry a
    labeling tool's rounding (2 decimals); in the COCO copy one box of one image moved by 5%."""
    stems = [stem for stem, *_ in exports.samples(count, 40)]
    yolo = exports.label_studio(home.landing / "batch_yolo", count, seed=40)
    (yolo / "labels" / f"{stems[-1]}.txt").write_text("")  # the COCO fixture leaves the last image unannotated
    coco = exports.coco(home.landing / "batch_coco", count, seed=40)
    path = coco / "annotations" / "instances_default.json"
    document = json.loads(path.read_text())
    for annotation in document["annotations"]:
        annotation["bbox"] = [round(v + 0.0037, 2) for v in annotation["bbox"]]
    moved = next(a for a in document["annotations"] if a["image_id"] == 3 and not a["iscrowd"])
    width = next(i["width"] for i in document["images"] if i["id"] == 3)
    x, _, w, _ = moved["bbox"]
    moved["bbox"][0] = x + 0.05 * width if x + w + 0.05 * width < width else x - 0.05 * width
    path.write_text(json.dumps(document))
    return exports.mark_complete(yolo), exports.mark_complete(coco), stems[2]


def test_the_same_boxes_from_yolo_text_and_coco_json_are_duplicates_and_a_moved_box_a_conflict(home: Home) -> None:
    count = 20
    cross_export_batches(home, count)
    outcomes = ingest(home)
    assert outcomes and all(o.success for o in outcomes), outcomes
    assert home.metadata("labeled_batch", "batch_coco")["num_images"] == count
    meta = home.metadata("processed_images")
    # Kept: every image once, except the one whose box really moved (both copies out, with the reason).
    assert meta["num_images"] == count - 1 and meta["duplicate_images"] == count - 1
    assert meta["label_conflicts"].count("`label_conflict`") == 2
    kept_with_tolerance = meta["num_images"]
    # Exact comparison (what the union did before): rounding alone makes most copies conflict.
    home.redefine(dataset_policy=DatasetPolicy(label_match_tolerance=0.0))
    assert home.materialize("processed_images").success
    exact = home.metadata("processed_images")
    assert exact["num_images"] < count // 2 < kept_with_tolerance
    print(f"cross-export overlap of {count} images: kept {exact['num_images']} with exact matching, {kept_with_tolerance} with the tolerance")


# --- 2. hostile or broken batch metadata is refused, not absorbed --------------------------------

def test_billion_laughs_batch_fails_fast_once_and_leaves_the_dataset_untouched(home: Home) -> None:
    exports.mark_complete(exports.label_studio(home.landing / "batch_good", 6, seed=41))
    assert all(o.success for o in ingest(home))
    version, classes = home.data_version("processed_images"), home.metadata("processed_images")["classes"]
    store_before, instance_before = folder_bytes(home.store), folder_bytes(dagster_home(home.path))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    bomb = exports.label_studio(home.landing / "batch_bomb", 6, seed=42)
    (bomb / "classes.txt").unlink()
    (bomb / "notes.json").unlink()
    (bomb / "data.yaml").write_text(BILLION_LAUGHS)
    exports.mark_complete(bomb)
    started = time.perf_counter()
    [outcome] = [o for o in home.tick() if "batch_bomb" in o.description]
    seconds = time.perf_counter() - started
    assert not outcome.success and "aliases are refused in batch metadata" in outcome.failure
    retries = home.instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert retries == []  # refused once: a Failure is never retried
    assert seconds < 60  # a bound against an expansion that would run for minutes, not a speed target (~2-5 s)

    assert home.materialize("processed_images").success
    meta = home.metadata("processed_images")
    assert home.data_version("processed_images") == version and meta["classes"] == classes  # untouched
    assert list(meta["excluded_batches"]) == ["batch_bomb"] and "alias" in meta["excluded_batches"]["batch_bomb"]
    store_growth, instance_growth = folder_bytes(home.store) - store_before, folder_bytes(dagster_home(home.path)) - instance_before
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert store_growth < 100_000 and instance_growth < 1_000_000 and rss_growth_kib < 100_000
    print(f"billion laughs: refused in {seconds:.2f}s; store +{store_growth} B, instance +{instance_growth} B, peak RSS +{rss_growth_kib} KiB")


def test_oversized_labels_are_quarantined_and_the_rest_of_the_batch_kept(home: Home) -> None:
    home.redefine(dataset_policy=DatasetPolicy(max_label_boxes=50))
    root = exports.label_studio(home.landing / "batch_big_labels", 8, seed=43)
    stems = sorted(p.stem for p in (root / "labels").iterdir())
    line = "0 0.5 0.5 0.1 0.1\n"
    (root / "labels" / f"{stems[0]}.txt").write_text(line * 120_000)  # 2.2 MB: over max_label_bytes
    (root / "labels" / f"{stems[1]}.txt").write_text(line * 51)  # over max_label_boxes=50
    exports.mark_complete(root)
    outcomes = home.tick(run_config={"ops": {"labeled_batch": {"config": {"max_quarantined_fraction": 0.3}}}})
    assert all(o.success for o in outcomes), outcomes
    meta = home.metadata("labeled_batch", "batch_big_labels")
    assert meta["num_images"] == 6 and meta["quarantine_reasons"] == {"label_too_large": 2}
    artifact = home.store / "labeled_batch" / home.data_version("labeled_batch", "batch_big_labels")
    for stem in stems[:2]:  # the images are kept with the quarantine, the labels stay in the landing zone only
        assert (artifact / "quarantine" / "images" / f"{stem}.jpg").exists()
        assert not (artifact / "quarantine" / "labels" / f"{stem}.txt").exists()
    assert folder_bytes(artifact) < 200_000 and folder_bytes(dagster_home(home.path)) < 3_000_000


# --- 3. retract a batch --------------------------------------------------------------------------

def land_three(home: Home) -> None:
    home.land("batch_a", 8, 51, classes=("scratch", "spot"))
    home.land("batch_b", 8, 52, classes=("scratch", "dent"))  # the only batch with "dent"
    home.land("batch_c", 8, 53, classes=("scratch", "crack"))


def dataset_names(home: Home) -> dict[int, str]:
    folder = home.store / "processed_images" / home.data_version("processed_images")
    return yaml.safe_load((folder / "data.yaml").read_text())["names"]


def test_retracting_a_batch_leaves_it_out_until_unretracted(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    land_three(home)
    assert all(o.success for o in ingest(home))
    full = home.metadata("processed_images")
    assert full["classes"] == ["scratch", "spot", "dent", "crack"] and full["boxes_per_class"].get("dent")
    full_version = home.data_version("processed_images")

    assert main(["--home", str(home.path), "retract", "batch_b", "--reason", "labeled with the wrong tool settings"]) == 0
    meta = home.metadata("processed_images")
    assert home.data_version("processed_images") != full_version
    assert sorted(meta["input_batches"]) == ["batch_a", "batch_c"]
    [record] = meta["retracted_batches"]
    assert record["batch"] == "batch_b" and record["reason"] == "labeled with the wrong tool settings" and record["retracted_at"]
    # Class ids never shift: "dent" keeps id 2 without boxes, "crack" keeps 3 under a warm-started model.
    assert meta["classes"] == ["scratch", "spot", "dent", "crack"] and meta["classes_without_boxes"] == ["dent"]
    assert dataset_names(home) == {0: "scratch", 1: "spot", 2: "dent", 3: "crack"}
    assert home.manifest("processed_images")["retracted_batches"] == {"batch_b": home.data_version("labeled_batch", "batch_b")}
    retracted_version = home.data_version("processed_images")

    # The same content landing again (re-marked, and under another name) does not bring it back.
    shutil.copytree(home.landing / "batch_b", home.landing / "batch_b_again")
    (home.landing / "batch_b" / "_SUCCESS").write_text("again")
    assert all(o.success for o in ingest(home))
    meta = home.metadata("processed_images")
    assert sorted(meta["input_batches"]) == ["batch_a", "batch_c"]
    assert {r["batch"]: r.get("retracted_as") for r in meta["retracted_batches"]} == {"batch_b": None, "batch_b_again": "batch_b"}
    assert home.data_version("processed_images") != retracted_version  # honest: batch_b_again is recorded as left out

    assert main(["--home", str(home.path), "unretract", "batch_b"]) == 0
    meta = home.metadata("processed_images")
    assert sorted(meta["input_batches"]) == ["batch_a", "batch_b", "batch_b_again", "batch_c"] and meta["retracted_batches"] == []
    assert meta["boxes_per_class"].get("dent") and meta["classes"] == ["scratch", "spot", "dent", "crack"]

    runs = len(home.instance.get_runs())
    assert main(["--home", str(home.path), "unretract", "batch_b"]) == 2  # not retracted: one line, no run
    assert "is not retracted" in capsys.readouterr().err and len(home.instance.get_runs()) == runs
    assert main(["--home", str(home.path), "retract", "batch_zz", "--reason", "x"]) == 2


def test_a_retraction_from_the_launchpad_reaches_the_dataset_through_the_sensor(home: Home) -> None:
    land_three(home)
    assert all(o.success for o in ingest(home))
    full_version = home.data_version("processed_images")
    assert home.materialize("batch_retractions", run_config=retraction_config("batch_c", "camera out of focus")).success
    rebuilt = [o for o in home.tick() if "dataset_sensor" in o.description]
    assert len(rebuilt) == 1 and rebuilt[0].success
    meta = home.metadata("processed_images")
    assert "batch_c" not in meta["input_batches"] and meta["retracted_batches"][0]["reason"] == "camera out of focus"
    assert meta["retractions_version"] == home.data_version("batch_retractions")
    assert not [o for o in home.tick() if "dataset_sensor" in o.description]  # handled once
    failed = home.materialize("batch_retractions", run_config=retraction_config("batch_a"))  # no reason
    assert not failed.success and "needs a reason" in failed.failure
    # Unretracted, the dataset is the one from before the retraction again: a cache hit, not a new version.
    assert home.materialize("batch_retractions", run_config=retraction_config("batch_c", unretract=True)).success
    assert len([o for o in home.tick() if "dataset_sensor" in o.description]) == 1
    assert home.data_version("processed_images") == full_version
    assert home.metadata("processed_images")["cache_hit"] is True


def test_retractions_live_in_the_s3_store_and_another_machine_applies_them(home: Home, seaweedfs: Any, tmp_path: Path) -> None:
    from test_s3_storage import store_on

    bucket = f"retract-{int(time.time() * 1000)}"
    seaweedfs.create_bucket(bucket)
    home.redefine(artifact_store=store_on(seaweedfs, bucket, tmp_path / "machine_a"))
    land_three(home)
    assert all(o.success for o in ingest(home))
    assert home.materialize("batch_retractions", run_config=retraction_config("batch_a", "wrong camera")).success
    keys = [o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix="store/batch_retractions/")["Contents"]]
    assert any(key.endswith("/retractions.json") for key in keys)
    home.redefine(artifact_store=store_on(seaweedfs, bucket, tmp_path / "machine_b"))  # an empty cache
    assert home.materialize("processed_images").success
    meta = home.metadata("processed_images")
    assert sorted(meta["input_batches"]) == ["batch_b", "batch_c"] and meta["retracted_batches"][0]["batch"] == "batch_a"


@pytest.mark.slow
def test_a_warm_started_model_after_a_retraction_keeps_class_ids_and_lineage_shows_it(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    from resources.model_policy import ModelPolicy

    home.redefine(model_policy=ModelPolicy(min_new_images=1, first_model_min_map50=0.0, promotion_tolerance=1.0, max_class_ap_drop=1.0, rollout_steps=[100]))
    land_three(home)
    assert all(o.success for o in ingest(home))
    small = training_run_config(warm_start=True)
    models = ["trained_weights", "evaluation_report", "registered_model", "model_rollout"]
    assert home.materialize(models, run_config=small).success
    assert main(["--home", str(home.path), "retract", "batch_b", "--reason", "wrong tool settings"]) == 0
    assert home.materialize(models, run_config=small).success
    assert home.metadata("trained_weights")["warm_start_from"]  # trained from the v1 champion
    from ultralytics import YOLO

    weights = home.store / "trained_weights" / home.data_version("trained_weights") / "best.pt"
    assert YOLO(str(weights)).names == {0: "scratch", 1: "spot", 2: "dent", 3: "crack"}
    capsys.readouterr()
    assert main(["--home", str(home.path), "lineage", "--model", "yolo-defect-detector/2", "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in lineage["retracted_batches"]] == ["batch_b"]
    assert lineage["retracted_batches"][0]["reason"] == "wrong tool settings"
    assert sorted(b["batch"] for b in lineage["batches"]) == ["batch_a", "batch_c"]


# --- 4. a split never moves ----------------------------------------------------------------------

def test_a_near_duplicate_whose_hash_sorts_first_does_not_move_the_older_image(home: Home) -> None:
    """batch_one holds a train image; batch_two a re-encoding of it (a near-duplicate) whose content
    hash is smaller and alone would be val: the pair ends in train, where the old image already was."""
    # Big random blocks: a perceptual hash far from the synthetic parts', stable under re-encoding.
    blocks = np.random.default_rng(60).integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    picture = Image.fromarray(blocks).resize((288, 256), Image.Resampling.NEAREST)
    one = exports.label_studio(home.landing / "batch_one", 4, seed=61)
    old_bytes = planted = b""
    for quality in range(70, 100):
        data = _jpeg(picture, quality)
        if not old_bytes and split_of(_sha(data), 0.2) == "train":
            old_bytes = data
        elif old_bytes and split_of(_sha(data), 0.2) == "val":
            planted = data
            break
    assert old_bytes and planted and _sha(planted) < _sha(old_bytes)  # val hashes sort first
    (one / "images" / "part.jpg").write_bytes(old_bytes)
    (one / "labels" / "part.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    exports.mark_complete(one)
    assert all(o.success for o in ingest(home))
    two = exports.label_studio(home.landing / "batch_two", 4, seed=62)
    (two / "images" / "part_reexported.jpg").write_bytes(planted)
    (two / "labels" / "part_reexported.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    exports.mark_complete(two)
    assert all(o.success for o in ingest(home))
    manifest = home.manifest("processed_images")
    splits = {row["sha"]: row["split"] for row in manifest["items"]}
    assert sorted([_sha(planted), _sha(old_bytes)]) in [sorted(pair[:2]) for pair in manifest["near_duplicates"]]
    assert splits[_sha(old_bytes)] == "train" and splits[_sha(planted)] == "train"
    status, _ = home.check("processed_images", "near_duplicates")
    assert status == "SUCCEEDED"


def _jpeg(image: Image.Image, quality: int) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_unretracting_without_a_rebuild_then_ticking_brings_the_batch_back(home: Home) -> None:
    land_three(home)
    assert all(o.success for o in ingest(home))
    assert main(["--home", str(home.path), "retract", "batch_b", "--reason", "wrong tool settings"]) == 0
    assert main(["--home", str(home.path), "unretract", "batch_b", "--no-rebuild"]) == 0
    # The state now equals an earlier build's: the run key names the build it follows, so it builds again.
    rebuilt = [o for o in home.tick() if "dataset_sensor" in o.description]
    assert len(rebuilt) == 1 and rebuilt[0].success
    assert sorted(home.metadata("processed_images")["input_batches"]) == ["batch_a", "batch_b", "batch_c"]
    assert not [o for o in home.tick() if "dataset_sensor" in o.description]  # and only once


def stale_assets(home: Home, capsys: pytest.CaptureFixture[str]) -> set[str]:
    capsys.readouterr()
    assert main(["--home", str(home.path), "status", "--json"]) == 0
    return {row["key"] for row in json.loads(capsys.readouterr().out)["assets"] if row["stale"]}


TINY_TRAINING = training_run_config()


@pytest.mark.slow
def test_a_retraction_retrains_the_model_without_the_batch(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    from resources.model_policy import ModelPolicy

    home.redefine(model_policy=ModelPolicy(min_new_images=1, first_model_min_map50=0.0, promotion_tolerance=1.0, max_class_ap_drop=1.0,
                                           rollout_steps=[100]))
    land_three(home)
    assert all(o.success for o in home.tick(TINY_TRAINING, automation=True))
    assert "batch_b" in home.metadata("trained_weights")["input_batches"]
    assert main(["--home", str(home.path), "retract", "batch_b", "--reason", "mislabeled dents"]) == 0
    # The rebuild is what tick would have built: the dataset is fresh, the model behind it is not.
    assert "processed_images" not in stale_assets(home, capsys) and "trained_weights" in stale_assets(home, capsys)
    assert not [o for o in home.tick() if "dataset_sensor" in o.description]
    status, gate = home.check("processed_images", "retrain_gate")
    assert status == "SUCCEEDED" and gate["new_images"] == 0 and gate["retraction_changes"]["retracted"] == ["batch_b"]
    outcomes = home.tick(TINY_TRAINING, automation=True)
    assert [o.success for o in outcomes if "trained_weights" in o.description] == [True]
    assert sorted(home.metadata("trained_weights")["input_batches"]) == ["batch_a", "batch_c"]
    # The gate compared the new model with a champion that learned from the retracted batch, and says so.
    status, promotion = home.check("registered_model", "promotion_gate")
    assert status == "SUCCEEDED" and promotion["champion_trained_on_retracted"] == ["batch_b"]
    assert any("trained on batches since retracted (batch_b)" in reason for reason in promotion["reasons"])
    capsys.readouterr()
    assert main(["--home", str(home.path), "lineage", "--model", "yolo-defect-detector@champion", "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert lineage["version"] == 2 and [r["batch"] for r in lineage["retracted_batches"]] == ["batch_b"]
    assert lineage["retracted_batches"][0]["reason"] == "mislabeled dents"
    assert sorted(b["batch"] for b in lineage["batches"]) == ["batch_a", "batch_c"]


@pytest.mark.slow
def test_under_retraction_policy_demote_a_champion_that_saw_the_batch_leaves_service_at_once(home: Home) -> None:
    from resources.model_policy import ModelPolicy

    home.redefine(model_policy=ModelPolicy(min_new_images=1, first_model_min_map50=0.0, promotion_tolerance=1.0, max_class_ap_drop=1.0,
                                           rollout_steps=[100], retraction_policy="demote"))
    home.land("batch_a", 8, 51, classes=("scratch", "spot"))
    home.land("batch_c", 8, 53, classes=("scratch", "crack"))
    assert all(o.success for o in home.tick(TINY_TRAINING, automation=True))  # version 1: batch_a, batch_c
    home.land("batch_b", 8, 52, classes=("scratch", "spot"))
    assert all(o.success for o in home.tick(TINY_TRAINING, automation=True))  # version 2 learned from batch_b
    assert home.metadata("model_rollout")["champion"] == "2"
    assert main(["--home", str(home.path), "retract", "batch_b", "--reason", "mislabeled spots"]) == 0
    # The sensors alone (no retraining yet): version 1, which never saw batch_b, serves again.
    withdrawn = [o for o in home.tick() if "rollout_sensor" in o.description]
    assert [o.success for o in withdrawn] == [True]
    rollout = home.metadata("model_rollout")
    assert (rollout["event"], rollout["champion"], rollout["previous"]) == ("withdrawn", "1", "")
    assert "version 2 learned from retracted batch_b" in rollout["reason"]
    client = home.resource("mlflow").client()
    assert client.get_model_version("yolo-defect-detector", "2").tags["rollout"].startswith("withdrawn:")
    assert not [o for o in home.tick() if "rollout_sensor" in o.description]  # once per retraction
    # The retraining that follows learns from batch_a and batch_c again: version 1's weights (a cache
    # hit), registered once, so version 1 stays champion and no version 3 is made.
    assert all(o.success for o in home.tick(TINY_TRAINING, automation=True))
    registered = home.metadata("registered_model")
    assert (registered["model_version"], registered["already_registered"]) == (1, True)
    assert home.metadata("model_rollout")["champion"] == "1"


def test_retractions_run_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each retraction rewrites the whole list: the asset is in a pool whose limit is 1 on the embedded
    and on the production instance, so a second retraction waits instead of overwriting the first."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # ensure_home points it at the home; restored after
    defs = build_definitions(ensure_home(tmp_path / "home"), DeploymentSettings())
    node = defs.resolve_assets_def(BATCH_RETRACTIONS).get_op_def_for_asset_key(BATCH_RETRACTIONS)
    assert node.pool == RETRACTIONS_POOL
    instance = dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "home")))
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    production = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "dagster.yaml").read_text())
    assert production["concurrency"]["pools"]["default_limit"] == 1
