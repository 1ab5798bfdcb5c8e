"""A job that runs in one background thread whenever asked, newest state wins: requests made while it
runs coalesce into one more run, which sees the state as it is then. For uploads that must not hold up
the work that produces them (a training's per-epoch checkpoint)."""

import threading
from collections.abc import Callable


class LatestOnly:
    def __init__(self, job: Callable[[], None], on_error: Callable[[Exception], None], name: str = "latest-only") -> None:
        self._job, self._on_error, self._name = job, on_error, name
        self._state = threading.Condition()
        self._pending = self._running = False

    def request(self) -> None:
        """Run the job soon (now, or once the run in progress ends); returns at once."""
        with self._state:
            self._pending = True
            if not self._running:
                self._running = True
                threading.Thread(target=self._loop, name=self._name, daemon=True).start()

    def _loop(self) -> None:
        while True:
            with self._state:
                if not self._pending:
                    self._running = False
                    self._state.notify_all()
                    return
                self._pending = False
            try:
                self._job()
            except Exception as error:  # reported, and the next request tries again
                self._on_error(error)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or running; False if `timeout` passed first."""
        with self._state:
            return self._state.wait_for(lambda: not self._running, timeout)
