"""Autofocus: measures against naive implementations, searches on the simulated microscope,
refusals, bad arguments, safety under device faults, auto_zscan and the pymmcore-plus route."""

from __future__ import annotations

import functools
import math
import re
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nanoro_optics import optics
from nanoro_optics.autofocus import (
    MEASURES,
    FocusNotFoundError,
    FocusSearchError,
    auto_zscan,
    find_focus,
    find_sample_range,
    focus_band,
    focus_score,
    tile_scores,
)
from nanoro_optics.autofocus.measures import noise_threshold
from nanoro_optics.hardware import (
    CameraTimeoutError,
    MockZStage,
    SimulatedCamera,
    StageLimitError,
    StagePositionError,
    StageTimeoutError,
)
from nanoro_optics.hardware.specimen_kinds import specimen_of_kind
from nanoro_optics.testing import (
    DeviceFault,
    FocusCurveCamera,
    ReversedStage,
    autofocus_scenarios,
    check_autofocus_contract,
    check_autofocus_scenario,
    focus_curves,
    specimens,
)
from nanoro_optics.testing.autofocus import AutofocusScenario, FocusCurveExample

OBJ = optics.OBJECTIVES["Nikon MRP70401"]
DOF = OBJ.depth_of_field()
PIXEL_UM = 6.5 / OBJ.magnification
FEATURE_PX = max(1.0, OBJ.lateral_resolution() / PIXEL_UM)
#: measures vs their naive forms: float64 arithmetic in a different order
NAIVE_RTOL = 1e-9
#: noise alone scores 1; the fuser's noise estimate reads a few per cent low
NOISE_SCORE_TOL = 0.15
#: find_focus on a flat specimen (the acceptance asks DoF/4)
FOCUS_TOL_UM = DOF / 4


# ------------------------------------------------------------------ naive measures


def _pad(g: np.ndarray, n: int) -> np.ndarray:
    return np.pad(g, n, mode="symmetric")  # scipy.ndimage's "reflect"


def _naive_energy(g: np.ndarray, measure: str, band_sigmas: tuple[float, float] | None) -> float:
    """Mean squared filter output over its white-noise gain, with explicit loops."""
    rows, cols = g.shape
    if measure == "normalized_variance":
        m = sum(g[i, j] for i in range(rows) for j in range(cols)) / g.size
        return sum((g[i, j] - m) ** 2 for i in range(rows) for j in range(cols)) / g.size
    if measure == "brenner":
        tot = sum((g[i, j + 2] - g[i, j]) ** 2 for i in range(rows) for j in range(cols - 2))
        return tot / (rows * (cols - 2)) / 2.0
    p = _pad(g, 1)
    if measure == "tenengrad":
        tot = 0.0
        for i in range(rows):
            for j in range(cols):
                w = p[i : i + 3, j : j + 3]
                gx = (w[:, 2] - w[:, 0]) @ np.array([1.0, 2.0, 1.0])
                gy = (w[2, :] - w[0, :]) @ np.array([1.0, 2.0, 1.0])
                tot += gx * gx + gy * gy
        return tot / g.size / 24.0
    if measure == "laplacian":
        lap = np.array(
            [
                [
                    p[i, j + 1]
                    + p[i + 2, j + 1]
                    + p[i + 1, j]
                    + p[i + 1, j + 2]
                    - 4 * p[i + 1, j + 1]
                ]
                for i in range(rows)
                for j in range(cols)
            ]
        ).ravel()
        return float(np.mean((lap - lap.mean()) ** 2)) / 20.0
    assert band_sigmas is not None
    kernels = []
    for s in band_sigmas:
        r = int(4.0 * s + 0.5)  # scipy's truncate=4
        x = np.arange(-r, r + 1)
        k = np.exp(-0.5 * (x / s) ** 2)
        kernels.append(k / k.sum())
    r = len(kernels[1]) // 2
    k1 = np.zeros(2 * r + 1)
    k1[r - len(kernels[0]) // 2 : r + len(kernels[0]) // 2 + 1] = kernels[0]
    kernel = np.outer(k1, k1) - np.outer(kernels[1], kernels[1])
    p = _pad(g, r)
    out = np.array(
        [
            [np.sum(p[i : i + 2 * r + 1, j : j + 2 * r + 1] * kernel) for j in range(cols)]
            for i in range(rows)
        ]
    )
    return float(np.mean(out**2)) / float(np.sum(kernel**2))


@pytest.mark.parametrize("measure", MEASURES)
def test_measures_equal_their_naive_form(measure: str) -> None:
    rng = np.random.default_rng(3)
    g = rng.normal(100.0, 10.0, (24, 20)) + 50.0 * np.sin(np.arange(20) / 2.0)[None, :]
    band = focus_band(OBJ, pixel_um=PIXEL_UM * 0.5)
    sigmas = band.sigmas_px if measure == "bandpass" else None
    got = focus_score(g, measure=measure, band=band, noise_dn=2.0)
    assert got == pytest.approx(_naive_energy(g, measure, sigmas) / 4.0, rel=NAIVE_RTOL)


@pytest.mark.parametrize("measure", MEASURES)
def test_tiles_are_the_mean_over_their_pixels(measure: str) -> None:
    rng = np.random.default_rng(4)
    g = rng.normal(100.0, 10.0, (40, 37))
    band = focus_band(OBJ, pixel_um=PIXEL_UM)
    tiles = tile_scores(g, tile_px=16, measure=measure, band=band, noise_dn=3.0)
    assert tiles.shape == (2, 2)
    # the tiles' area-weighted mean is the whole frame's score (same filter, same pixels)
    w = np.outer([16, 24], [16, 21] if measure != "brenner" else [16, 19])
    whole = focus_score(g, measure=measure, band=band, noise_dn=3.0)
    assert float(np.sum(tiles * w) / w.sum()) == pytest.approx(whole, rel=NAIVE_RTOL)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("kind", ["uint16", "float32", "colour", "uint8"])
def test_noise_alone_scores_one_in_any_format(measure: str, kind: str) -> None:
    rng = np.random.default_rng(5)
    sigma = 6.0
    shape = (192, 192, 3) if kind == "colour" else (192, 192)
    frame = rng.normal(120.0, sigma, shape)
    frame = frame.astype(np.float32) if kind == "float32" else np.rint(frame)
    if kind in ("uint16", "colour"):
        frame = frame.astype(np.uint16)
    elif kind == "uint8":
        frame = frame.astype(np.uint8)
    band = focus_band(OBJ, pixel_um=PIXEL_UM)
    assert abs(focus_score(frame, measure=measure, band=band) - 1.0) < NOISE_SCORE_TOL
    # and a textured frame scores far above it, the same in 8 and 16 bits
    if kind == "uint8":
        from scipy import ndimage

        tex = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (192, 192)), 1.5)
        tex /= tex.std()  # detail on a scale noise does not have
        sharp = np.clip(np.rint(120 + 40 * tex + rng.normal(0, 3, tex.shape)), 0, 255)
        # the noise given: texture everywhere, as fine as the estimator's second
        # differences, passes for noise in one frame (searches take the median over
        # frames, mostly out of focus)
        s8 = focus_score(sharp.astype(np.uint8), measure=measure, band=band, noise_dn=3.0)
        s16 = focus_score(
            (sharp * 256).astype(np.uint16), measure=measure, band=band, noise_dn=768.0
        )
        assert s8 > 2 and s16 == pytest.approx(s8, rel=0.05)


def test_noise_threshold_is_rarely_exceeded_by_noise() -> None:
    rng = np.random.default_rng(6)
    band = focus_band(OBJ, pixel_um=PIXEL_UM, defocus_um=2.0)
    thr = noise_threshold("bandpass", band.sigmas_px, 16 * 16)
    tiles = np.concatenate(
        [
            tile_scores(
                rng.normal(0, 1, (128, 128)),
                tile_px=16,
                measure="bandpass",
                band=band,
                noise_dn=1.0,
            ).ravel()
            for _ in range(30)
        ]
    )
    assert tiles.max() < thr < 4 * np.quantile(tiles, 0.999)  # rare, yet not absurdly high


def test_measure_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="measure must be one of"):
        focus_score(np.zeros((8, 8)), measure="sharpness")
    with pytest.raises(TypeError, match="needs band=FocusBand"):
        focus_score(np.zeros((8, 8)), measure="bandpass")
    with pytest.raises(ValueError, match=r"at least 3 x 3 pixels, got shape \(2, 8\)"):
        focus_score(np.zeros((2, 8)))
    with pytest.raises(TypeError, match="integer or float dtype"):
        focus_score(np.zeros((8, 8), dtype=bool))
    with pytest.raises(ValueError, match=r"noise_dn must be > 0, got 0\.0"):
        focus_score(np.zeros((8, 8)), noise_dn=0.0)
    with pytest.raises(ValueError, match="objective 'Zeiss 63x' is unknown"):
        focus_band("Zeiss 63x", pixel_um=0.1)


# ------------------------------------------------------------------ simulated microscope


def _rig(kind: str, base_um: float, *, relief_um: float = 0.0, seed: int = 0, **cam):
    stage = MockZStage(limits_um=(-20.0, 200.0), position_um=0.0)
    spec = specimen_of_kind(
        kind, (64, 64), relief_um=relief_um, base_um=base_um, feature_px=FEATURE_PX, seed=seed
    )
    return stage, SimulatedCamera(stage, spec, objective=OBJ, seed=seed, **cam)


@pytest.mark.parametrize("kind", ["flat", "sparse", "low_contrast"])
def test_find_focus_on_flat_specimens(kind: str) -> None:
    for seed, focus in enumerate((13.3, 31.7)):
        stage, cam = _rig(kind, focus, seed=seed)
        res = find_focus(stage, cam, search_um=(0.0, 50.0), objective=OBJ)
        assert abs(res.z_um - focus) <= FOCUS_TOL_UM
        assert res.frames <= (50.0 / (DOF / 2)) / 3  # a third of a DoF/2 sweep
        assert stage.commanded_um[-1] == res.z_um and res.final_um == pytest.approx(res.z_um)
        assert len(res.curve) == res.frames and 0 < res.confidence <= 1
        assert 0.3 * DOF < res.width_um < 5 * DOF


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curve=focus_curves(search_um=(0.0, 60.0)))
def test_find_focus_on_focus_curves(curve) -> None:
    stage = MockZStage(limits_um=(-5.0, 80.0), position_um=70.0)
    cam = curve.make_camera(stage)
    res = find_focus(stage, cam, search_um=(0.0, 60.0), spacing_um=1.0)
    assert abs(res.z_um - curve.focus_um) <= 0.5  # a quarter of the implied DoF (2 um)
    assert min(stage.commanded_um) >= 0.0 and max(stage.commanded_um) <= 60.0


def test_blank_dark_and_out_of_range_fields_are_refused() -> None:
    stage, cam = _rig("blank", 20.0)
    with pytest.raises(FocusNotFoundError, match=r"best coarse score is 1\.\d+ x the noise") as e:
        find_focus(stage, cam, search_um=(0.0, 50.0), objective=OBJ)
    assert len(e.value.curve) == e.value.curve.z_um.size > 3 and e.value.at_edge is None
    assert e.value.best_score < 2 and e.value.noise_floor == 1.0
    with pytest.raises(FocusNotFoundError, match="no tile of the field shows structure"):
        find_sample_range(stage, cam, search_um=(0.0, 50.0), objective=OBJ)
    stage, cam = _rig("flat", 20.0, signal_e_per_ms=1e-6)  # dark
    with pytest.raises(FocusNotFoundError):
        find_focus(stage, cam, search_um=(0.0, 50.0), objective=OBJ)
    stage, cam = _rig("flat", 51.0)  # just above the range: sharpest on the top edge
    with pytest.raises(FocusNotFoundError, match="top edge of the search range") as e:
        find_focus(stage, cam, search_um=(0.0, 50.0), objective=OBJ)
    assert e.value.at_edge == "top" and e.value.best_score > 10
    # refused: no move after the last frame (the stage is not sent to the edge as focus)
    assert stage.commanded_um[-1] == e.value.curve.commanded_um[-1]
    stage, cam = _rig("flat", -1.0)
    with pytest.raises(FocusNotFoundError, match="bottom edge") as e:
        find_focus(stage, cam, search_um=(0.0, 50.0), objective=OBJ)
    assert min(stage.commanded_um) >= 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"search_um": (50.0, 0.0)}, r"search_um must satisfy lo < hi, got \(50\.0, 0\.0\)"),
        ({"search_um": (0.0, math.nan)}, r"search_um\[1\] must be finite, got nan"),
        ({"search_um": (-30.0, 50.0)}, r"search_um=\(-30\.0, 50\.0\) is outside the stage limits"),
        ({"search_um": (0.0, 50.0), "spacing_um": 0.0}, "spacing_um must be > 0, got 0.0"),
        ({"search_um": (0.0, 50.0), "objective": "Zeiss 63x"}, "'Zeiss 63x' is unknown; known"),
        ({"search_um": (0.0, 0.5)}, "less than two fine steps"),
        ({"search_um": (0.0, 200.0), "max_frames": 5}, "more than max_frames=5"),
        ({"search_um": (0.0, 50.0), "backlash_um": -1.0}, "backlash_um must be >= 0"),
    ],
)
@pytest.mark.parametrize("search", [find_focus, find_sample_range])
def test_bad_arguments_are_refused_before_motion(search, kwargs, match) -> None:
    stage, cam = _rig("flat", 20.0)
    kwargs = {"objective": OBJ, **kwargs}
    with pytest.raises((ValueError, TypeError)) as e:
        search(stage, cam, **kwargs)
    assert e.match(match)
    assert stage.log == [] and cam.snap_count == 0
    if "outside the stage limits" in match:
        assert isinstance(e.value, StageLimitError) and "(-20.0, 200.0)" in str(e.value)


def test_find_sample_range_reaches_the_extremes_of_a_tilted_specimen() -> None:
    # 4 DoF over the 10 um field: slopes inside the lens's acceptance cone (tan 40 deg)
    stage, cam = _rig("tilted", 15.0, relief_um=4 * DOF, seed=2)
    truth = cam.ground_truth().focus_height_um
    rng_ = find_sample_range(stage, cam, search_um=(0.0, 50.0), objective=OBJ)
    assert truth.max() - DOF / 2 <= rng_.top_um <= truth.max() + 1.5 * DOF
    assert truth.min() - 1.5 * DOF <= rng_.bottom_um <= truth.min() + DOF / 2
    assert rng_.frames <= (50.0 / (DOF / 2)) / 2
    assert rng_.height_map_um.shape == (4, 4) and 0 < rng_.confidence <= 1
    assert min(stage.commanded_um) >= 0.0 and max(stage.commanded_um) <= 50.0


def test_backlash_every_frame_is_approached_from_above_inside_the_range() -> None:
    stage, cam = _rig("flat", 21.0)
    stage.backlash_um = 0.3
    res = find_focus(stage, cam, search_um=(0.0, 50.0), objective=OBJ, backlash_um=0.5)
    assert max(stage.commanded_um) <= 50.0 and abs(res.z_um - 21.0) <= FOCUS_TOL_UM
    # readings equal the commands: no upward approach left the play in
    assert np.allclose(res.curve.z_um, res.curve.commanded_um, atol=1e-9)


# ------------------------------------------------------------------ faults


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=autofocus_scenarios())
# a stage that does not settle leaves two frames at one z beside the peak: the peak fit
# warned of a poorly conditioned least-squares fit, which escaped as the error
@example(
    sc=AutofocusScenario(
        curve=FocusCurveExample(focus_um=4.0, width_um=2.0, contrast_dn=10.0, noise_dn=1.0, seed=0),
        fault=DeviceFault(kind="settling", at=1, size=0.5),
        search_um=(0.0, 20.0),
        limits_um=(0.0, 20.0),
        start_um=0.0,
    )
)
def test_find_focus_is_safe_under_device_faults(sc) -> None:
    out = check_autofocus_scenario(functools.partial(find_focus, spacing_um=1.0), sc)
    if isinstance(out, FocusSearchError):
        assert out.curve is out.partial and len(out.curve) <= sc.fault.at + 40


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=autofocus_scenarios())
def test_find_sample_range_is_safe_under_device_faults(sc) -> None:
    check_autofocus_scenario(functools.partial(find_sample_range, spacing_um=1.0), sc)


def test_autofocus_contract_passes_and_catches_a_careless_search() -> None:
    check_autofocus_contract(functools.partial(find_focus, spacing_um=1.0))

    def careless(stage, camera, *, search_um, timeout_s):
        stage.move_to_um(search_um[0] - 1.0)  # below the range
        stage.wait_until_idle()

    report = check_autofocus_contract(careless, kinds=("none",), at=(1,), raise_on_failure=False)
    assert not report.ok and "inside_range" in report.message()


def test_stage_fault_stops_and_keeps_the_curve() -> None:
    stage = MockZStage(limits_um=(-5.0, 80.0), position_um=0.0, fail_on_move=5)
    cam = FocusCurveCamera(stage, focus_um=30.0)
    with pytest.raises(FocusSearchError, match="stage fault") as e:
        find_focus(stage, cam, search_um=(0.0, 60.0), spacing_um=1.0)
    assert e.value.stage_stopped and stage.stop_count == 1 and len(e.value.curve) == 4
    assert [ev.kind for ev in stage.log].count("move") == 5


#: real-time deadline of the blocking-device tests, and how late the search may raise
#: (thread start, the stop() after a stage fault, a loaded machine)
BLOCK_TIMEOUT_S = 0.2
BLOCK_SLACK_S = 1.0


class _BlockingSnapCamera(FocusCurveCamera):
    """A focus-curve camera whose snap number ``block_on`` blocks until released."""

    def __init__(self, *args, block_on: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.block_on, self.snaps, self.gate = block_on, 0, threading.Event()

    def snap(self, timeout_s=None):
        self.snaps += 1
        if self.snaps == self.block_on:
            self.gate.wait(30.0)  # ignores timeout_s, as a hung SDK call does
        return super().snap(timeout_s)


class _BlockingWaitStage(MockZStage):
    """A stage whose wait after accepted move ``block_on`` blocks until released."""

    def __init__(self, *, block_on: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.block_on, self.gate = block_on, threading.Event()

    def wait_until_idle(self, timeout_s=None) -> None:
        if self.move_count == self.block_on:
            self.gate.wait(30.0)  # ignores timeout_s; the simulated clock does not move
        super().wait_until_idle(timeout_s)


def test_a_blocking_snap_raises_on_time_with_the_curve_so_far() -> None:
    stage = MockZStage(limits_um=(-5.0, 80.0), position_um=0.0)
    cam = _BlockingSnapCamera(stage, focus_um=30.0, block_on=5)
    t0 = time.perf_counter()
    try:
        with pytest.raises(FocusSearchError, match="frame 4 of the focus search failed") as e:
            find_focus(stage, cam, search_um=(0.0, 60.0), spacing_um=1.0, timeout_s=BLOCK_TIMEOUT_S)
        took = time.perf_counter() - t0
    finally:
        cam.gate.set()
    assert isinstance(e.value.__cause__, CameraTimeoutError)
    assert "real time" in str(e.value.__cause__)
    assert took < BLOCK_TIMEOUT_S + BLOCK_SLACK_S
    assert len(e.value.curve) == 4 and e.value.curve is e.value.partial
    assert not e.value.stage_stopped  # a camera fault: the stage is healthy, left in place


def test_a_blocking_stage_wait_raises_on_time_and_stops_the_stage() -> None:
    for search in (find_focus, find_sample_range):
        stage = _BlockingWaitStage(limits_um=(-5.0, 80.0), position_um=0.0, block_on=4)
        cam = FocusCurveCamera(stage, focus_um=30.0)
        t0 = time.perf_counter()
        try:
            with pytest.raises(FocusSearchError, match="stage fault") as e:
                search(stage, cam, search_um=(0.0, 60.0), spacing_um=1.0, timeout_s=BLOCK_TIMEOUT_S)
            took = time.perf_counter() - t0
        finally:
            stage.gate.set()
        assert isinstance(e.value.__cause__, StageTimeoutError), search
        assert "real time" in str(e.value.__cause__)
        assert took < BLOCK_TIMEOUT_S + BLOCK_SLACK_S, search
        assert len(e.value.curve) == 3 and e.value.stage_stopped and stage.stop_count == 1
        assert [ev.kind for ev in stage.log].count("move") == 4  # no move after the fault


def test_a_reversed_stage_is_stopped_after_the_overshoot() -> None:
    # the overshoot's reading is checked too: a stage that moves the wrong way is stopped
    # after its first move below the search range, before any second move
    stage = ReversedStage(limits_um=(-80.0, 80.0), position_um=0.0, reversed_on_move=1)
    cam = FocusCurveCamera(stage, focus_um=30.0)
    with pytest.raises(FocusSearchError, match="below the bottom of the search range") as e:
        find_focus(stage, cam, search_um=(0.0, 60.0), spacing_um=1.0, backlash_um=0.5)
    assert isinstance(e.value.__cause__, StagePositionError) and e.value.stage_stopped
    assert [ev.kind for ev in stage.log].count("move") == 1 and len(e.value.curve) == 0


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specimens(shape=(24, 24), relief_um=st.floats(0.0, 5.0), base_um=10.0))
def test_specimen_strategy_gives_valid_specimens(spec) -> None:
    assert spec.bottom_um >= 10.0 - 1e-9 and spec.shape == (24, 24)


# ------------------------------------------------------------------ auto_zscan, mmcore


def test_auto_zscan_covers_the_found_range() -> None:
    stage, cam = _rig("tilted", 15.0, relief_um=4 * DOF, seed=1)
    found = []
    stack = auto_zscan(stage, cam, search_um=(0.0, 50.0), objective=OBJ, on_range=found.append)
    rng_ = found[0]
    assert stack.complete and stack.plan is not None
    pos = stack.plan.positions_um()
    assert pos.max() >= rng_.top_um and pos.min() <= rng_.bottom_um and pos.min() >= 0.0
    assert np.max(np.diff(-pos)) <= DOF + 1e-9
    with pytest.raises(ValueError, match="outside search_um"):
        auto_zscan(stage, cam, search_um=(14.0, 50.0), objective=OBJ)


def test_mmcore_adapters_and_useq_plan() -> None:
    pytest.importorskip("pymmcore_plus")
    useq = pytest.importorskip("useq")
    from nanoro_optics.mmcore import MMCoreCamera, MMCoreZStage, check_mda_sequence, simulated_core
    from nanoro_optics.zscan import plan_for_sample

    mock, cam = _rig("tilted", 15.0, relief_um=4 * DOF, seed=3)
    core = simulated_core(mock, cam)
    stage = MMCoreZStage(core, limits_um=mock.limits_um)
    res = find_focus(stage, MMCoreCamera(core), search_um=(0.0, 50.0), objective=OBJ)
    truth = cam.ground_truth().focus_height_um
    assert truth.min() - DOF <= res.z_um <= truth.max() + DOF
    rng_ = find_sample_range(stage, MMCoreCamera(core), search_um=(0.0, 50.0), objective=OBJ)
    plan = plan_for_sample(rng_.top_um, rng_.bottom_um, objective=OBJ)
    seq = useq.MDASequence(stage_positions=[(0.0, 0.0, plan.start_um)], z_plan=plan.to_useq())
    check_mda_sequence(seq, limits_um=mock.limits_um, objective=OBJ)
    assert min(mock.commanded_um) >= 0.0


def test_demo_auto_range_reports_found_and_true(capsys: pytest.CaptureFixture[str]) -> None:
    from nanoro_optics.cli import main

    assert main(["demo", "--auto-range", "--size", "64", "--relief-um", "6"]) == 0
    out = capsys.readouterr().out
    assert "top              found" in out and "bottom           found" in out
    errors = [float(x) for x in re.findall(r"\(([+-]\d+\.\d+) depth of field\)", out)]
    assert len(errors) == 2 and all(abs(e) <= 1.5 for e in errors)
