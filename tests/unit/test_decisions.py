"""The decisions the platform takes without any run: the promotion gate, label validity, dataset
diffs, cache keys and the training recipe."""

from typing import Any

import pytest

from resources.model_policy import ModelPolicy
from resources.trainer import TrainingDefaults
from yolo_assets.assets.ingest import label_validity_passed
from yolo_assets.assets.training import TrainingConfig, retraction_changes, warm_start_refusal
from yolo_assets.core.versioning import cache_key, encoded_manifest
from yolo_assets.data.dataset_manifest import dataset_diff
from yolo_assets.release.gate import promotion_decision


def scores(map50_95: float, per_class: dict[str, float], map50: float = 0.5) -> dict[str, Any]:
    return {"mAP50": map50, "mAP50-95": map50_95, "per_class": {name: {"ap50_95": ap} for name, ap in per_class.items()}}


def test_the_first_model_must_clear_the_floor() -> None:
    policy = ModelPolicy(first_model_min_map50=0.3)
    passed, reasons = promotion_decision({"challenger": scores(0.2, {}, map50=0.31), "champion": None}, policy)
    assert passed and "floor 0.300" in reasons[0]
    assert not promotion_decision({"challenger": scores(0.2, {}, map50=0.29), "champion": None}, policy)[0]


def test_a_challenger_within_the_tolerance_is_promoted() -> None:
    policy = ModelPolicy(promotion_tolerance=0.01, max_class_ap_drop=0.05)
    metrics = {"challenger": scores(0.395, {"scratch": 0.4}), "champion": scores(0.40, {"scratch": 0.42})}
    passed, reasons = promotion_decision(metrics, policy)
    assert passed and reasons == ["mAP50-95 0.395 vs champion 0.400; no class dropped more than 0.05"]


def test_a_worse_challenger_or_a_class_that_drops_is_refused_with_every_reason() -> None:
    policy = ModelPolicy(promotion_tolerance=0.01, max_class_ap_drop=0.05)
    metrics = {"challenger": scores(0.35, {"scratch": 0.5, "spot": 0.1}), "champion": scores(0.40, {"scratch": 0.5, "spot": 0.2})}
    passed, reasons = promotion_decision(metrics, policy)
    assert not passed
    assert reasons[0].startswith("mAP50-95 0.350 < champion 0.400") and reasons[1].startswith("class spot: AP50-95 dropped 0.100")
    # A class the champion never saw cannot have dropped.
    metrics = {"challenger": scores(0.45, {"dent": 0.0}), "champion": scores(0.40, {})}
    assert promotion_decision(metrics, policy)[0]


def test_label_validity_fails_above_the_threshold_and_without_any_usable_item() -> None:
    manifest = {"items": [{}] * 8, "quarantine": [{}] * 2}
    assert label_validity_passed(manifest, 0.2) and not label_validity_passed(manifest, 0.19)
    assert not label_validity_passed({"items": [], "quarantine": []}, 1.0)


def test_dataset_diff_names_added_removed_and_relabeled_images_per_class() -> None:
    old = {"classes": ["scratch", "spot"], "items": [
        {"sha": "a", "labels": [[0, 0.5, 0.5, 0.1, 0.1]]}, {"sha": "b", "labels": [[1, 0.5, 0.5, 0.1, 0.1]]},
        {"sha": "c", "labels": []},
    ]}
    new = {"classes": ["spot", "scratch"], "items": [  # ids swapped: "a" keeps its class name, so is not relabeled
        {"sha": "a", "labels": [[1, 0.5, 0.5, 0.1, 0.1]]}, {"sha": "b", "labels": [[1, 0.5, 0.5, 0.1, 0.1]]},
        {"sha": "d", "labels": [[0, 0.2, 0.2, 0.1, 0.1]]},
    ]}
    diff = dataset_diff(old, new)
    assert (diff["added"], diff["removed"], diff["relabeled"]) == (1, 1, 1)
    assert diff["examples"] == {"added": ["d"], "removed": ["c"], "relabeled": ["b"]}
    assert diff["images_per_class"] == {
        "spot": {"added": 1, "removed": 0, "relabeled": 0},
        "(background)": {"added": 0, "removed": 1, "relabeled": 0},
        "scratch": {"added": 0, "removed": 0, "relabeled": 1},
    }


def test_cache_keys_and_data_versions_ignore_ordering_but_not_content() -> None:
    assert cache_key("1", {"a": "x", "b": "y"}, {"p": 1, "q": 2}) == cache_key("1", {"b": "y", "a": "x"}, {"q": 2, "p": 1})
    assert cache_key("1", "x", {}) != cache_key("2", "x", {}) != cache_key("2", "x", {"p": 1})
    assert cache_key("1", {"a": "x"}, {}) != cache_key("1", {"a": "y"}, {})  # another input data version
    version, data = encoded_manifest({"b": 1, "a": [1, 2]})
    assert data == b'{"a":[1,2],"b":1}' and len(version) == 64
    assert version == encoded_manifest({"a": [1, 2], "b": 1})[0] != encoded_manifest({"a": [2, 1], "b": 1})[0]


def test_empty_training_fields_take_the_deployment_defaults_and_the_recipe_keys_the_weights() -> None:
    defaults = TrainingDefaults(epochs=3, warm_start_epochs=2, imgsz=64, batch=4, workers=0)
    config = TrainingConfig(epochs=5).with_defaults(defaults)
    assert (config.epochs, config.warm_start_epochs, config.imgsz, config.batch, config.workers) == (5, 2, 64, 4, 0)
    scratch, warm = config.recipe("cpu", None), config.recipe("0", "weights-v1")
    assert scratch["epochs"] == 5 and warm["epochs"] == 2
    assert (scratch["device"], warm["device"], warm["warm_start_from"]) == ("cpu", "cuda", "weights-v1")
    assert "workers" not in scratch  # dataloader workers do not change the weights
    assert TrainingConfig(workers=7).with_defaults(defaults).recipe("cpu", None) == scratch | {"epochs": 3}


@pytest.mark.parametrize("field", ["new_class_policy", "label_conflicts", "missing_label"])
def test_a_dataset_policy_outside_its_choices_is_refused(field: str) -> None:
    from pydantic import ValidationError

    from resources.dataset_policy import DatasetPolicy

    with pytest.raises(ValidationError, match=field):
        DatasetPolicy(**{field: "sometimes"})


def test_warm_start_needs_the_champions_classes_first_and_in_order() -> None:
    assert warm_start_refusal(["scratch", "spot"], ["scratch", "spot"]) is None
    assert warm_start_refusal(["scratch", "spot"], ["scratch", "spot", "crack"]) is None  # classes appended
    swapped = warm_start_refusal(["spot", "scratch"], ["scratch", "spot"])
    assert swapped and "['spot', 'scratch']" in swapped and "['scratch', 'spot']" in swapped
    assert warm_start_refusal(["scratch", "spot", "crack"], ["scratch", "spot"])  # a class the dataset lacks
    assert warm_start_refusal(["Scratch"], ["scratch"])  # names are compared as the dataset spells them




def test_a_retraction_and_an_unretraction_since_training_are_each_a_change() -> None:
    """retrain_gate's trigger beside min_new_images: compared with the manifest the weights were trained on."""
    record = {"reason": "mislabeled", "data_version": "v1"}
    trained_on: Any = {"retracted_batches": {"batch_a": record}}
    assert retraction_changes({"retracted_batches": {"batch_a": record, "batch_b": record}}, trained_on) == {
        "retracted": ["batch_b"], "unretracted": []
    }
    assert retraction_changes({"retracted_batches": {}}, trained_on) == {"retracted": [], "unretracted": ["batch_a"]}
    assert retraction_changes(trained_on, trained_on) == {"retracted": [], "unretracted": []}
