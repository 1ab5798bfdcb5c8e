"""The unit layer: pure functions and Dagster definitions, never a Dagster instance on disk (a home), a
server or a training. A test that needs one belongs in tests/ (the integration layer); this guard says
so. (Resolving a resource's config makes Dagster build an in-memory instance: that one is allowed.)"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from dagster._core.instance.types import InstanceType


@pytest.fixture(autouse=True)
def no_dagster_instance_on_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    opened = dg.DagsterInstance.__init__

    def guarded(self: dg.DagsterInstance, instance_type: InstanceType, *args: Any, **kwargs: Any) -> None:
        if instance_type == InstanceType.PERSISTENT:
            raise AssertionError("the unit layer opens no Dagster instance on disk: move this test to tests/")
        opened(self, instance_type, *args, **kwargs)

    monkeypatch.setattr(dg.DagsterInstance, "__init__", guarded)
    yield
