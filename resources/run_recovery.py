"""How runs that failed on a transient cause are attempted again: deployment settings."""

import dagster as dg


class RunRecovery(dg.ConfigurableResource):
    max_attempts: int = 6
    """Attempts of one piece of work, the first run included; after the last, the alert says it gave up."""
    first_delay_s: float = 60.0
    """Wait after the first failure before the next attempt; doubled after each further failure."""
    max_delay_s: float = 1800.0
    """The longest wait between two attempts (with the defaults: 1, 2, 4, 8, 16 minutes: ~31 minutes of outage)."""
    window_s: float = 86400.0
    """Failed runs older than this (since they ended) are not attempted again."""

    local_run_workers: bool = True
    """With Dagster's default run launcher, the run processes are on the machine (and in the process
    namespace) of the daemon: a run whose process is gone is marked failed, to be attempted again.
    Set False where they are not (a daemon in another container than the code server)."""

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after attempt `attempt` (1 = the first run) failed."""
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1)))
