"""Z-scan plans: seed 000's worked examples, invariants (hypothesis) and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics import optics
from nanoro_optics.zscan import (
    MAX_COUNT,
    SYNC_RTOL,
    PlanProblemsError,
    ZScanLimits,
    ZScanPlan,
    plan_for_sample,
)

# positions are start + k x spacing in float64; comparisons of derived positions against
# exact arithmetic allow a few ulps of the largest magnitude involved
ULPS = 16 * np.finfo(np.float64).eps
# the seed's objective table prints the depth of field to 2-3 significant digits
TABLE_RTOL = 0.01

SETTINGS = settings(max_examples=700, deadline=None)

# from 1 pm: a distance that underflows when divided by the count is no scan
distances = st.just(0.0) | st.floats(1e-6, 1e4, allow_nan=False, allow_infinity=False)
spacings = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
counts = st.integers(0, MAX_COUNT)
starts = st.none() | st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def plans(draw: st.DrawFn) -> ZScanPlan:
    """Any legal plan value, synchronised or not."""
    return ZScanPlan(draw(distances), draw(spacings), draw(counts), start_um=draw(starts))


@st.composite
def synced_plans(draw: st.DrawFn) -> ZScanPlan:
    return ZScanPlan.from_spacing_count(draw(spacings), draw(counts), start_um=draw(starts))


def slow_positions(distance: float, spacing: float, count: int, start: float) -> list[float]:
    """The seed's description step by step: go up the distance, then down one spacing at a
    time until back at the start."""
    z = start + distance
    out = [z]
    for _ in range(count):
        z -= spacing
        out.append(z)
    return out


# ---------------------------------------------------------------- seed 000's worked examples


def test_seed_40um_sample_with_10um_depth_of_field_gives_7_images_from_minus_10_to_50() -> None:
    seed_depths_um = [-10, 0, 10, 20, 30, 40, 50]  # "it would be better to take 7 images"
    plan = plan_for_sample(40.0, 0.0, spacing_um=10.0)
    assert plan.image_count == 7
    assert plan.start_um == -10.0
    assert plan.distance_um == 60.0 and plan.spacing_um == 10.0 and plan.count == 6
    assert plan.positions_um().tolist() == sorted(seed_depths_um, reverse=True)


def test_seed_8um_steps_give_8_images_from_minus_8_to_48_in_7_moves() -> None:
    seed_depths_um = [-8, 0, 8, 16, 24, 32, 40, 48]
    plan = plan_for_sample(40.0, 0.0, spacing_um=8.0)
    assert plan.image_count == 8
    assert plan.count == 7  # "moving 7 times 8 um"
    assert plan.distance_um == 56.0  # "or 56 um in total"
    assert plan.positions_um().tolist() == sorted(seed_depths_um, reverse=True)


def test_seed_54um_at_12um_spacing_rounds_4_5_steps_to_5() -> None:
    # the Count button: nearest whole number, leaving the plan out of sync
    pressed = ZScanPlan(54.0, 12.0, 1).compute_count()
    assert pressed.count == 5 and not pressed.synchronised
    nearest = ZScanPlan.from_distance_spacing(54.0, 12.0, rounding="nearest")
    assert nearest == pressed
    # "then either increase the distance or lower the spacing"
    lower = ZScanPlan.from_distance_spacing(54.0, 12.0, rounding="cover")
    assert (lower.count, lower.distance_um) == (5, 54.0)
    assert lower.spacing_um == pytest.approx(54.0 / 5, rel=SYNC_RTOL) and lower.synchronised
    longer = ZScanPlan.from_distance_spacing(54.0, 12.0, rounding="extend")
    assert (longer.count, longer.spacing_um, longer.distance_um) == (5, 12.0, 60.0)
    assert plan_for_sample(54.0, 0.0, spacing_um=12.0, margin_steps=0).count == 5


def test_seed_compute_buttons() -> None:
    # "with a count of 3 and a spacing of 2 um, the Distance button enters 6 um"
    assert ZScanPlan(1.0, 2.0, 3).compute_distance().distance_um == 6.0
    # "with a distance of 6 um and a count of 3, the Spacing button enters 2 um"
    assert ZScanPlan(6.0, 1.0, 3).compute_spacing().spacing_um == 2.0
    assert ZScanPlan.from_distance_count(6.0, 3) == ZScanPlan(6.0, 2.0, 3)
    assert ZScanPlan.from_spacing_count(2.0, 3) == ZScanPlan(6.0, 2.0, 3)


def test_seed_capture_sequence_count_5_spacing_1() -> None:
    # "move up 5 um for the first image, then down 1 um ... back to its original position"
    pos = ZScanPlan(5.0, 1.0, 5).positions_um(start_um=2.5)
    assert pos[0] == 2.5 + 5.0
    assert np.all(np.diff(pos) == -1.0)
    assert pos[-1] == 2.5 and pos.size == 6


@pytest.mark.parametrize(
    ("name", "table_dof_um"),
    [("Nikon MRP70101", 11.8), ("Nikon MRP70401", 1.7), ("Nikon 100x", 0.88)],
)
def test_seed_limits_for_dry_objectives(name: str, table_dof_um: float) -> None:
    obj = optics.OBJECTIVES[name]
    lim = ZScanLimits.for_objective(name)
    assert lim.default_spacing_um == pytest.approx(table_dof_um, rel=TABLE_RTOL)
    assert lim.min_spacing_um == pytest.approx(lim.default_spacing_um / 10)
    oil = obj.with_immersion("oil")  # the same lens with n = 1.51
    assert lim.max_spacing_um == pytest.approx(oil.depth_of_field())
    assert lim.max_spacing_um == pytest.approx(optics.OIL_INDEX * lim.default_spacing_um)
    assert lim.max_distance_um == pytest.approx(MAX_COUNT * lim.max_spacing_um)
    assert lim.default_distance_um == lim.default_spacing_um
    assert (lim.min_count, lim.default_count, lim.max_count) == (0, 1, 99)
    default = lim.default_plan()
    assert default.count == 1 and default.synchronised
    assert default.problems(lim) == []
    assert ZScanLimits.for_objective(obj) == lim


def test_limits_for_oil_objective_without_dry_equivalent() -> None:
    # NA 1.25 > 1 cannot be used dry; its own (oil) depth of field is the default and max
    lim = ZScanLimits.for_objective("Nikon MRP71900")
    assert lim.default_spacing_um == pytest.approx(0.695, rel=TABLE_RTOL)
    assert lim.max_spacing_um == lim.default_spacing_um


def test_limits_for_water_objective_above_na_1() -> None:
    water = optics.Objective("water 60x", 60.0, 1.2, "water", 1.333, 280.0)
    lim = ZScanLimits.for_objective(water)
    assert lim.default_spacing_um == pytest.approx(water.depth_of_field())
    assert lim.max_spacing_um == pytest.approx(water.with_immersion("oil").depth_of_field())
    assert lim.description == "water 60x"


def test_limits_follow_the_depth_of_field_options() -> None:
    lim = ZScanLimits.for_objective("Nikon MRP70101", wavelength_um=0.5, detector_um=6.5)
    expected = optics.depth_of_field(0.25, wavelength_um=0.5, magnification=10, detector_um=6.5)
    assert lim.default_spacing_um == pytest.approx(expected)


def test_plan_for_sample_from_objective_uses_its_dry_depth_of_field() -> None:
    lim = ZScanLimits.for_objective("Nikon MRP70401")
    plan = plan_for_sample(10.0, 0.0, objective="Nikon MRP70401")
    assert plan.spacing_um <= lim.default_spacing_um
    assert plan.count == math.ceil(10.0 / lim.default_spacing_um) + 2
    assert plan.problems(lim) == []
    # a spacing above the objective's maximum is refused, naming it
    with pytest.raises(ValueError, match=r"spacing_um=30\.0 .*maximum"):
        plan_for_sample(10.0, 0.0, spacing_um=30.0, objective="Nikon MRP70401")


# ---------------------------------------------------------------- problems and refusal


def test_problems_name_the_values_and_limits() -> None:
    lim = ZScanLimits(1.0, 2.0, 3.0, max_count=10)
    assert ZScanPlan(6.0, 2.0, 3).problems(lim) == []
    out_of_sync = ZScanPlan(54.0, 12.0, 5).problems()
    assert len(out_of_sync) == 1 and "54" in out_of_sync[0] and "60" in out_of_sync[0]
    (low,) = ZScanPlan(2.5, 0.5, 5).problems(lim)
    assert "0.5" in low and "minimum 1" in low
    (high,) = ZScanPlan(8.0, 4.0, 2).problems(lim)
    assert "4" in high and "maximum 3" in high
    too_far = ZScanPlan(33.0, 3.0, 11).problems(lim)
    assert any("distance 33" in p and "30" in p for p in too_far)
    assert any("count 11" in p and "0..10" in p for p in too_far)
    with pytest.raises(PlanProblemsError) as err:
        ZScanPlan(54.0, 12.0, 5).require_runnable()
    assert err.value.problems == tuple(out_of_sync)
    assert isinstance(err.value, ValueError)
    assert ZScanPlan(6.0, 2.0, 3).require_runnable(lim) == ZScanPlan(6.0, 2.0, 3)


def test_out_of_sync_plan_has_no_positions() -> None:
    with pytest.raises(PlanProblemsError, match="out of sync"):
        ZScanPlan(54.0, 12.0, 5).positions_um()


def test_positions_start_resolution() -> None:
    rel = ZScanPlan(4.0, 2.0, 2)
    assert rel.positions_um().tolist() == [4.0, 2.0, 0.0]
    assert rel.positions_um(start_um=10.0).tolist() == [14.0, 12.0, 10.0]
    fixed = rel.replace(start_um=-3.0)
    assert fixed.positions_um().tolist() == [1.0, -1.0, -3.0]
    assert fixed.positions_um(start_um=-3.0).tolist() == [1.0, -1.0, -3.0]
    assert fixed.top_um == 1.0 and rel.top_um is None
    with pytest.raises(ValueError, match=r"start_um=5\.0 contradicts .*-3\.0"):
        fixed.positions_um(start_um=5.0)


def test_positions_refuse_spacing_below_float_resolution() -> None:
    with pytest.raises(ValueError, match="spacing_um=1e-12 is too small"):
        ZScanPlan.from_spacing_count(1e-12, 3, start_um=1e6).positions_um()


def test_compute_spacing_undefined_cases() -> None:
    assert ZScanPlan(0.0, 3.0, 0).compute_spacing() == ZScanPlan(0.0, 3.0, 0)
    with pytest.raises(ValueError, match=r"count=0 and distance_um=5\.0"):
        ZScanPlan(5.0, 1.0, 0).compute_spacing()
    with pytest.raises(ValueError, match=r"distance_um=0\.0 and count=4"):
        ZScanPlan(0.0, 1.0, 4).compute_spacing()
    with pytest.raises(ValueError, match="count must be <= 99"):
        ZScanPlan(1000.0, 1.0, 1).compute_count()


def test_to_dict_and_replace_revalidates() -> None:
    plan = ZScanPlan(6.0, 2.0, 3, start_um=1.0)
    assert plan.to_dict() == {
        "distance_um": 6.0,
        "spacing_um": 2.0,
        "count": 3,
        "image_count": 4,
        "start_um": 1.0,
        "synchronised": True,
    }
    with pytest.raises(ValueError, match="count must be <= 99, got 100"):
        plan.replace(count=100)


# ---------------------------------------------------------------- invariants


@SETTINGS
@given(plans())
def test_compute_distance_synchronises(plan: ZScanPlan) -> None:
    assert plan.compute_distance().synchronised


@SETTINGS
@given(st.floats(1e-6, 1e4), spacings, st.integers(1, MAX_COUNT), starts)
def test_compute_spacing_synchronises(
    distance: float, spacing: float, count: int, start: float | None
) -> None:
    plan = ZScanPlan(distance, spacing, count, start_um=start)
    out = plan.compute_spacing()
    assert out.synchronised
    assert (out.distance_um, out.count, out.start_um) == (
        plan.distance_um,
        plan.count,
        plan.start_um,
    )


@SETTINGS
@given(plans())
def test_compute_count_rounds_to_nearest_then_spacing_synchronises(plan: ZScanPlan) -> None:
    q = plan.distance_um / plan.spacing_um
    if q >= MAX_COUNT + 0.5:
        with pytest.raises(ValueError, match="count must be <= 99"):
            plan.compute_count()
        return
    pressed = plan.compute_count()
    assert abs(pressed.count - q) <= 0.5
    if pressed.count == 0:
        # 0 steps: synchronised only when the distance is (near) zero
        assert pressed.synchronised == (plan.distance_um <= SYNC_RTOL * plan.spacing_um)
        return
    assert pressed.compute_spacing().synchronised


@SETTINGS
@given(synced_plans())
def test_positions_invariants(plan: ZScanPlan) -> None:
    start = 0.0 if plan.start_um is None else plan.start_um
    pos = plan.positions_um()
    assert pos.shape == (plan.image_count,)
    assert pos[-1] == start
    assert np.all(pos >= start)
    assert np.all(np.diff(pos) < 0)
    scale = ULPS * (abs(start) + plan.distance_um)
    assert abs(pos[0] - (start + plan.distance_um)) <= scale
    np.testing.assert_allclose(np.diff(pos), -plan.spacing_um, rtol=0, atol=2 * scale)
    ref = slow_positions(plan.distance_um, plan.spacing_um, plan.count, start)
    np.testing.assert_allclose(pos, ref, rtol=0, atol=(plan.count + 2) * scale)


@SETTINGS
@given(
    distances,
    spacings,
    st.sampled_from(["cover", "extend", "nearest"]),
    starts,
)
def test_from_distance_spacing(distance: float, spacing: float, rounding: str, start) -> None:
    q = distance / spacing
    try:
        plan = ZScanPlan.from_distance_spacing(distance, spacing, rounding=rounding, start_um=start)  # type: ignore[arg-type]
    except ValueError as exc:
        assert "count must be <= 99" in str(exc) and q > MAX_COUNT - 1
        return
    assert plan.start_um == start
    if rounding == "nearest":
        assert plan.count == math.floor(q + 0.5)
        assert (plan.distance_um, plan.spacing_um) == (distance, spacing)
        return
    assert plan.synchronised and plan.spacing_um <= spacing
    assert plan.count >= q - SYNC_RTOL * max(1.0, q)  # the whole distance is covered
    assert plan.count < q + 1
    if rounding == "cover":
        assert plan.distance_um == distance
    else:
        assert plan.spacing_um == spacing and plan.distance_um >= distance * (1 - SYNC_RTOL)


@SETTINGS
@given(
    st.floats(-1e3, 1e3),
    st.floats(0.0, 500.0),
    st.floats(0.05, 100.0),
    st.integers(0, 5),
    st.sampled_from(["cover", "extend"]),
)
def test_plan_for_sample_covers_the_sample(
    bottom: float, depth: float, spacing: float, margin: int, rounding: str
) -> None:
    top = bottom + depth
    try:
        plan = plan_for_sample(
            top, bottom, spacing_um=spacing, margin_steps=margin, rounding=rounding
        )
    except ValueError as exc:
        assert "count must be <= 99" in str(exc)
        assert (top - bottom) / spacing + 2 * margin > MAX_COUNT - 1
        return
    assert plan.synchronised and plan.start_um is not None
    assert plan.spacing_um <= spacing
    pos = plan.positions_um()
    # float rounding, plus the count tolerance (a depth within SYNC_RTOL of a whole number
    # of spacings counts as that number)
    slack = 4 * ULPS * (abs(top) + abs(bottom) + plan.distance_um) * (plan.count + 1)
    slack += SYNC_RTOL * max(spacing, depth)
    assert pos[0] >= top + margin * plan.spacing_um - slack
    assert pos[-1] <= bottom - margin * plan.spacing_um + slack
    if rounding == "cover":
        # the margins are exactly margin_steps spacings; no other slack
        assert pos[-1] == pytest.approx(bottom - margin * plan.spacing_um, abs=slack)
    # never more steps than needed: one fewer step at this spacing would not cover it
    assert (plan.count - 2 * margin - 1) * spacing < (top - bottom) + slack


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "kwargs", "pattern"),
    [
        ((-1.0, 1.0, 1), {}, r"distance_um must be >= 0, got -1\.0"),
        ((math.nan, 1.0, 1), {}, r"distance_um must be finite, got nan"),
        ((math.inf, 1.0, 1), {}, r"distance_um must be finite, got inf"),
        ((1.0, 0.0, 1), {}, r"spacing_um must be > 0, got 0\.0"),
        ((1.0, -2.0, 1), {}, r"spacing_um must be > 0, got -2\.0"),
        ((1.0, math.nan, 1), {}, r"spacing_um must be finite, got nan"),
        ((1.0, math.inf, 1), {}, r"spacing_um must be finite, got inf"),
        ((1.0, 1.0, -1), {}, r"count must be >= 0, got -1"),
        ((1.0, 1.0, 100), {}, r"count must be <= 99, got 100"),
        ((1.0, 1.0, 1), {"start_um": math.nan}, r"start_um must be finite, got nan"),
        ((1.0, 1.0, 1), {"start_um": -math.inf}, r"start_um must be finite, got -inf"),
    ],
)
def test_plan_bad_values(args: tuple, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ZScanPlan(*args, **kwargs)


@pytest.mark.parametrize("count", [1.5, 2.0, True, "3"])
def test_plan_count_must_be_an_integer(count: object) -> None:
    with pytest.raises(TypeError, match="count must be an integer"):
        ZScanPlan(1.0, 1.0, count)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: ZScanPlan.from_distance_spacing(10.0, 0.0), r"spacing_um must be > 0, got 0\.0"),
        (lambda: ZScanPlan.from_distance_spacing(-1.0, 1.0), r"distance_um must be >= 0"),
        (
            lambda: ZScanPlan.from_distance_spacing(1.0, 1.0, rounding="up"),  # type: ignore[arg-type]
            r"rounding must be one of .*'up'",
        ),
        (lambda: ZScanPlan.from_distance_spacing(1000.0, 1.0), r"needs 1000 steps.*<= 99"),
        (lambda: ZScanPlan.from_distance_count(6.0, 0), r"count=0"),
        (lambda: ZScanPlan.from_distance_count(6.0, 100), r"count must be <= 99, got 100"),
        (lambda: ZScanPlan.from_spacing_count(math.nan, 3), r"spacing_um must be finite"),
        (lambda: plan_for_sample(0.0, 40.0, spacing_um=8.0), r"top_um=0\.0 .*bottom_um=40\.0"),
        (lambda: plan_for_sample(math.nan, 0.0, spacing_um=8.0), r"top_um must be finite"),
        (lambda: plan_for_sample(40.0, -math.inf, spacing_um=8.0), r"bottom_um must be finite"),
        (lambda: plan_for_sample(40.0, 0.0, spacing_um=0.0), r"spacing_um must be > 0, got 0\.0"),
        (lambda: plan_for_sample(40.0, 0.0, spacing_um=-8.0), r"spacing_um must be > 0"),
        (lambda: plan_for_sample(40.0, 0.0), r"give spacing_um or objective"),
        (
            lambda: plan_for_sample(40.0, 0.0, spacing_um=8.0, margin_steps=-1),
            r"margin_steps must be >= 0, got -1",
        ),
        (
            lambda: plan_for_sample(40.0, 0.0, spacing_um=8.0, rounding="nearest"),
            r"rounding must be one of .*'nearest'",
        ),
        (lambda: plan_for_sample(990.0, 0.0, spacing_um=10.0), r"101 in all.*<= 99"),
        (lambda: plan_for_sample(40.0, 0.0, objective="Zeiss"), r"unknown objective 'Zeiss'"),
        (
            lambda: ZScanLimits(2.0, 1.0, 3.0),
            r"min_spacing_um=2\.0, default_spacing_um=1\.0",
        ),
        (lambda: ZScanLimits(1.0, 2.0, 3.0, max_count=100), r"max_count must be <= 99"),
        (lambda: ZScanLimits(1.0, 2.0, math.inf), r"max_spacing_um must be finite"),
        (
            lambda: ZScanLimits.for_objective("Nikon 100x", wavelength_um=-0.5),
            r"wavelength_um must be > 0, got -0\.5",
        ),
    ],
)
def test_bad_input_names_argument_and_value(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


def test_objective_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="objective must be an Objective"):
        ZScanLimits.for_objective(0.25)  # type: ignore[arg-type]
