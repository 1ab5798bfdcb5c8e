"""LatestOnly: a background job that never holds up its caller, coalesces requests, and reports errors."""

import threading

from yolo_assets.core.background import LatestOnly


def test_requests_made_during_a_run_coalesce_into_one_more_run_that_sees_the_newest_state() -> None:
    state, seen, started, release = {"epoch": 1}, [], threading.Event(), threading.Event()

    def upload() -> None:
        epoch = state["epoch"]
        started.set()
        release.wait(5)  # the first upload is slow
        seen.append(epoch)

    uploads = LatestOnly(upload, on_error=lambda error: None)
    uploads.request()  # returns at once, though the upload takes a while
    assert started.wait(5)
    for epoch in (2, 3, 4):
        state["epoch"] = epoch
        uploads.request()
    release.set()
    assert uploads.wait(5)
    assert seen == [1, 4]  # epoch 1, then the newest once: 2 and 3 are never uploaded


def test_an_error_is_reported_and_the_next_request_runs_again() -> None:
    errors: list[Exception] = []
    calls = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("store down")

    uploads = LatestOnly(flaky, on_error=errors.append)
    uploads.request()
    assert uploads.wait(5)
    assert [str(e) for e in errors] == ["store down"]
    uploads.request()
    assert uploads.wait(5) and len(calls) == 2 and len(errors) == 1


def test_wait_without_a_request_returns_at_once() -> None:
    assert LatestOnly(lambda: None, on_error=lambda error: None).wait(0.1)
