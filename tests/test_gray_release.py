"""From registry to production through the real assets, registry and service (tiny models).

One scenario for the module (training is the expensive part), each test asserts one property of it:
  v1  a good detector (the session's `good_detector`) fine-tuned on batch_a, the first model: champion at once
  batch_b lands: scored by the champion (no canary), then v2 (1 epoch from scratch) is trained on
      a+b; under a lenient gate it passes offline and becomes canary at 10 %
  the service starts (refresh 1 s) and a client sends requests every 0.5 s until the end
  batch_c lands under a strict policy: scored by both, v2 regresses against v1 -> rolled back
  v3 passes offline (lenient again) -> canary; batches e, f, g each hold -> 50 %, 100 %, champion;
      a second service started mid-rollout comes back at the same step
  v4 (batch_h) becomes canary and a person rolls it back with `yolo-assets rollout rollback`
"""

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
from helpers import TINY_TRAINING, Home
from PIL import Image

from resources.model_policy import ModelPolicy
from yolo_assets.ops.cli import main
from yolo_assets.ops.services import DetectionService
from yolo_assets.release.rollout import RolloutState, RolloutStore

pytestmark = pytest.mark.slow

TRAIN = {**TINY_TRAINING, "imgsz": 96, "batch": 16}
# One epoch from a well-trained detector (conftest's `good_detector`): a champion that a 1-epoch model
# from scratch is measurably worse than on fresh data.
FINE_TUNE = {**TRAIN, "imgsz": 160, "batch": 4, "warmup_epochs": 0.0}
STEPS = [10, 50, 100]


def policy(**changes: Any) -> ModelPolicy:
    # drift_tolerance 1: a drift would retrain, and a new model would replace the canary under test.
    base = {"min_new_images": 1, "first_model_min_map50": 0.0, "promotion_tolerance": 1.0, "max_class_ap_drop": 1.0,
            "rollout_steps": STEPS, "drift_tolerance": 1.0}
    return ModelPolicy(**{**base, **changes})


LENIENT = policy()
STRICT = policy(min_new_images=10_000, promotion_tolerance=0.0, max_class_ap_drop=0.0)
# Holding batches must not retrain: a training would offer a new canary mid-rollout.
HOLDING = policy(min_new_images=10_000)


def train_config(settings: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {"trained_weights": {"config": settings}}}


@dataclass
class Answer:
    sent: float
    received: float
    status: int
    version: str | None
    route: str | None


class Client(threading.Thread):
    """Sends a detection request every `PAUSE_S` until stopped; keeps every answer. One request per
    refresh interval sees every swap (each rollout step lasts tens of seconds); each answer costs the
    service ~20 ms of CPU, so back to back they kept a core busy for the whole scenario (and the busier
    the machine, the longer the scenario and the more requests)."""

    PAUSE_S = 1.0

    def __init__(self, url: str, picture: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.picture, self.answers, self.stopped = url, picture, list[Answer](), threading.Event()

    def run(self) -> None:
        session, n = requests.Session(), 0
        while not self.stopped.is_set():
            n += 1
            sent = time.time()
            try:
                response = session.post(f"{self.url}/v1/detect", files={"file": ("a.jpg", self.picture, "image/jpeg")},
                                        headers={"X-Request-Key": f"client-{n}"}, timeout=30)
                body = response.json()
                self.answers.append(Answer(sent, time.time(), response.status_code, body.get("version"), body.get("route")))
            except requests.RequestException:
                self.answers.append(Answer(sent, time.time(), 0, None, None))
            self.stopped.wait(self.PAUSE_S)


def rollout_timeline(home: Home) -> list[tuple[float, dict[str, str]]]:
    """(time, live route -> version) of every rollout change, from model_rollout's materialisations. The
    time is the state's `changed_at`, taken before its first write: the service may read a new state
    before the step ends and its materialisation is stored (a second or more later on a busy machine)."""
    records = home.instance.fetch_materializations(dg.AssetKey("model_rollout"), limit=1000, ascending=True).records
    timeline = []
    for record in records:
        metadata = {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}  # type: ignore[union-attr]
        live = {"champion": metadata["champion"], **({"canary": metadata["canary"]} if metadata["canary_percent"] else {})}
        timeline.append((metadata["changed_at"], live))
    return timeline


@dataclass
class Release(Home):
    states: dict[str, RolloutState] = field(default_factory=dict)
    service: DetectionService | None = None
    client: Client | None = None
    restarted: dict[str, Any] = field(default_factory=dict)
    routes: list[tuple[str, str]] = field(default_factory=list)
    manual: dict[str, Any] = field(default_factory=dict)
    picture: bytes = b""

    def store(self) -> RolloutStore:
        mlflow = self.resource("mlflow")
        return RolloutStore(mlflow.client(), mlflow.model_name)

    def step(self, name: str, policy: ModelPolicy, batch: str, images: int, seed: int, settings: dict[str, Any] = TRAIN) -> None:
        self.redefine(model_policy=policy)
        self.land(batch, images, seed)
        self.tick(train_config(settings), automation=True, name=name)
        self.states[name] = self.store().read()


def first_picture(home: Home, batch: str) -> bytes:
    image = sorted((home.landing / batch / "images").iterdir())[0]
    with Image.open(image) as opened:
        buffer = io.BytesIO()
        opened.convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


ONE_CALLER_REQUESTS = 20


def random_key_routes(url: str, picture: bytes, count: int) -> list[tuple[str, str]]:
    """(route, version) of `count` requests: the last `ONE_CALLER_REQUESTS` with one fixed key, the others
    with random keys."""
    session, routes = requests.Session(), []
    for n in range(count):
        key = uuid.uuid4().hex if n < count - ONE_CALLER_REQUESTS else "one-caller"
        body = session.post(f"{url}/v1/detect", files={"file": ("a.jpg", picture, "image/jpeg")}, headers={"X-Request-Key": key}, timeout=30).json()
        routes.append((body["route"], body["version"]))
    return routes


def manual_rollout(home: Path) -> dict[str, Any]:
    """What a person sees and does with the CLI while v4 is the canary."""
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(["--home", str(home), "rollout", "status", "--json"])
    before = json.loads(out.getvalue())
    refused = main(["--home", str(home), "rollout", "rollback"])  # no reason: one line, exit 2
    out = io.StringIO()
    with redirect_stdout(out):
        rolled_back = main(["--home", str(home), "rollout", "rollback", "--reason", "operator: scratches missed on line 3"])
    again = main(["--home", str(home), "rollout", "promote"])  # nothing left to promote: the run fails
    return {"status": status, "before": before, "refused": refused, "rolled_back": rolled_back, "output": out.getvalue(), "again": again}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, good_detector: Path) -> Iterator[Release]:
    path = tmp_path_factory.mktemp("release") / "home"
    r = Release.create(path, model_policy=LENIENT)
    try:
        r.step("v1", LENIENT, "batch_a", 96, 1, {**FINE_TUNE, "model": str(good_detector)})
        r.step("v2", LENIENT, "batch_b", 24, 2)
        r.picture = first_picture(r, "batch_a")
        r.service = DetectionService(path, path / "serve.log", env={"YOLO_ASSETS_SERVE_REFRESH_S": "1"}).start()
        r.client = Client(r.service.url, r.picture)
        r.client.start()
        r.routes = random_key_routes(r.service.url, r.picture, 320)
        r.step("regressed", STRICT, "batch_c", 24, 3)
        r.step("v3", LENIENT, "batch_d", 24, 4)
        r.step("held1", HOLDING, "batch_e", 12, 5)
        restarted = DetectionService(path, path / "serve2.log", env={"YOLO_ASSETS_SERVE_REFRESH_S": "1"}).start()
        r.restarted = requests.get(f"{restarted.url}/readyz", timeout=10).json()["rollout"]
        restarted.stop()
        r.step("held2", HOLDING, "batch_f", 12, 6)
        r.step("promoted", HOLDING, "batch_g", 12, 7)
        r.step("v4", LENIENT, "batch_h", 12, 8)
        r.manual = manual_rollout(path)
        time.sleep(3)  # the service's next refreshes
        yield r
    finally:
        for thread in (r.client,):
            if thread:
                thread.stopped.set()
                thread.join(60)
        if r.service:
            r.service.stop()
        r.close()


def test_the_first_model_is_champion_and_the_next_passing_one_a_canary(release: Release) -> None:
    assert release.states["v1"].champion == "1" and release.states["v1"].canary is None
    v2 = release.states["v2"]
    assert (v2.champion, v2.canary, v2.canary_percent) == ("1", "2", 10)
    fresh_b = release.metadata("fresh_batch_evaluation", "batch_b")
    assert fresh_b["scored"] and fresh_b["champion_version"] == "1" and "canary_version" not in fresh_b


def test_a_model_is_never_scored_on_a_batch_it_was_trained_on(release: Release) -> None:
    mlflow = release.resource("mlflow")
    for record in release.instance.fetch_materializations(dg.AssetKey("fresh_batch_evaluation"), limit=100).records:
        scored = record.asset_materialization
        assert scored is not None
        for route in ("champion", "canary"):
            version = scored.metadata.get(f"{route}_version")
            if version is not None:
                lineage = json.loads(mlflow.client().get_model_version(mlflow.model_name, version.value).tags["batches"])
                assert scored.partition not in lineage, (route, version.value, scored.partition)


def test_a_canary_worse_on_fresh_data_is_rolled_back_within_one_batch(release: Release) -> None:
    fresh_c = release.metadata("fresh_batch_evaluation", "batch_c")
    assert fresh_c["canary_version"] == "2" and fresh_c["canary_verdict"] == "regresses"
    assert fresh_c["canary_mAP50-95"] < fresh_c["champion_mAP50-95"]  # really worse on the new data
    state = release.states["regressed"]
    assert (state.champion, state.canary, state.event) == ("1", None, "rolled_back")
    assert "batch_c" in state.reason
    tags = release.resource("mlflow").client().get_model_version("yolo-defect-detector", "2").tags
    assert "rolled_back" in tags["rollout"]


def test_a_canary_that_holds_is_champion_after_every_step(release: Release) -> None:
    assert release.states["v3"].canary == "3" and release.states["v3"].canary_percent == 10
    assert release.states["held1"].canary_percent == 50
    assert release.states["held2"].canary_percent == 100
    promoted = release.states["promoted"]
    assert (promoted.champion, promoted.canary, promoted.previous) == ("3", None, "1")
    assert [e.split("@")[0] for e in promoted.evidence] == ["batch_e", "batch_f", "batch_g"]
    events = [m.asset_materialization.metadata["event"].value
              for m in release.instance.fetch_materializations(dg.AssetKey("model_rollout"), limit=100).records if m.asset_materialization]
    assert events[::-1][:7] == ["promoted", "canary_started", "rolled_back", "canary_started", "canary_advanced", "canary_advanced", "promoted"]


def test_a_restarted_service_comes_back_at_the_same_step(release: Release) -> None:
    assert release.restarted == {"champion": "1", "canary": "3", "canary_percent": 50}


def test_no_request_failed_and_every_answer_came_from_a_live_version(release: Release) -> None:
    assert release.client is not None
    answers, timeline = release.client.answers, rollout_timeline(release)
    # The client asked throughout: from the first canary's step (before its rollback) to after the last change.
    assert answers[0].received < timeline[2][0] and answers[-1].sent > timeline[-1][0], (answers[:1], answers[-1:], timeline)
    assert [a for a in answers if a.status != 200] == []
    lag = 1 + 4.0  # refresh interval + slack: a removed version may answer until the service's next refresh
    for answer in answers:
        live_then = [
            live for i, (changed, live) in enumerate(timeline)
            if changed <= answer.received and (i + 1 == len(timeline) or timeline[i + 1][0] + lag >= answer.sent)
        ]
        assert any(live.get(answer.route or "") == answer.version for live in live_then), (answer, live_then)
    served = {(a.route, a.version) for a in answers}
    assert {("champion", "1"), ("canary", "3"), ("champion", "3")} <= served
    final = requests.get(f"{release.service.url}/readyz", timeout=10).json()  # type: ignore[union-attr]
    # v4 may or may not have answered: it was rolled back by hand seconds after it started, possibly while
    # the service was still loading it (then it never takes traffic); the live-version check above holds either way.
    assert final["rollout"] == {"champion": "3", "canary_percent": 0}


def test_routing_shares_and_sticky_keys_at_ten_percent(release: Release) -> None:
    random_keys, one_key = release.routes[:-ONE_CALLER_REQUESTS], release.routes[-ONE_CALLER_REQUESTS:]
    canary = sum(1 for route, version in random_keys if route == "canary")
    assert all(version == ("2" if route == "canary" else "1") for route, version in release.routes)
    from scipy.stats import binom  # here: every pytest worker imports this module to collect it (~0.6 CPU-s)

    low, high = binom.ppf(0.0005, len(random_keys), 0.1), binom.ppf(0.9995, len(random_keys), 0.1)
    assert low <= canary <= high, (canary, low, high)
    assert len(set(one_key)) == 1  # one caller keeps one model during a step


def test_prometheus_metrics_count_requests_by_version_and_route(release: Release) -> None:
    assert release.service is not None
    url = release.service.url
    answers = [requests.post(f"{url}/v1/detect", files={"file": ("a.jpg", release.picture, "image/jpeg")},
                             headers={"X-Request-Key": "sticky"}, timeout=30).json() for _ in range(5)]
    assert {(a["route"], a["version"]) for a in answers} == {("champion", "3")}
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert 'yolo_assets_serve_requests_total{model_version="3",route="champion",status="200"}' in metrics


def test_a_person_rolls_back_the_canary_with_the_cli(release: Release) -> None:
    manual = release.manual
    assert manual["status"] == 0 and manual["before"]["canary"] == "4" and manual["before"]["canary_percent"] == 10
    assert manual["refused"] == 2  # a rollback needs a reason
    assert manual["rolled_back"] == 0 and "canary:   none" in manual["output"]
    assert "by hand: operator: scratches missed on line 3" in manual["output"]
    assert manual["again"] == 1  # no canary to promote: the model_rollout run fails, nothing changes
    state = release.store().read()
    assert (state.champion, state.canary, state.event) == ("3", None, "rolled_back")
    latest = release.metadata("model_rollout")
    assert latest["event"] == "rolled_back" and "operator" in latest["reason"]
