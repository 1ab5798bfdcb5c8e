"""Failure alerts to a webhook (Slack-compatible); the URL is a secret and never leaves this object."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import dagster as dg


class AlertNotifier(dg.ConfigurableResource):
    webhook_url: str | None = None
    """From the environment (YOLO_ASSETS_ALERT_WEBHOOK_URL through EnvVar); None = log the alert only."""
    ui_url: str = "http://127.0.0.1:3000"
    """Base URL of the Dagster UI, for the link to the run."""
    attempts: int = 4
    backoff_seconds: float = 0.5
    timeout_seconds: float = 5.0

    def run_link(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    def destination(self) -> str:
        """Where alerts go, printable: the host only (a webhook URL's path is its token)."""
        return urllib.parse.urlsplit(self.webhook_url).netloc if self.webhook_url else "the sensor log"

    def send(self, payload: dict[str, Any], log: Any) -> bool:
        """POST with exponential backoff; never raises. True when the receiver accepted it."""
        if not self.webhook_url:
            log.warning(f"no alert webhook configured; alert: {payload['text']}")
            return False
        body = json.dumps(payload).encode()
        delay = self.backoff_seconds
        for attempt in range(1, self.attempts + 1):
            try:
                request = urllib.request.Request(self.webhook_url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    if 200 <= response.status < 300:
                        log.info(f"alert delivered to {self.destination()} (attempt {attempt})")
                        return True
                    problem = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                problem = f"HTTP {error.code}"
            except (urllib.error.URLError, OSError) as error:
                problem = type(error).__name__
            log.warning(f"alert to {self.destination()} failed ({problem}), attempt {attempt}/{self.attempts}")
            if attempt < self.attempts:
                time.sleep(delay)
                delay *= 2
        log.error(f"alert not delivered to {self.destination()} after {self.attempts} attempts: {payload['text']}")
        return False
