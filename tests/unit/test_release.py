"""The gray release: the rollout state machine, request routing, the detection service's model pool, and
the picture decoding every detection request goes through. Where the state lives (the MLflow registry)
is tests/test_release_state.py."""

import base64
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from scipy.stats import binom

from yolo_assets.detector.inference import BadImage, decode_picture, picture_bytes
from yolo_assets.release.rollout import (
    CANARY,
    CHAMPION,
    RolloutState,
    check_steps,
    hold,
    offer,
    promote,
    roll_back,
    withdraw,
)
from yolo_assets.serving.models import ModelPool, route_for

STEPS = (10, 50, 100)


def canary_running(champion: str = "1", canary: str = "2") -> RolloutState:
    return offer(offer(RolloutState(), champion, STEPS), canary, STEPS)


# --- the state machine ---------------------------------------------------------------------------


def test_the_first_model_is_promoted_at_once() -> None:
    state = offer(RolloutState(), "1", STEPS)
    assert (state.champion, state.canary, state.previous, state.event) == ("1", None, None, "promoted")
    assert state.canary_percent == 0 and state.live() == {CHAMPION: "1"}


def test_steps_of_only_100_promote_at_once_with_the_old_champion_as_previous() -> None:
    state = offer(offer(RolloutState(), "1", (100,)), "2", (100,))
    assert (state.champion, state.canary, state.previous, state.event) == ("2", None, "1", "promoted")
    assert state.live() == {CHAMPION: "2"}


def test_a_challenger_becomes_canary_at_the_first_step() -> None:
    state = canary_running()
    assert (state.champion, state.canary, state.step, state.event) == ("1", "2", 0, "canary_started")
    assert state.canary_percent == 10
    assert state.live() == {CHAMPION: "1", CANARY: "2"}


def test_holding_moves_one_step_per_batch_then_promotes_with_the_old_champion_as_previous() -> None:
    state = canary_running()
    state = hold(state, "b1@v1")
    assert (state.step, state.canary_percent, state.evidence, state.event) == (1, 50, ("b1@v1",), "canary_advanced")
    state = hold(state, "b2@v1")
    assert (state.step, state.canary_percent, state.canary) == (2, 100, "2")
    assert state.live() == {CHAMPION: "1", CANARY: "2"}
    state = hold(state, "b3@v1")
    assert (state.champion, state.canary, state.previous, state.event) == ("2", None, "1", "promoted")
    assert state.evidence == ("b1@v1", "b2@v1", "b3@v1") and state.canary_percent == 0
    assert state.live() == {CHAMPION: "2"}
    assert [entry["event"] for entry in state.history] == ["promoted", "canary_started", "canary_advanced", "canary_advanced", "promoted"]


def test_a_regression_rolls_the_canary_back_to_no_traffic() -> None:
    state = roll_back(hold(canary_running(), "b1@v1"), "mAP50-95 dropped")
    assert (state.champion, state.canary, state.step, state.evidence) == ("1", None, 0, ())
    assert state.canary_percent == 0 and state.live() == {CHAMPION: "1"}
    assert state.event == "rolled_back" and state.reason == "canary 2 rolled back: mAP50-95 dropped"


def test_a_new_offer_replaces_a_running_canary_at_the_first_step() -> None:
    state = offer(hold(canary_running(), "b1@v1"), "3", STEPS)
    assert (state.champion, state.canary, state.step, state.evidence) == ("1", "3", 0, ())
    assert "replaces canary 2" in state.reason and state.live() == {CHAMPION: "1", CANARY: "3"}


def test_promoting_the_champion_again_keeps_previous() -> None:
    state = promote(offer(offer(RolloutState(), "1", (100,)), "2", (100,)), "2", "again")
    assert (state.champion, state.previous) == ("2", "1")


@pytest.mark.parametrize("steps", [[50, 10], [10, 50], [0, 100], [], [50, 50, 100], [10, 150]])
def test_check_steps_refuses_steps_that_do_not_rise_to_100(steps: list[int]) -> None:
    with pytest.raises(ValueError, match="rollout_steps"):
        check_steps(steps)


@pytest.mark.parametrize("steps", [[10, 50, 100], [100]])
def test_check_steps_accepts_rising_steps_ending_at_100(steps: list[int]) -> None:
    assert check_steps(steps) == tuple(steps)


# --- the store on a real MLflow registry --------------------------------------------------------


def test_a_tainted_champion_hands_its_traffic_to_the_clean_replacement_and_is_not_kept_as_previous() -> None:
    state = offer(offer(RolloutState(), "1", (100,)), "2", (100,))  # champion 2, previous 1
    withdrawn = withdraw(state, {"2"}, "1", "version 2 learned from retracted b")
    assert (withdrawn.champion, withdrawn.canary, withdrawn.previous, withdrawn.event) == ("1", None, None, "withdrawn")
    assert withdrawn.reason == "version 2 learned from retracted b"


def test_a_tainted_canary_is_rolled_back_and_a_tainted_previous_forgotten() -> None:
    state = offer(offer(offer(RolloutState(), "1", (100,)), "2", (100,)), "3", STEPS)  # champion 2, previous 1, canary 3
    withdrawn = withdraw(state, {"1", "3"}, "2", "retracted")
    assert (withdrawn.champion, withdrawn.canary, withdrawn.previous, withdrawn.canary_percent) == ("2", None, None, 0)


def test_a_clean_canary_replacing_a_tainted_champion_takes_all_traffic() -> None:
    withdrawn = withdraw(hold(canary_running(), "b1@v1"), {"1"}, "2", "retracted")
    assert (withdrawn.champion, withdrawn.canary, withdrawn.live()) == ("2", None, {CHAMPION: "2"})


def test_a_tainted_champion_without_a_replacement_keeps_serving_and_untainted_states_do_not_change() -> None:
    state = canary_running()
    assert withdraw(state, {"1"}, None, "retracted") == state
    assert withdraw(state, {"7"}, "5", "retracted") == state



# --- routing and the model pool -----------------------------------------------------------------


def test_a_ten_percent_canary_gets_a_binomial_share_of_random_keys() -> None:
    rng = random.Random(20240601)
    keys = [f"{rng.getrandbits(64):016x}" for _ in range(1000)]
    canary = sum(route_for(key, 10)[0] == CANARY for key in keys)
    low, high = binom.ppf(0.0005, 1000, 0.1), binom.ppf(0.9995, 1000, 0.1)
    assert low <= canary <= high


def test_the_same_key_always_meets_the_same_route() -> None:
    for key in (f"client-{n}" for n in range(200)):
        assert len({route_for(key, 37.5) for _ in range(3)}) == 1
        assert route_for(key, 37.5)[1] == key


def test_zero_percent_never_and_100_percent_always_routes_to_the_canary() -> None:
    keys = [f"key-{n}" for n in range(500)]
    assert all(route_for(key, 0)[0] == CHAMPION for key in keys)
    assert all(route_for(key, 100)[0] == CANARY for key in keys)
    assert route_for(None, 100)[1]  # no key: a fresh random one


@dataclass
class FakeModel:
    version: str


@pytest.fixture
def no_warming(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("yolo_assets.serving.models.warm", lambda model, imgsz=640: None)


class FakeRegistry:
    """The rollout state a test sets, read by the pool as often as it likes; loads are recorded."""

    def __init__(self, state: RolloutState) -> None:
        self.state, self.loads = state, list[str]()
        self.during_load: dict[str, RolloutState] = {}
        """version -> the state a person sets while that version is being loaded."""

    def read(self) -> RolloutState:
        return self.state

    def load(self, version: str) -> FakeModel:
        self.loads.append(version)
        self.state = self.during_load.get(version, self.state)
        return FakeModel(version)

    def pool(self) -> ModelPool:
        return ModelPool(read_state=self.read, load_version=self.load, refresh_s=60)


def test_refresh_loads_only_new_versions_and_keeps_the_loaded_ones(no_warming: None) -> None:
    champion_only = offer(RolloutState(), "1", STEPS)
    with_canary = offer(champion_only, "2", STEPS)
    advanced = hold(with_canary, "b1@v1")
    promoted = hold(hold(advanced, "b2@v1"), "b3@v1")
    registry = FakeRegistry(champion_only)
    pool = registry.pool()

    assert pool.refresh() and registry.loads == ["1"]
    first = pool.live.models[CHAMPION].model if pool.live else None
    registry.state = with_canary
    assert pool.refresh() and registry.loads == ["1", "2"]
    assert pool.live and pool.live.models[CHAMPION].model is first
    canary_model = pool.live.models[CANARY].model
    assert not pool.refresh() and registry.loads == ["1", "2"]  # nothing changed
    registry.state = advanced
    assert pool.refresh() and registry.loads == ["1", "2"]  # 10% -> 50%: same models, a new share
    assert pool.live and pool.live.state.canary_percent == 50
    registry.state = promoted
    assert pool.refresh() and registry.loads == ["1", "2"]  # promoted: the canary's loaded model now serves as champion
    assert pool.live and set(pool.live.models) == {CHAMPION} and pool.live.models[CHAMPION].model is canary_model


def test_a_rollback_made_while_the_canary_loads_is_honoured_before_the_swap(no_warming: None) -> None:
    champion_only = offer(RolloutState(), "1", STEPS)
    with_canary = offer(champion_only, "2", STEPS)
    registry = FakeRegistry(champion_only)
    pool = registry.pool()
    pool.refresh()
    registry.state = with_canary
    registry.during_load["2"] = roll_back(with_canary, "regressed on b1")
    pool.refresh()
    assert pool.live is not None and set(pool.live.models) == {CHAMPION}  # version 2 never took traffic


def test_refresh_quietly_keeps_serving_when_the_registry_does_not_answer(no_warming: None) -> None:
    registry = FakeRegistry(offer(RolloutState(), "1", STEPS))
    pool = registry.pool()
    pool.refresh_quietly()
    live, error = pool.live, pool.last_error
    assert live is not None and error == ""

    def down() -> RolloutState:
        raise ConnectionError("registry down")

    pool.read_state = down
    pool.refresh_quietly()
    assert pool.live is live and pool.last_error == "ConnectionError: registry down"
    assert pool.live.pick("any")[1].model == FakeModel("1")


def test_live_pick_splits_keys_between_champion_and_a_loaded_canary(no_warming: None) -> None:
    pool = FakeRegistry(canary_running()).pool()
    pool.refresh()
    assert pool.live is not None
    picks = [pool.live.pick(f"k{n}") for n in range(300)]
    assert {route for route, _ in picks} == {CHAMPION, CANARY}
    assert all(model.version == {CHAMPION: "1", CANARY: "2"}[route] for route, model in picks)


# --- picture decoding ---------------------------------------------------------------------------


def encoded(image: Image.Image, format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def noise(mode: str, size: tuple[int, int], seed: int = 7) -> Image.Image:
    return Image.frombytes(mode, size, random.Random(seed).randbytes(size[0] * size[1] * len(mode)))


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show upright
    return encoded(Image.new("RGB", (40, 20), (200, 10, 10)), "JPEG", exif=exif)


PICTURES: dict[str, tuple[Callable[[], bytes], tuple[int, int]]] = {
    "jpeg": (lambda: encoded(noise("RGB", (32, 24)), "JPEG"), (32, 24)),
    "grey png": (lambda: encoded(Image.new("L", (30, 20), 128), "PNG"), (30, 20)),
    "16-bit png": (lambda: encoded(Image.new("I;16", (30, 20), 40000), "PNG"), (30, 20)),
    "cmyk jpeg": (lambda: encoded(Image.new("CMYK", (30, 20), (0, 50, 100, 0)), "JPEG"), (30, 20)),
    "exif-rotated jpeg": (rotated_jpeg, (20, 40)),
    "palette png": (lambda: encoded(Image.new("P", (30, 20), 3), "PNG"), (30, 20)),
    "rgba png": (lambda: encoded(Image.new("RGBA", (30, 20), (0, 0, 0, 0)), "PNG"), (30, 20)),
}


@pytest.mark.parametrize("kind", PICTURES)
def test_decode_picture_returns_upright_8_bit_rgb(kind: str) -> None:
    make, size = PICTURES[kind]
    image = decode_picture(make())
    assert image.mode == "RGB" and image.size == size


def test_a_16_bit_png_is_scaled_not_clipped() -> None:
    image = decode_picture(encoded(Image.new("I;16", (4, 4), 40000), "PNG"))
    assert image.getpixel((0, 0)) == (40000 >> 8,) * 3


def test_a_16_bit_png_really_is_16_bit() -> None:
    assert Image.open(io.BytesIO(encoded(Image.new("I;16", (4, 4), 40000), "PNG"))).mode == "I;16"


def valid_jpeg() -> bytes:
    return encoded(noise("RGB", (64, 64)), "JPEG", quality=95)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "zero-byte"),
        (b"this is not a picture at all" * 10, "not an image"),
        (valid_jpeg()[: len(valid_jpeg()) // 2], "truncated"),
    ],
    ids=["empty", "not an image", "truncated jpeg"],
)
def test_decode_picture_refuses_bad_bytes_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadImage, match=reason) as refused:
        decode_picture(data)
    assert not refused.value.too_large


def test_decode_picture_refuses_a_decompression_bomb_as_too_large() -> None:
    with pytest.raises(BadImage) as refused:
        decode_picture(encoded(Image.new("RGB", (20, 20)), "PNG"), max_pixels=100)
    assert refused.value.too_large and str(refused.value)
    assert decode_picture(encoded(Image.new("RGB", (10, 10)), "PNG"), max_pixels=100).size == (10, 10)


def test_picture_bytes_accepts_bytes_base64_a_data_uri_and_a_path(tmp_path: Path) -> None:
    data = valid_jpeg()
    text = base64.b64encode(data).decode()
    path = tmp_path / "picture.jpg"
    path.write_bytes(data)
    assert picture_bytes(data) == data
    assert picture_bytes(bytearray(data)) == data
    assert picture_bytes(text) == data
    assert picture_bytes(f"data:image/jpeg;base64,{text}") == data
    assert picture_bytes(str(path)) == data
    assert picture_bytes(path) == data


@pytest.mark.parametrize("garbage", ["not base64 at all!", "/no/such/picture.jpg", "data:image/jpeg;base64,%%%"])
def test_picture_bytes_refuses_garbage_text(garbage: str) -> None:
    with pytest.raises(BadImage, match="nor base64"):
        picture_bytes(garbage)


def test_picture_bytes_accepts_base64_of_a_small_png() -> None:
    data = encoded(noise("RGB", (12, 12), seed=20), "PNG")
    text = base64.b64encode(data).decode()
    assert len(text.split("/")[0]) > 255 and len(text) < 4096  # reads as one over-long file name
    assert picture_bytes(text) == data


# --- fresh-batch evidence: the canary's verdict, the drift check, drift as a retraining trigger --------


def fresh_scores(champion: float | None, canary: float | None, offline: float = 0.5) -> dict[str, Any]:
    def score(value: float, version: str) -> dict[str, Any]:
        return {"version": version, "mAP50": value, "mAP50-95": value, "offline_mAP50-95": offline,
                "per_class": {"scratch": {"ap50": value, "ap50_95": value}}}

    scores = {}
    if champion is not None:
        scores["champion"] = score(champion, "1")
    if canary is not None:
        scores["canary"] = score(canary, "2")
    return scores


def test_the_canary_verdict_is_the_promotion_rule_on_the_fresh_batch() -> None:
    from resources.model_policy import ModelPolicy
    from yolo_assets.assets.fresh import canary_verdict

    policy = ModelPolicy(promotion_tolerance=0.01, max_class_ap_drop=0.05)
    assert canary_verdict(fresh_scores(0.4, None), policy) == ("", [])
    assert canary_verdict(fresh_scores(0.4, 0.395), policy)[0] == "holds"
    verdict, reasons = canary_verdict(fresh_scores(0.4, 0.3), policy)
    assert verdict == "regresses" and any("mAP50-95" in reason for reason in reasons)


def test_fresh_data_drift_warns_below_the_offline_figure_minus_the_tolerance() -> None:
    import dagster as dg

    from resources.model_policy import ModelPolicy
    from yolo_assets.assets.fresh import drift_result

    policy = ModelPolicy(drift_tolerance=0.1)
    drifted = drift_result(fresh_scores(0.35, None, offline=0.5), policy)
    assert not drifted.passed and drifted.severity == dg.AssetCheckSeverity.WARN
    assert drift_result(fresh_scores(0.45, None, offline=0.5), policy).passed
    assert drift_result({}, policy).passed  # nothing scored: nothing to compare
