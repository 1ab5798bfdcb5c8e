"""How many workers the pools start: the container's CPU limit, not the node's core count."""

from pathlib import Path

from yolo_assets.core.parallel import usable_cpus


def test_a_cpu_quota_caps_the_usable_cpus(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    assert usable_cpus(cpu_max) == min(2, usable_cpus(tmp_path / "absent"))  # 1.5 rounds up
    cpu_max.write_text("100000 100000\n")  # a pod limited to 1 CPU, whatever the node has
    assert usable_cpus(cpu_max) == 1


def test_no_quota_means_the_affinity_mask(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == usable_cpus(tmp_path / "absent") >= 1
