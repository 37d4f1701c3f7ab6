"""The library's own properties, driven by the nanoro_optics.testing strategies.

These run on every CI run, so the strategies a user imports are exercised against the real
zscan, acquire, fusion and beamtilt code (and stay honest about what "valid" means).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nanoro_optics import optics
from nanoro_optics.acquire import run_zscan
from nanoro_optics.hardware import AcquisitionError, StageFault, StageTimeoutError
from nanoro_optics.testing import (
    FocusStackExample,
    StageFaultSchedule,
    assert_plan_invariants,
    assert_positions_safe,
    assert_stack_consistent,
    beam_tilt_pairs,
    focus_stacks,
    objectives,
    stage_faults,
    zscan_limits,
    zscan_plans,
)
from nanoro_optics.zscan import SYNC_RTOL, ZScanLimits, ZScanPlan, plan_for_sample

#: A fused image's mean absolute error against the truth, as a fraction of the mean error
#: of the input frames: fusion must remove most of the defocus blur. Over 300 random
#: stacks of 2-8 frames the worst ratio seen was 0.45.
FUSED_VS_FRAMES_MAX = 0.7
#: Median |depth - true depth| (frames) where the fuser reports a depth, on 40-48 px
#: stacks whose blur grows by >= 1 px per frame (frames one depth of field apart); worst
#: seen over 150 random stacks 0.25 frame. (On 16 px frames the fuser's smoothing of the
#: depth map cannot follow the synthetic bump and the median reaches 0.75 frame.)
DEPTH_ERROR_MAX_FRAMES = 0.5
#: Correlation of the fused depth map with the true one on the same stacks; worst seen 0.905.
DEPTH_CORRELATION_MIN = 0.8
#: Phase-correlation error (px) on noise-free simulated tilt pairs; worst seen 0.11 px.
SHIFT_ERROR_MAX_PX = 0.2

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ zscan


SHARED_LIMITS = st.shared(zscan_limits(), key="limits")


@FAST
@given(SHARED_LIMITS, zscan_plans(limits=SHARED_LIMITS, synchronised=False))
def test_compute_buttons_resynchronise_any_dialog_state(lim: ZScanLimits, plan: ZScanPlan) -> None:
    assert_plan_invariants(plan, limits=lim)
    by_distance = plan.compute_distance()
    assert by_distance.synchronised
    assert_plan_invariants(by_distance)
    if plan.count > 0 and plan.distance_um > 0:
        by_spacing = plan.compute_spacing()
        assert by_spacing.synchronised
        assert_plan_invariants(by_spacing)
        # the Count button undoes nothing: the count was distance / spacing rounded
        assert by_spacing.compute_count().count == plan.count


@FAST
@given(zscan_plans(start_um=st.floats(-1000.0, 1000.0)))
def test_useq_round_trip_visits_the_same_positions(plan: ZScanPlan) -> None:
    # a single position carries no step: useq needs to be told the spacing (count 0 edge)
    spacing = plan.spacing_um if plan.count == 0 else None
    back = ZScanPlan.from_useq(plan.to_useq(), spacing_um=spacing)
    assert back.count == plan.count
    np.testing.assert_allclose(back.positions_um(), plan.positions_um(), rtol=0, atol=1e-9)
    assert_plan_invariants(back)


@FAST
@given(
    objectives(),
    st.floats(-500.0, 500.0),
    st.floats(0.0, 1.0),
    st.integers(0, 3),
)
@example(  # found by CI: a sample 1e-11 spacings thick gets one position, at its middle
    optics.Objective("1x/0.03 air", 1.0, 0.03, "air", 1.0, working_distance_um=50.0),
    0.0,
    1e-12,
    0,
)
def test_plan_for_sample_covers_the_sample_safely(
    obj: optics.Objective, bottom_um: float, depth_frac: float, margin: int
) -> None:
    spacing = ZScanLimits.for_objective(obj).default_spacing_um
    depth = depth_frac * 40.0 * spacing  # at most 40 steps + 2 x 3 margin < 99
    plan = plan_for_sample(bottom_um + depth, bottom_um, objective=obj, margin_steps=margin)
    assert_plan_invariants(plan)
    assert plan.spacing_um <= spacing * (1 + 1e-12)
    assert plan.start_um is not None
    z = plan.positions_um()
    assert_positions_safe(z, start_um=plan.start_um, limits_um=(-1e6, 1e6))
    # covered from margin spacings below the bottom to margin spacings above the top, up to
    # float rounding and the documented count tolerance (a depth within SYNC_RTOL of a whole
    # number of spacings counts as that number: coverage may fall short by that much of a
    # spacing, e.g. a sample 1e-11 spacings thick gets one position, at its middle)
    tol = 1e-9 * max(1.0, abs(bottom_um) + depth) + SYNC_RTOL * plan.spacing_um
    assert z[-1] <= bottom_um - margin * plan.spacing_um + tol
    assert z[0] >= bottom_um + depth + margin * plan.spacing_um - tol


# ------------------------------------------------------------------------------ acquire


class FreshCamera:
    """Cheap camera double: a fresh 4 x 4 frame filled with the snap number."""

    def __init__(self) -> None:
        self.exposure_ms = 1.0
        self.snaps = 0

    def set_exposure_ms(self, ms: float) -> None:
        self.exposure_ms = ms

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        self.snaps += 1
        return np.full((4, 4), self.snaps, dtype=np.uint16)


STAGE_LIMITS = (-100.0, 2000.0)


@FAST
@given(
    plan=zscan_plans(count=st.integers(0, 12), start_um=None),
    faults=stage_faults(max_move=16),
    backlash_um=st.sampled_from([0.0, 2.0]),
)
def test_run_zscan_is_safe_under_any_fault_schedule(
    plan: ZScanPlan, faults: StageFaultSchedule, backlash_um: float
) -> None:
    stage = faults.make_stage(limits_um=STAGE_LIMITS, position_um=0.0)
    camera = FreshCamera()
    try:
        stack = run_zscan(plan, stage, camera, backlash_um=backlash_um, timeout_s=5.0)
    except AcquisitionError as err:
        first = faults.first_fault_move
        assert first is not None, f"a healthy stage failed: {err}"
        assert isinstance(err.__cause__, (StageFault, StageTimeoutError))
        assert err.stage_stopped and stage.stop_count >= 1
        partial = err.partial
        before_images = int(backlash_um > 0)  # the overshoot move takes no image
        assert not partial.complete
        assert len(partial) == max(0, first - 1 - before_images) < plan.image_count
        if len(partial):
            assert_stack_consistent(partial)
    else:
        assert stack.complete and len(stack) == plan.image_count
        assert_stack_consistent(stack)
        np.testing.assert_array_equal(stack.commanded_um, plan.positions_um(start_um=0.0))
        assert stage.get_position_um() == 0.0  # back at the start
        moves = plan.image_count + (backlash_um > 0)
        first = faults.first_fault_move
        assert first is None or first > moves
    # whatever happened, nothing below the start and nothing out of limits was commanded
    assert_positions_safe(stage.commanded_um, start_um=0.0, limits_um=STAGE_LIMITS)


# ------------------------------------------------------------------------------ fusion


def _mean_abs_error(img: np.ndarray, truth: np.ndarray) -> float:
    full = float(np.iinfo(truth.dtype).max) if truth.dtype.kind in "ui" else 1.0
    return float(np.mean(np.abs(img.astype(np.float64) - truth.astype(np.float64)))) / full


SMALL_SHAPES = st.tuples(st.integers(16, 32), st.integers(16, 32))


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(focus_stacks(shape=SMALL_SHAPES, n_frames=st.integers(2, 6)))
def test_fusion_recovers_the_all_in_focus_truth(ex: FocusStackExample) -> None:
    from nanoro_optics.fusion import fuse_stack

    res = fuse_stack(ex.frames)
    assert res.image.shape == ex.truth.shape and res.image.dtype == ex.truth.dtype
    assert res.n_frames == ex.n_frames
    frames_error = np.mean([_mean_abs_error(f, ex.truth) for f in ex.frames])
    assert _mean_abs_error(res.image, ex.truth) <= FUSED_VS_FRAMES_MAX * frames_error


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    focus_stacks(
        shape=st.tuples(st.integers(40, 48), st.integers(40, 48)),
        n_frames=st.integers(3, 6),
        blur_px_per_frame=st.floats(1.0, 2.0),
    )
)
def test_fusion_depth_map_follows_the_true_depth(ex: FocusStackExample) -> None:
    from nanoro_optics.fusion import fuse_stack

    res = fuse_stack(ex.frames)
    ok = np.isfinite(res.depth)
    # where no frame clearly wins the fuser reports NaN (in 3-frame stacks, most pixels)
    assert ok.sum() >= 20, f"the fuser reports a depth for only {int(ok.sum())} pixels"
    d, truth = res.depth[ok], ex.depth[ok]
    assert d.min() >= 0.0 and d.max() <= ex.n_frames - 1
    err = float(np.median(np.abs(d - truth)))
    assert err <= DEPTH_ERROR_MAX_FRAMES, f"median depth error {err:.3f} frames"
    corr = float(np.corrcoef(d, truth)[0, 1])
    assert corr >= DEPTH_CORRELATION_MIN, f"depth correlation {corr:.3f}"


@settings(max_examples=10, deadline=None)
@given(focus_stacks(shape=SMALL_SHAPES, n_frames=1))
def test_a_single_frame_is_refused_by_fusion_and_returned_as_the_image(
    ex: FocusStackExample,
) -> None:
    from nanoro_optics.fusion import StackFuser, fuse_stack
    from nanoro_optics.fusion.stack import ONE_FRAME_ERROR

    # the one policy of every front end: one frame has nothing to fuse and no depth
    with pytest.raises(ValueError) as err:
        fuse_stack(ex.frames)
    assert str(err.value) == ONE_FRAME_ERROR
    fuser = StackFuser(depth=False)
    fuser.add(ex.frames[0])
    image = fuser.image()  # the image alone: the frame as it is
    np.testing.assert_array_equal(image, ex.frames[0])
    assert image.dtype == ex.frames.dtype


# ------------------------------------------------------------------------------ beam tilt


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(beam_tilt_pairs())
def test_phase_correlation_measures_the_true_tilt_shift(pair: Any) -> None:
    from nanoro_optics.beamtilt import measure_shift

    res = measure_shift(pair.reference, pair.moving)
    err = math.hypot(res.shift_px[0] - pair.shift_px[0], res.shift_px[1] - pair.shift_px[1])
    assert err <= SHIFT_ERROR_MAX_PX, f"shift {res.shift_px} vs truth {pair.shift_px}"
