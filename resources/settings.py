"""Deployment settings from the environment, the Dagster way.

A setting whose variable is set becomes `dg.EnvVar`: Dagster resolves it when a run starts and the UI
shows only the variable's name, never the value (a webhook URL or a tracking URI may carry a token).
Unset, the setting keeps its default. Floats and booleans are read when the code location loads
(Dagster has no float source, and pydantic checks a bool field before Dagster resolves the variable);
none of ours is a secret.
"""

from typing import Any, TypeVar

import dagster as dg

T = TypeVar("T")
TRUE_WORDS = ("1", "true", "yes")


def deployment_setting(variable: str, default: T) -> Any:
    """`default`, or the deployment's value of `variable` (as an `EnvVar` for str, int and bool)."""
    if dg.EnvVar(variable).get_value() is None:
        return default
    value = str(dg.EnvVar(variable).get_value())
    if isinstance(default, bool):
        return value.strip().lower() in TRUE_WORDS
    if isinstance(default, int):
        return dg.EnvVar.int(variable)
    if isinstance(default, float):
        return float(value)
    return dg.EnvVar(variable)


R = TypeVar("R", bound=dg.ConfigurableResource)


def resource_from_environment(resource_type: type[R], variables: dict[str, str], **fixed: Any) -> R:
    """`resource_type` with each field named in `variables` taken from that environment variable
    (or the field's own default), and the `fixed` fields as given."""
    settings = {
        field: deployment_setting(variable, resource_type.model_fields[field].default) for field, variable in variables.items()
    }
    return resource_type(**fixed, **settings)
