"""Deployment settings: EnvVar when the variable is set (resolved when a run starts, never shown),
the default otherwise."""

import dagster as dg
import pytest

from resources.alerts import AlertNotifier
from resources.dataset_policy import DatasetPolicy
from resources.model_policy import ModelPolicy
from resources.settings import deployment_setting, resource_from_environment


def test_unset_variables_keep_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YOLO_TEST_SETTING", raising=False)
    assert deployment_setting("YOLO_TEST_SETTING", 3) == 3
    assert deployment_setting("YOLO_TEST_SETTING", None) is None


def test_set_variables_become_env_vars_that_dagster_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_TEST_INT", "7")
    monkeypatch.setenv("YOLO_TEST_BOOL", "true")
    monkeypatch.setenv("YOLO_TEST_FLOAT", "0.25")
    monkeypatch.setenv("YOLO_TEST_STR", "reject")
    assert isinstance(deployment_setting("YOLO_TEST_STR", "extend"), dg.EnvVar)
    assert deployment_setting("YOLO_TEST_FLOAT", 0.3) == 0.25  # floats and booleans are read at load
    assert deployment_setting("YOLO_TEST_BOOL", False) is True
    policy = resource_from_environment(
        DatasetPolicy, {"new_class_policy": "YOLO_TEST_STR", "honour_export_split": "YOLO_TEST_BOOL"}
    ).process_config_and_initialize()
    assert (policy.new_class_policy, policy.honour_export_split) == ("reject", True)
    model = resource_from_environment(ModelPolicy, {"min_new_images": "YOLO_TEST_INT"}).process_config_and_initialize()
    assert (model.min_new_images, model.first_model_min_map50) == (7, 0.3)


def test_a_secret_setting_is_shown_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the webserver receives about the code location names the variable, never its value."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    secret = "https://hooks.example.invalid/T0KEN-settings-test"
    monkeypatch.setenv("YOLO_TEST_WEBHOOK", secret)
    notifier = resource_from_environment(AlertNotifier, {"webhook_url": "YOLO_TEST_WEBHOOK"})
    snapshot = dg.serialize_value(RepositorySnap.from_def(dg.Definitions(resources={"alert_notifier": notifier}).get_repository_def()))
    assert "YOLO_TEST_WEBHOOK" in snapshot and "T0KEN" not in snapshot
    assert notifier.process_config_and_initialize().webhook_url == secret


def test_a_policy_from_the_environment_outside_its_choices_fails_when_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_TEST_STR", "sometimes")
    policy = resource_from_environment(DatasetPolicy, {"label_conflicts": "YOLO_TEST_STR"})
    with pytest.raises(Exception, match="label_conflicts must be one of quarantine, last_writer_wins"):
        policy.process_config_and_initialize()
