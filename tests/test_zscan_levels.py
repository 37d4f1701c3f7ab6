"""SerialEM-style focus-range sampling: regular levels and the extended range."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.zscan import extended_focus_levels, focus_levels

ULPS = 16 * np.finfo(np.float64).eps


def slow_levels(total: float, n: int, offset: float) -> list[float]:
    """SerialEM's words: from half the range below to half above, interval range / (n - 1)."""
    interval = total / (n - 1)
    return [offset - total / 2 + i * interval for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-3, 1e4), st.integers(2, 200), st.floats(-1e4, 1e4))
def test_focus_levels_match_the_definition(total: float, n: int, offset: float) -> None:
    levels = focus_levels(total, n, offset_um=offset)
    assert levels.shape == (n,)
    assert levels[0] == offset - total / 2 and levels[-1] == offset + total / 2
    assert np.all(np.diff(levels) > 0)
    scale = ULPS * (abs(offset) + total)
    np.testing.assert_allclose(levels, slow_levels(total, n, offset), rtol=0, atol=n * scale)
    np.testing.assert_allclose(np.diff(levels), total / (n - 1), rtol=0, atol=4 * scale)


def test_focus_levels_offset_shifts_the_whole_range() -> None:
    centred = focus_levels(12.0, 5)
    assert centred.tolist() == [-6.0, -3.0, 0.0, 3.0, 6.0]
    assert focus_levels(12.0, 5, offset_um=-4.0).tolist() == (centred - 4.0).tolist()


def test_serialem_default_extended_range() -> None:
    # SerialEM defaults: -300 to 100 at about 20, with a regular range of 72 at 6 um
    ext = extended_focus_levels(72.0, 13, lower_um=-300.0, upper_um=100.0, interval_um=20.0)
    regular = focus_levels(72.0, 13)
    levels, mask = ext.levels_um, ext.extended
    assert levels[0] == -300.0 and levels[-1] == 100.0
    assert np.all(np.diff(levels) > 0)
    np.testing.assert_array_equal(levels[~mask], regular)  # the regular steps are kept
    below, above = levels[levels < -36.0], levels[levels > 36.0]
    assert mask[levels < -36.0].all() and mask[levels > 36.0].all()
    # "somewhat less than the specified interval ... to fill each end with equal spacing"
    assert ext.lower_interval_um <= 20.0 and ext.upper_interval_um <= 20.0
    assert below.size == math.ceil(264.0 / 20.0) and above.size == math.ceil(64.0 / 20.0)
    np.testing.assert_allclose(np.diff(np.append(below, -36.0)), ext.lower_interval_um)
    np.testing.assert_allclose(np.diff(np.insert(above, 0, 36.0)), ext.upper_interval_um)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(1.0, 100.0),
    st.integers(2, 30),
    st.floats(0.0, 500.0),
    st.floats(0.0, 500.0),
    st.floats(1.0, 10.0),
)
def test_extended_levels_fill_each_end_evenly(
    total: float, n: int, extra_low: float, extra_high: float, factor: float
) -> None:
    interval = factor * total / (n - 1)
    lower, upper = -total / 2 - extra_low, total / 2 + extra_high
    ext = extended_focus_levels(total, n, lower_um=lower, upper_um=upper, interval_um=interval)
    levels = ext.levels_um
    assert levels[0] == lower and levels[-1] == upper
    assert np.all(np.diff(levels) > 0)
    regular = focus_levels(total, n)
    gaps = (regular[0] - lower, upper - regular[-1])  # as float64 sees them
    for gap, step in zip(gaps, (ext.lower_interval_um, ext.upper_interval_um), strict=True):
        assert step <= interval * (1 + 1e-9)
        if gap > 0:
            k = round(gap / step)
            assert k * step == pytest.approx(gap, rel=1e-9)
            # the fewest equal intervals not above the requested one
            assert (k - 1) * interval < gap * (1 + 1e-9)
    assert ext.extended.sum() == levels.size - n


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: focus_levels(0.0, 5), r"total_range_um must be > 0, got 0\.0"),
        (lambda: focus_levels(-1.0, 5), r"total_range_um must be > 0, got -1\.0"),
        (lambda: focus_levels(math.nan, 5), r"total_range_um must be finite, got nan"),
        (lambda: focus_levels(10.0, 1), r"n_levels must be >= 2, got 1"),
        (lambda: focus_levels(10.0, 5, offset_um=math.inf), r"offset_um must be finite"),
        (
            lambda: extended_focus_levels(10.0, 3, lower_um=0.0, upper_um=50.0, interval_um=10),
            r"lower_um=0\.0 must be <= the regular range's low end -5\.0",
        ),
        (
            lambda: extended_focus_levels(10.0, 3, lower_um=-9.0, upper_um=4.0, interval_um=10),
            r"upper_um=4\.0 must be >= .* 5\.0",
        ),
        (
            lambda: extended_focus_levels(10.0, 3, lower_um=-9.0, upper_um=9.0, interval_um=1),
            r"interval_um=1\.0 must be >= the regular interval 5\.0",
        ),
        (
            lambda: extended_focus_levels(10.0, 3, lower_um=-9.0, upper_um=9.0, interval_um=0),
            r"interval_um must be > 0, got 0\.0",
        ),
    ],
)
def test_bad_input(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


def test_n_levels_must_be_an_integer() -> None:
    with pytest.raises(TypeError, match="n_levels must be an integer"):
        focus_levels(10.0, 5.0)  # type: ignore[arg-type]
