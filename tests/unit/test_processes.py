"""restore_interrupts: a process started with SIGINT ignored (a shell's `&`) gets the default handler
back, so Dagster's SIGINT-to-SIGTERM mapping cannot leave its child processes ignoring SIGTERM."""

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from yolo_assets.core.processes import restore_interrupts


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def test_an_ignored_sigint_gets_its_default_handler_back(sigint_ignored: None) -> None:
    restore_interrupts()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_after_it_a_child_started_with_sigterm_mapped_like_dagster_does_stops_on_sigterm(sigint_ignored: None) -> None:
    saved_term = signal.getsignal(signal.SIGTERM)
    try:
        restore_interrupts()
        signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # what dagster's setup_interrupt_handlers does
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        child.terminate()
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, saved_term)


def test_a_handler_someone_set_is_left_alone() -> None:
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # pytest's own
    before = signal.getsignal(signal.SIGINT)
    restore_interrupts()
    assert signal.getsignal(signal.SIGINT) is before
