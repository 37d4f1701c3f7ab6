"""Tests of nanoro_optics.testing: strategies generate valid values, assertions catch bad ones.

The validity properties draw 1000 examples each (the acceptance criterion of the issue);
the contract suites are in tests/test_testing_contracts.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from nanoro_optics import optics
from nanoro_optics.hardware import MockZStage, StageFault, StageTimeoutError
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
from nanoro_optics.zscan import MAX_COUNT, ZScanLimits, ZScanPlan

VALIDITY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: edge-case searches with find(): generation only, the first example that fits
FIND = settings(max_examples=2000, deadline=None, database=None, phases=[Phase.generate])


# ------------------------------------------------------------------------------ import guard


def test_import_without_hypothesis_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "try:\n"
        "    import nanoro_optics.testing\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "nanoro_optics.testing needs hypothesis: pip install 'nanoro_optics[test]'"


def test_package_import_does_not_pull_the_testing_kit() -> None:
    code = "import sys, nanoro_optics; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ objectives


@pytest.mark.slow
@VALIDITY
@given(objectives())
def test_objectives_are_valid(obj: optics.Objective) -> None:
    assert isinstance(obj, optics.Objective)
    assert 0 < obj.na <= obj.n_immersion
    assert obj.n_immersion >= 1.0 and obj.magnification > 0 and obj.working_distance_um > 0
    dof = obj.depth_of_field()
    assert math.isfinite(dof) and dof > 0
    lim = ZScanLimits.for_objective(obj)
    assert 0 < lim.min_spacing_um <= lim.default_spacing_um <= lim.max_spacing_um


def test_objectives_shrink_to_a_preset_and_pin_a_medium() -> None:
    assert find(objectives(), lambda o: True) is optics.OBJECTIVES["Nikon MRP70101"]
    oil = find(objectives(immersion="oil"), lambda o: True, settings=FIND)
    assert oil.immersion == "oil" and oil.n_immersion == optics.OIL_INDEX
    with pytest.raises(ValueError, match="immersion must be one of"):
        objectives(immersion="honey")


# ------------------------------------------------------------------------------ plans


@VALIDITY
@given(zscan_plans())
def test_default_plans_are_valid_and_synchronised(plan: ZScanPlan) -> None:
    assert plan.synchronised
    assert plan.problems() == []
    assert_plan_invariants(plan)
    lo, hi = 0.01, 100.0
    assert lo <= plan.spacing_um <= hi
    assert plan.start_um is None or -1e4 <= plan.start_um <= 1e4


SHARED_LIMITS = st.shared(zscan_limits(), key="limits")


@pytest.mark.slow
@VALIDITY
@given(SHARED_LIMITS, zscan_plans(limits=SHARED_LIMITS, synchronised=False))
def test_plans_obey_drawn_limits_in_or_out_of_sync(lim: ZScanLimits, plan: ZScanPlan) -> None:
    assert lim.problems(plan) == [], lim.problems(plan)
    assert_plan_invariants(plan, limits=lim)
    # the Count button's result: the distance is within half a spacing of spacing x count
    assert abs(plan.distance_um - plan.spacing_um * plan.count) <= 0.5 * plan.spacing_um * (
        1 + 1e-12
    )


@settings(max_examples=100, deadline=None)
@given(zscan_plans(limits=zscan_limits()))
def test_plans_with_a_strategy_of_limits_run(plan: ZScanPlan) -> None:
    assert plan.synchronised
    assert_plan_invariants(plan)
    assert len(plan.positions_um(start_um=None)) == plan.image_count


def test_unsynchronised_plans_do_come_up() -> None:
    odd = find(zscan_plans(synchronised=False), lambda p: not p.synchronised, settings=FIND)
    assert_plan_invariants(odd)
    assert "out of sync" in odd.problems()[0]


def _spacing_is(spacing_um: float, plan: ZScanPlan) -> bool:
    return plan.spacing_um == spacing_um


def test_edge_cases_on_request() -> None:
    single = find(zscan_plans(count=0), lambda p: True, settings=FIND)
    assert single.image_count == 1 and single.distance_um == 0.0
    lim = ZScanLimits.for_objective("Nikon MRP70401")
    at_max = find(
        zscan_plans(limits=lim, spacing_um=lim.max_spacing_um), lambda p: True, settings=FIND
    )
    assert at_max.spacing_um == lim.max_spacing_um and lim.problems(at_max) == []
    # the default draws both ends of the spacing range by itself
    for end in (lim.min_spacing_um, lim.max_spacing_um):
        hit = find(zscan_plans(limits=lim), partial(_spacing_is, end), settings=FIND)
        assert lim.problems(hit) == []
    top = find(zscan_plans(count=st.just(MAX_COUNT)), lambda p: True, settings=FIND)
    assert top.count == MAX_COUNT
    fixed = find(zscan_plans(start_um=5.0), lambda p: True, settings=FIND)
    assert fixed.start_um == 5.0
    assert find(zscan_plans(), lambda p: True, settings=FIND).start_um is None


def test_tight_custom_limits_admit_only_valid_plans() -> None:
    lim = ZScanLimits(1.0, 1.0, 2.0, 10.0, min_count=3, default_count=3, max_count=50)

    @settings(max_examples=300, deadline=None)
    @given(zscan_plans(limits=lim, synchronised=False))
    def check(plan: ZScanPlan) -> None:
        assert lim.problems(plan) == []
        assert 3 <= plan.count <= 10  # 10 steps of the 1 um minimum fill the 10 um maximum

    check()


def test_plan_option_errors() -> None:
    with pytest.raises(ValueError, match=r"count must be in 0\.\.99"):
        zscan_plans(count=100)
    with pytest.raises(TypeError, match="synchronised must be a bool"):
        zscan_plans(synchronised=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limits must be a ZScanLimits"):
        zscan_plans(limits="Nikon 100x")


# ------------------------------------------------------------------------------ focus stacks


@pytest.mark.slow
@VALIDITY
@given(focus_stacks())
def test_focus_stacks_are_valid_with_exact_truth(ex: FocusStackExample) -> None:
    n = ex.n_frames
    assert 1 <= n <= 8
    assert ex.frames.shape[1:] == ex.truth.shape
    assert 16 <= ex.truth.shape[0] <= 48 and 16 <= ex.truth.shape[1] <= 48
    assert ex.frames.dtype == ex.truth.dtype
    assert ex.depth.shape == ex.truth.shape[:2]
    assert ex.depth.min() >= 0.0 and ex.depth.max() <= n - 1 + 1e-12
    assert_stack_consistent(ex.frames)
    covered = np.zeros(ex.depth.shape, dtype=bool)
    for k in range(n):
        mask = ex.sharp_mask(k)
        covered |= mask
        np.testing.assert_array_equal(ex.frames[k][mask], ex.truth[mask])
    assert covered.all()  # every pixel is sharp in some frame
    if ex.frames.dtype.kind == "f":
        assert 0.0 <= float(ex.frames.min()) and float(ex.frames.max()) <= 1.0


def test_focus_stack_edge_cases_and_blur() -> None:
    single = find(focus_stacks(n_frames=1), lambda e: True, settings=FIND)
    assert single.n_frames == 1
    np.testing.assert_array_equal(single.frames[0], single.truth)
    grey = find(
        focus_stacks(channels=1, dtype="uint16", shape=(20, 24)), lambda e: True, settings=FIND
    )
    assert grey.frames.shape[1:] == (20, 24) and grey.frames.dtype == np.uint16
    # far from focus a frame is blurred: its contrast (std) falls below the truth's
    deep = find(
        focus_stacks(n_frames=8, channels=1, dtype="float64", blur_px_per_frame=2.0),
        lambda e: True,
        settings=FIND,
    )
    far = np.abs(deep.depth - 0) > 4
    assert far.any()
    assert deep.frames[0][far].std() < 0.5 * deep.truth[far].std()
    np.testing.assert_allclose(deep.depth_um(spacing_um=2.0, start_um=1.0), 1.0 + 2.0 * deep.depth)
    with pytest.raises(ValueError, match="n_frames"):
        find(focus_stacks(n_frames=0), lambda e: True, settings=FIND)


# ------------------------------------------------------------------------------ stage faults


@VALIDITY
@given(stage_faults())
def test_stage_fault_schedules_are_valid(faults: StageFaultSchedule) -> None:
    for move in (faults.fail_on_move, faults.hang_on_move):
        assert move is None or 1 <= move <= 20
    stage = faults.make_stage(limits_um=(0.0, 100.0))
    assert isinstance(stage, MockZStage)
    first = faults.first_fault_move
    # the schedule does what it says: moves succeed up to the first fault, which strikes
    for k in range(1, (first or 3) + 1):
        try:
            stage.move_to_um(float(k))
            stage.wait_until_idle(timeout_s=1.0)
        except StageFault:
            assert k == first == faults.fail_on_move
            break
        except StageTimeoutError:
            assert k == first == faults.hang_on_move
            break
        assert first is None or k < first, f"move {k} should have failed"


def test_stage_fault_edge_cases() -> None:
    first = find(stage_faults(kinds=("fail",), max_move=1), lambda f: True)
    assert first == StageFaultSchedule(fail_on_move=1)
    assert find(stage_faults(), lambda f: True) == StageFaultSchedule()
    hang = find(stage_faults(kinds=("hang",)), lambda f: True)
    assert hang.hang_on_move == 1 and hang.fail_on_move is None
    with pytest.raises(ValueError, match="kinds"):
        stage_faults(kinds=("explode",))
    with pytest.raises(ValueError, match="max_move"):
        stage_faults(max_move=0)


# ------------------------------------------------------------------------------ beam tilt


@pytest.mark.slow
@VALIDITY
@given(beam_tilt_pairs())
def test_beam_tilt_pairs_are_valid_with_model_truth(pair: object) -> None:
    from nanoro_optics.beamtilt import displacement_px, tilt_pair_displacement

    ref, mov = pair.reference, pair.moving  # type: ignore[attr-defined]
    assert ref.shape == mov.shape and ref.ndim == 2
    assert 32 <= min(ref.shape) and max(ref.shape) <= 48
    assert np.all(np.isfinite(ref)) and np.all(ref > 0) and np.all(mov > 0)
    s = pair.series  # type: ignore[attr-defined]
    assert abs(pair.tilt_mrad) >= 1.0 - 1e-12  # type: ignore[attr-defined]
    assert np.hypot(*pair.shift_px) <= min(ref.shape) / 4.0 * (1 + 1e-9)  # type: ignore[attr-defined]
    # the recorded shift is the BTID model's, and the apparent defocus z + Cs |t|^2
    d = tilt_pair_displacement(pair.tilt_mrad, defocus_um=s.defocus_um, cs_mm=s.cs_mm)  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        pair.shift_px,  # type: ignore[attr-defined]
        displacement_px(d, pixel_size_nm=s.pixel_size_nm),
        atol=1e-9,
    )
    t_rad = abs(pair.tilt_mrad) * 1e-3  # type: ignore[attr-defined]
    assert math.isclose(
        pair.apparent_defocus_um,  # type: ignore[attr-defined]
        s.defocus_um + s.cs_mm * 1e3 * t_rad**2,
        rel_tol=1e-9,
        abs_tol=1e-12,
    )


def test_beam_tilt_edge_cases() -> None:
    flat = find(beam_tilt_pairs(shape=(32, 32), cs_mm=0.0), lambda p: True, settings=FIND)
    assert flat.shift_px == (0.0, 0.0) or np.hypot(*flat.shift_px) < 1e-9
    big = find(
        beam_tilt_pairs(shape=(48, 48), max_shift_px=6.0),
        lambda p: np.hypot(*p.shift_px) > 5.0,
        settings=FIND,
    )
    assert np.hypot(*big.shift_px) <= 6.0 * (1 + 1e-9)
    noisy = find(
        beam_tilt_pairs(shape=(32, 32), dose_e_per_px=100.0), lambda p: True, settings=FIND
    )
    assert np.all(noisy.reference == np.round(noisy.reference))  # Poisson counts
    with pytest.raises(ValueError, match="tilt_mrad must not be zero"):
        find(beam_tilt_pairs(tilt_mrad=0.0), lambda p: True, settings=FIND)


# ------------------------------------------------------------------------------ assertions


def test_assert_plan_invariants_catches_broken_plans() -> None:
    with pytest.raises(AssertionError, match="expected a ZScanPlan"):
        assert_plan_invariants((60.0, 10.0, 6))
    with pytest.raises(AssertionError, match=r"breaks its limits: spacing 0\.6 um is below"):
        assert_plan_invariants(ZScanPlan(6.0, 0.6, 10), limits=ZScanLimits(1.0, 2.0, 3.0))

    class Liar(ZScanPlan):
        """A plan whose positions go below its start (what a buggy subclass might do)."""

        def positions_um(self, start_um: float | None = None) -> np.ndarray:
            return super().positions_um(start_um) - self.spacing_um

    with pytest.raises(AssertionError, match=r"last position 9\.0 must be exactly the start"):
        assert_plan_invariants(Liar(6.0, 1.0, 6, start_um=10.0))

    class Sloppy(ZScanPlan):
        def positions_um(self, start_um: float | None = None) -> np.ndarray:
            z = super().positions_um(start_um).copy()
            z[1] += 0.25
            return z

    with pytest.raises(AssertionError, match=r"positions 0 and 1 are 0\.75 um apart"):
        assert_plan_invariants(Sloppy(6.0, 1.0, 6, start_um=10.0))

    class Forgetful(ZScanPlan):
        def problems(self, limits: ZScanLimits | None = None) -> list[str]:
            return []

    with pytest.raises(AssertionError, match="out-of-sync plan must say so"):
        assert_plan_invariants(Forgetful(5.5, 1.0, 5))


def test_assert_positions_safe_messages() -> None:
    lim = (0.0, 100.0)
    assert_positions_safe([], start_um=10.0, limits_um=lim)
    assert_positions_safe(np.array([14.0, 12.0, 10.0]), start_um=10.0, limits_um=lim)
    with pytest.raises(AssertionError, match=r"positions_um\[2\] = 9\.0 um is 1 um below"):
        assert_positions_safe([11.0, 10.0, 9.0], start_um=10.0, limits_um=lim)
    with pytest.raises(AssertionError, match=r"positions_um\[0\] = 101\.0 um is above the upper"):
        assert_positions_safe([101.0, 50.0], start_um=10.0, limits_um=lim)
    with pytest.raises(AssertionError, match=r"positions_um\[1\] = 12\.0 um is not below"):
        assert_positions_safe([11.0, 12.0], start_um=10.0, limits_um=lim)
    assert_positions_safe([11.0, 12.0], start_um=10.0, limits_um=lim, descending=False)
    with pytest.raises(AssertionError, match="is not finite"):
        assert_positions_safe([11.0, math.nan], start_um=10.0, limits_um=lim)
    with pytest.raises(AssertionError, match="must be 1-D"):
        assert_positions_safe([[11.0]], start_um=10.0, limits_um=lim)
    with pytest.raises(ValueError, match="start_um must be a finite"):
        assert_positions_safe([1.0], start_um=math.inf, limits_um=lim)
    with pytest.raises(ValueError, match="lo < hi"):
        assert_positions_safe([1.0], start_um=0.0, limits_um=(5.0, 1.0))
    with pytest.raises(ValueError, match="pair"):
        assert_positions_safe([1.0], start_um=0.0, limits_um=5.0)  # type: ignore[arg-type]


def test_assert_stack_consistent_messages() -> None:
    a = np.zeros((4, 4), np.uint8)
    assert_stack_consistent(np.zeros((3, 4, 4, 3)))
    assert_stack_consistent([a, a.copy()], z_um=[2.0, 1.0])
    with pytest.raises(AssertionError, match="no frames"):
        assert_stack_consistent([])
    with pytest.raises(AssertionError, match="frame 1 has dtype uint16, unlike frame 0's uint8"):
        assert_stack_consistent([a, a.astype(np.uint16)])
    with pytest.raises(AssertionError, match="frames 0 and 1 share memory"):
        assert_stack_consistent([a, a])
    buf = np.zeros((2, 4, 4))
    with pytest.raises(AssertionError, match="frames 0 and 1 share memory"):
        assert_stack_consistent([buf[0], buf[0][:, :]])
    with pytest.raises(
        AssertionError, match=r"frame 1 has 1 non-finite pixel\(s\), first at \(2, 3\)"
    ):
        bad = np.zeros((4, 4))
        bad[2, 3] = np.nan
        assert_stack_consistent([np.zeros((4, 4)), bad])
    with pytest.raises(AssertionError, match="frame 0 is a list, not a numpy array"):
        assert_stack_consistent([[0, 1]])
    with pytest.raises(AssertionError, match="expected an integer or float dtype"):
        assert_stack_consistent([np.zeros((4, 4), bool)])
    with pytest.raises(AssertionError, match=r"shape \(4, 4, 2\)"):
        assert_stack_consistent([np.zeros((4, 4, 2))])
    with pytest.raises(AssertionError, match="one position per frame"):
        assert_stack_consistent([a, a.copy()], z_um=[1.0])
    with pytest.raises(AssertionError, match="strictly monotonic"):
        assert_stack_consistent([a, a.copy(), a.copy()], z_um=[1.0, 2.0, 1.5])
    with pytest.raises(AssertionError, match="must be an array or a sequence"):
        assert_stack_consistent("frames")
    with pytest.raises(AssertionError, match=r"\(N, H, W\)"):
        assert_stack_consistent(np.zeros((4, 4)))


def test_bad_strategy_options_are_refused_up_front() -> None:
    stack_cases: list[tuple[dict[str, Any], str]] = [
        ({"shape": (3, 16)}, "shape must be a tuple of two ints >= 4"),
        ({"dtype": "bool"}, "dtype must be an integer or float dtype"),
        ({"dtype": "no-such-type"}, "dtype must be a numpy dtype"),
        ({"channels": 2}, "channels must be 1, 3 or 4"),
        ({"blur_px_per_frame": 0.0}, "blur_px_per_frame must be finite and > 0"),
        ({"n_frames": 0}, "n_frames must be an int >= 1"),
    ]
    for kwargs, match in stack_cases:
        with pytest.raises((ValueError, TypeError), match=match):
            focus_stacks(**kwargs)
    tilt_cases: list[tuple[dict[str, Any], str]] = [
        ({"tilt_mrad": 0j}, "tilt_mrad must not be zero"),
        ({"pixel_size_nm": 0.0}, "pixel_size_nm must be > 0"),
        ({"cs_mm": -1.0}, "cs_mm must be >= 0"),
        ({"max_shift_px": 0.0}, "max_shift_px must be > 0"),
    ]
    for kwargs, match in tilt_cases:
        with pytest.raises(ValueError, match=match):
            beam_tilt_pairs(**kwargs)
    # a strategy that yields a bad value is caught when it is drawn
    with pytest.raises(ValueError, match="n_frames must be an int >= 1"):
        find(focus_stacks(n_frames=st.just(0)), lambda e: True, settings=FIND)


def test_failures_shrink_to_simple_examples() -> None:
    shrink = settings(database=None, max_examples=200, deadline=None)
    plan = find(zscan_plans(), lambda p: p.count >= 5, settings=shrink)
    assert (plan.count, plan.spacing_um, plan.start_um) == (5, 0.01, None)
    ex = find(focus_stacks(), lambda e: e.n_frames >= 3, settings=shrink)
    assert ex.n_frames == 3 and ex.truth.shape == (16, 16) and ex.seed == 0
    assert ex.frames.dtype == np.uint8 and ex.frames.ndim == 3  # grey
    faults = find(stage_faults(), lambda f: f.first_fault_move is not None, settings=shrink)
    assert faults == StageFaultSchedule(fail_on_move=1)
