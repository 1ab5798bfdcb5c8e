"""Deployment settings, read once from one environment when the code location loads.

`defs()` builds a `DeploymentSettings` from the process environment and hands it to
`build_definitions`; tests build one from a dict. Nothing reads the environment at import.

A setting that the process environment holds becomes `dg.EnvVar`: Dagster resolves it when a run starts
and the UI shows only the variable's name, never the value (a webhook URL or a tracking URI may carry a
token). A setting given in code (a test's settings) is used as it is, and may not be a secret. Unset,
the setting keeps its default. Floats and booleans are read when the code location loads (Dagster has no
float source, and pydantic checks a bool field before Dagster resolves the variable); none of ours is a
secret.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import dagster as dg

T = TypeVar("T")
R = TypeVar("R", bound=dg.ConfigurableResource)
TRUE_WORDS = ("1", "true", "yes")
# Values that must reach a run only through the environment (dg.EnvVar), never as a literal in the
# definitions that the webserver and the UI receive.
SECRET_VARIABLES = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "YOLO_ASSETS_ALERT_WEBHOOK_URL", "YOLO_ASSETS_MLFLOW_TRACKING_URI",
})


@dataclass(frozen=True)
class DeploymentSettings:
    """The variables a deployment set, as the code location saw them when it loaded."""

    environ: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)  # holds secrets: never printed

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "DeploymentSettings":
        """A snapshot of `environ` (the process environment by default)."""
        return cls(MappingProxyType(dict(os.environ if environ is None else environ)))

    def value(self, variable: str, default: str | None = None) -> str | None:
        return self.environ.get(variable, default)

    def setting(self, variable: str, default: T) -> Any:
        """`default`, or the deployment's value of `variable` (as an `EnvVar` for str and int when the
        process environment holds it)."""
        value = self.environ.get(variable)
        if value is None:
            return default
        if isinstance(default, bool):
            return value.strip().lower() in TRUE_WORDS
        if isinstance(default, float):
            return float(value)
        if os.environ.get(variable) == value:
            return dg.EnvVar.int(variable) if isinstance(default, int) else dg.EnvVar(variable)
        if variable in SECRET_VARIABLES:
            raise ValueError(f"{variable} is a secret: set it in the environment where runs execute, not in code")
        return int(value) if isinstance(default, int) else value

    def resource(self, resource_type: type[R], variables: Mapping[str, str], **fixed: Any) -> R:
        """`resource_type` with each field named in `variables` taken from that variable (or the field's
        own default), and the `fixed` fields as given."""
        settings = {
            name: self.setting(variable, resource_type.model_fields[name].default) for name, variable in variables.items()
        }
        return resource_type(**fixed, **settings)
