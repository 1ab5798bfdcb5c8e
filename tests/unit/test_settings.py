"""Deployment settings: read once from one environment; EnvVar when the process environment holds the
variable (resolved when a run starts, never shown), the value as given when a caller built the settings
in code, the default otherwise."""

import dagster as dg
import pytest

from resources.alerts import AlertNotifier
from resources.dataset_policy import DatasetPolicy
from resources.model_policy import ModelPolicy
from resources.settings import DeploymentSettings


def test_unset_variables_keep_the_default() -> None:
    settings = DeploymentSettings()
    assert settings.setting("YOLO_TEST_SETTING", 3) == 3
    assert settings.setting("YOLO_TEST_SETTING", None) is None


def test_variables_of_the_process_environment_become_env_vars_that_dagster_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_TEST_INT", "7")
    monkeypatch.setenv("YOLO_TEST_BOOL", "true")
    monkeypatch.setenv("YOLO_TEST_FLOAT", "0.25")
    monkeypatch.setenv("YOLO_TEST_STR", "reject")
    settings = DeploymentSettings.from_environment()
    assert isinstance(settings.setting("YOLO_TEST_STR", "extend"), dg.EnvVar)
    assert settings.setting("YOLO_TEST_FLOAT", 0.3) == 0.25  # floats and booleans are read at load
    assert settings.setting("YOLO_TEST_BOOL", False) is True
    policy = settings.resource(
        DatasetPolicy, {"new_class_policy": "YOLO_TEST_STR", "honour_export_split": "YOLO_TEST_BOOL"}
    ).process_config_and_initialize()
    assert (policy.new_class_policy, policy.honour_export_split) == ("reject", True)
    model = settings.resource(ModelPolicy, {"min_new_images": "YOLO_TEST_INT"}).process_config_and_initialize()
    assert (model.min_new_images, model.first_model_min_map50) == (7, 0.3)


def test_settings_built_in_code_are_used_as_given_and_the_environment_is_read_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YOLO_TEST_INT", raising=False)
    settings = DeploymentSettings.from_environment({"YOLO_TEST_INT": "4", "YOLO_TEST_STR": "last_writer_wins"})
    monkeypatch.setenv("YOLO_TEST_INT", "9")  # set after the code location loaded: not this deployment's value
    model = settings.resource(ModelPolicy, {"min_new_images": "YOLO_TEST_INT"})
    assert model.min_new_images == 4
    assert settings.resource(DatasetPolicy, {"label_conflicts": "YOLO_TEST_STR"}).label_conflicts == "last_writer_wins"


def test_a_secret_given_in_code_is_refused() -> None:
    settings = DeploymentSettings.from_environment({"YOLO_ASSETS_ALERT_WEBHOOK_URL": "https://hooks.example.invalid/T0KEN"})
    with pytest.raises(ValueError, match="YOLO_ASSETS_ALERT_WEBHOOK_URL is a secret"):
        settings.resource(AlertNotifier, {"webhook_url": "YOLO_ASSETS_ALERT_WEBHOOK_URL"})
    assert "T0KEN" not in repr(settings) and "T0KEN" not in str(settings)


def test_a_secret_setting_is_shown_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the webserver receives about the code location names the variable, never its value."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    secret = "https://hooks.example.invalid/T0KEN-settings-test"
    monkeypatch.setenv("YOLO_TEST_WEBHOOK", secret)
    notifier = DeploymentSettings.from_environment().resource(AlertNotifier, {"webhook_url": "YOLO_TEST_WEBHOOK"})
    snapshot = dg.serialize_value(RepositorySnap.from_def(dg.Definitions(resources={"alert_notifier": notifier}).get_repository_def()))
    assert "YOLO_TEST_WEBHOOK" in snapshot and "T0KEN" not in snapshot
    assert notifier.process_config_and_initialize().webhook_url == secret


def test_a_policy_from_the_environment_outside_its_choices_fails_when_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_TEST_STR", "sometimes")
    policy = DeploymentSettings.from_environment().resource(DatasetPolicy, {"label_conflicts": "YOLO_TEST_STR"})
    with pytest.raises(Exception, match="label_conflicts must be one of quarantine, last_writer_wins"):
        policy.process_config_and_initialize()
