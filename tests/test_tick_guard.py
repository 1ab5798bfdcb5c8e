"""One scheduler per instance: a tick starts nothing while a dagster-daemon is alive on the instance."""

import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._daemon.types import DaemonHeartbeat

from yolo_assets.ops.runs import DAEMON_LIVE_SECONDS, SENSOR_DAEMON, DaemonIsScheduling, live_daemon_heartbeat_age, tick


def test_a_tick_refuses_while_the_daemon_heartbeats_and_resumes_when_it_is_gone(tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        assert live_daemon_heartbeat_age(instance) is None
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - 5, SENSOR_DAEMON, "daemon-1", None))
        age = live_daemon_heartbeat_age(instance)
        assert age is not None and 5 <= age < 10
        with pytest.raises(DaemonIsScheduling, match="dagster-daemon is running"):
            tick(dg.Definitions(), instance, tmp_path)
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - DAEMON_LIVE_SECONDS - 1, SENSOR_DAEMON, "daemon-1", None))
        assert live_daemon_heartbeat_age(instance) is None
        assert tick(dg.Definitions(), instance, tmp_path) == []
