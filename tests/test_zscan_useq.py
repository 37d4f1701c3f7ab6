"""Interchange of Z-scan plans with useq-schema Z plans."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import useq
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.zscan import (
    EVEN_RTOL,
    MAX_COUNT,
    ZScanPlan,
    from_useq,
    plan_for_sample,
    to_useq,
)

# round trips may differ by float rounding of start + k x spacing
ULPS = 16 * np.finfo(np.float64).eps


def visited(zplan: object) -> list[float]:
    """Positions in the order a useq engine visits them (MDASequence iterates the plan)."""
    seq = useq.MDASequence(z_plan=zplan, axis_order="z")
    return [float(e.z_pos) for e in seq]


def test_to_useq_absolute_visits_the_same_positions_in_order() -> None:
    plan = plan_for_sample(40.0, 0.0, spacing_um=8.0)
    zplan = plan.to_useq()
    assert isinstance(zplan, useq.ZAbsolutePositions)
    assert visited(zplan) == plan.positions_um().tolist()


def test_to_useq_relative_when_the_start_is_unknown() -> None:
    plan = ZScanPlan(10.0, 2.5, 4)
    zplan = to_useq(plan)
    assert isinstance(zplan, useq.ZRelativePositions)
    assert list(zplan) == plan.positions_um().tolist()
    # a relative plan is applied to the stage position of the sequence
    seq = useq.MDASequence(
        stage_positions=[useq.Position(x=0, y=0, z=100.0)], z_plan=zplan, axis_order="pz"
    )
    assert [e.z_pos for e in seq] == plan.positions_um(start_um=100.0).tolist()
    # with a start given, the export is absolute
    absolute = plan.to_useq(start_um=100.0)
    assert isinstance(absolute, useq.ZAbsolutePositions)
    assert list(absolute) == plan.positions_um(start_um=100.0).tolist()


def test_to_useq_refuses_out_of_sync_plan() -> None:
    with pytest.raises(ValueError, match="out of sync"):
        ZScanPlan(54.0, 12.0, 5).to_useq()


def test_from_useq_top_bottom_any_direction() -> None:
    for go_up in (True, False):
        z = useq.ZTopBottom(top=50.0, bottom=-10.0, step=10.0, go_up=go_up)
        plan = from_useq(z)
        assert (plan.start_um, plan.distance_um, plan.spacing_um, plan.count) == (
            -10.0,
            60.0,
            10.0,
            6,
        )
        # the plan visits the same positions, top to bottom
        assert plan.positions_um().tolist() == sorted(visited(z), reverse=True)


def test_from_useq_range_around_keeps_useq_rounding() -> None:
    # REFERENCES 5: ZRangeAround(range=54, step=12) visits -27 .. 21, never +27
    z = useq.ZRangeAround(range=54.0, step=12.0)
    plan = ZScanPlan.from_useq(z, current_um=10.0)
    assert plan.positions_um().tolist() == sorted((10.0 + p for p in z.positions()), reverse=True)
    assert plan.count == len(z.positions()) - 1 == 4
    with pytest.raises(ValueError, match=r"lowest position is -27\.0 .*give current_um"):
        from_useq(z)


def test_from_useq_above_below_and_relative_lists() -> None:
    plan = from_useq(useq.ZAboveBelow(above=6.0, below=4.0, step=2.0), current_um=10.0)
    assert (plan.start_um, plan.count, plan.spacing_um) == (6.0, 5, 2.0)
    rel = from_useq(useq.ZRelativePositions(relative=[4.0, 0.0, 2.0]))
    assert rel == ZScanPlan(4.0, 2.0, 2)  # starts where the stage is
    assert from_useq({"relative": [0.0, 1.5, 3.0]}) == ZScanPlan(3.0, 1.5, 2)
    assert from_useq({"top": 2.0, "bottom": 0.0, "step": 1.0}) == ZScanPlan(
        2.0, 1.0, 2, start_um=0.0
    )


def test_from_useq_single_position_needs_a_spacing() -> None:
    assert from_useq(useq.ZRangeAround(range=0.0, step=1.5), current_um=3.0) == ZScanPlan(
        0.0, 1.5, 0, start_um=3.0
    )
    assert from_useq(useq.ZAbsolutePositions(absolute=[7.0]), spacing_um=2.0) == ZScanPlan(
        0.0, 2.0, 0, start_um=7.0
    )
    with pytest.raises(ValueError, match=r"single position .*give spacing_um"):
        from_useq(useq.ZAbsolutePositions(absolute=[7.0]))
    # with several positions a given spacing is checked against them
    assert from_useq({"relative": [0.0, 2.0]}, spacing_um=2.0) == ZScanPlan(2.0, 2.0, 1)
    with pytest.raises(ValueError, match=r"spacing_um=3\.0 disagrees .* 2 um apart"):
        from_useq({"relative": [0.0, 2.0]}, spacing_um=3.0)


@pytest.mark.parametrize(
    ("absolute", "pattern"),
    [
        ([0.0, 1.0, 3.0], r"not evenly spaced: gaps .*\[1\.0, 2\.0\] um, expected 1\.5"),
        ([0.0, 0.33, 0.67, 1.0], r"not evenly spaced"),
        ([2.0, 2.0, 4.0], r"2\.0 um repeats"),
        ([1.0, 1.0], r"1\.0 um repeats"),
        ([], r"has no positions"),
        (list(np.arange(MAX_COUNT + 2.0)), r"101 positions; .*at most 100"),
    ],
)
def test_from_useq_says_why_positions_do_not_fit(absolute: list[float], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        from_useq(useq.ZAbsolutePositions(absolute=absolute))


def test_from_useq_tolerates_rounding_but_not_more() -> None:
    base = np.arange(5) * 0.1
    assert from_useq(useq.ZAbsolutePositions(absolute=list(base))).count == 4
    off = base.copy()
    off[2] += 10 * EVEN_RTOL * 0.1
    with pytest.raises(ValueError, match="not evenly spaced"):
        from_useq(useq.ZAbsolutePositions(absolute=list(off)))


def test_from_useq_warns_that_current_is_ignored_for_absolute_plans() -> None:
    with pytest.warns(UserWarning, match=r"current_um=5\.0 is ignored"):
        plan = from_useq(useq.ZTopBottom(top=2.0, bottom=0.0, step=1.0), current_um=5.0)
    assert plan.start_um == 0.0


def test_from_useq_bad_types() -> None:
    with pytest.raises(TypeError, match="zplan must be a useq-schema Z plan"):
        from_useq([1.0, 2.0])
    with pytest.raises(TypeError, match="plan must be a ZScanPlan"):
        to_useq("plan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="current_um must be finite"):
        from_useq(useq.ZRelativePositions(relative=[0.0, 1.0]), current_um=float("nan"))


def test_missing_useq_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "useq", None)  # makes "import useq" fail
    with pytest.raises(ImportError, match=r'pip install "nanoro_optics\[useq\]"'):
        ZScanPlan(1.0, 1.0, 1).to_useq()
    with pytest.raises(ImportError, match=r"nanoro_optics\[useq\]"):
        from_useq({"relative": [0.0]})


@settings(max_examples=500, deadline=None)
@given(
    st.floats(1e-3, 1e3),
    st.integers(0, MAX_COUNT),
    st.none() | st.floats(-1e4, 1e4),
)
def test_round_trip_through_useq(spacing: float, count: int, start: float | None) -> None:
    plan = ZScanPlan.from_spacing_count(spacing, count, start_um=start)
    back = from_useq(plan.to_useq())  # count 0 too: the export keeps the spacing
    assert back.start_um == plan.start_um  # None stays None (relative, starting at 0)
    assert back.count == plan.count and back.synchronised
    scale = ULPS * (abs(start or 0.0) + plan.distance_um)
    np.testing.assert_allclose(
        back.positions_um(), plan.positions_um(), rtol=0, atol=(count + 2) * scale
    )
    assert back.spacing_um == pytest.approx(plan.spacing_um, rel=EVEN_RTOL)


@pytest.mark.parametrize("start", [None, -3.25, 0.0, 17.5])
def test_single_position_plan_round_trips_with_its_spacing(start: float | None) -> None:
    plan = ZScanPlan(0.0, 2.5, 0, start_um=start)
    z = plan.to_useq()
    assert [float(p) for p in z] == [0.0 if start is None else start]  # one position only
    assert bool(z.is_relative) == (start is None)
    back = from_useq(z)
    assert (back.start_um, back.count, back.spacing_um, back.distance_um) == (start, 0, 2.5, 0.0)
    # through a dict, as a saved MDA sequence holds it
    assert from_useq(z.model_dump()) == back
