"""SerialEM-style focus-range sampling: regular levels and an extended, sparser range."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import LENGTH_MAX_UM, check_int, check_positive, check_range

#: most regular focus levels, and most levels in all with the extended range (8 MB)
_MAX_LEVELS = 10_000
_MAX_ALL_LEVELS = 1_000_000

__all__ = ["ExtendedFocusLevels", "extended_focus_levels", "focus_levels"]


#: A gap within this relative tolerance of a whole number of intervals needs no extra level.
_FILL_RTOL = 1e-9


def focus_levels(total_range_um: float, n_levels: int, *, offset_um: float = 0.0) -> np.ndarray:
    """Evenly spaced focus levels over a range centred on the current focus.

    SerialEM's "Set Focus Range": levels from half the range below the current focus to half
    the range above it, at an interval of ``total_range / (n_levels - 1)``; a non-zero
    offset shifts the whole range.

    Parameters
    ----------
    total_range_um : float
        Total range in um (> 0).
    n_levels : int
        Number of levels, 2..10000.
    offset_um : float, keyword-only
        Shift of the whole range in um (negative for underfocus, or below the stage's
        current Z).

    Returns
    -------
    numpy.ndarray
        ``n_levels`` float64 levels in um, ascending; the ends are exactly
        ``offset -+ total_range / 2``.

    References
    ----------
    .. [1] SerialEM help, Calibration menu, "Set Focus Range",
       https://bio3d.colorado.edu/SerialEM/hlp/html/menu_calibration.htm

    Examples
    --------
    >>> focus_levels(60.0, 7, offset_um=-10.0).tolist()
    [-40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0]
    """
    span = check_positive(total_range_um, "total_range_um")
    if span > 2 * LENGTH_MAX_UM:
        raise ValueError(f"total_range_um must be <= {2 * LENGTH_MAX_UM!r}, got {span!r}")
    n = check_int(n_levels, "n_levels", 2, _MAX_LEVELS)
    offset = check_range(offset_um, "offset_um", -LENGTH_MAX_UM, LENGTH_MAX_UM)
    low, high = offset - span / 2.0, offset + span / 2.0
    # start + i x interval, not a running sum; the far end is set exactly
    levels = low + np.arange(n, dtype=np.float64) * (span / (n - 1))
    levels[-1] = high
    return levels


@dataclass(frozen=True, eq=False)
class ExtendedFocusLevels:
    """Focus levels of an extended-range calibration.

    Attributes
    ----------
    levels_um : numpy.ndarray
        All levels in um, ascending.
    extended : numpy.ndarray
        Boolean mask, True for the sparse levels outside the regular range (SerialEM
        measures those with a smaller beam tilt).
    lower_interval_um, upper_interval_um : float
        Actual interval below and above the regular range (0.0 where there are no extra
        levels); each is at most the requested interval.
    """

    levels_um: np.ndarray
    extended: np.ndarray
    lower_interval_um: float
    upper_interval_um: float


def _fill(gap: float, interval: float) -> tuple[int, float]:
    """Return the interval count and interval filling ``gap`` evenly, none above ``interval``."""
    if gap == 0:
        return 0, 0.0
    q = gap / interval
    k = round(q)
    if k == 0 or abs(q - k) > _FILL_RTOL * q:
        k = math.ceil(q)
    return k, gap / k


def extended_focus_levels(
    total_range_um: float,
    n_levels: int,
    *,
    lower_um: float,
    upper_um: float,
    interval_um: float,
    offset_um: float = 0.0,
) -> ExtendedFocusLevels:
    """Regular focus levels plus sparser levels out to a wider range.

    SerialEM's "Extended Autofocus": the regular levels (:func:`focus_levels`) are kept and
    the range is extended down to ``lower_um`` and up to ``upper_um`` at about
    ``interval_um``. "The actual interval in the extended range will be somewhat less than
    the specified interval in order to fill each end of the range with equally spaced
    measurements": on each side the gap is divided into ``ceil(gap / interval_um)`` equal
    intervals, so the outermost levels are exactly ``lower_um`` and ``upper_um``.

    Parameters
    ----------
    total_range_um, n_levels, offset_um : see :func:`focus_levels`
    lower_um : float, keyword-only
        Lowest level (um), at or below the regular range's low end.
    upper_um : float, keyword-only
        Highest level (um), at or above the regular range's high end.
    interval_um : float, keyword-only
        Approximate interval outside the regular range (um); at least the regular interval
        (SerialEM insists the extended interval be no finer than the regular one).

    Returns
    -------
    ExtendedFocusLevels

    Raises
    ------
    ValueError
        For bad values, a lower or upper limit inside the regular range, or an interval
        finer than the regular interval.

    References
    ----------
    .. [1] SerialEM help, Calibration menu, "Extended Autofocus" and "Set Extended Range",
       https://bio3d.colorado.edu/SerialEM/hlp/html/menu_calibration.htm

    Examples
    --------
    SerialEM's default extended range, -300 to 100 at about 20, around a regular range of
    +-36 um at 6 um:

    >>> ext = extended_focus_levels(72.0, 13, lower_um=-300.0, upper_um=100.0, interval_um=20.0)
    >>> round(ext.lower_interval_um, 4), round(ext.upper_interval_um, 4)
    (18.8571, 16.0)
    >>> ext.levels_um[-7:].tolist(), int(ext.extended.sum())
    ([24.0, 30.0, 36.0, 52.0, 68.0, 84.0, 100.0], 18)
    """
    regular = focus_levels(total_range_um, n_levels, offset_um=offset_um)
    low, high = float(regular[0]), float(regular[-1])
    lower = check_range(lower_um, "lower_um", -2 * LENGTH_MAX_UM, 2 * LENGTH_MAX_UM)
    upper = check_range(upper_um, "upper_um", -2 * LENGTH_MAX_UM, 2 * LENGTH_MAX_UM)
    step = check_positive(interval_um, "interval_um")
    regular_step = float(total_range_um) / (n_levels - 1)
    given = f"(total_range_um={total_range_um!r} around offset_um={offset_um!r})"
    if lower > low:
        raise ValueError(
            f"lower_um={lower!r} must be <= the regular range's low end {low!r} {given}"
        )
    if upper < high:
        raise ValueError(
            f"upper_um={upper!r} must be >= the regular range's high end {high!r} {given}"
        )
    if step < regular_step * (1.0 - _FILL_RTOL):
        raise ValueError(
            f"interval_um={step!r} must be >= the regular interval {regular_step!r} "
            "(the extended range is sampled more sparsely)"
        )
    k_low, d_low = _fill(low - lower, step)
    k_high, d_high = _fill(upper - high, step)
    if k_low + k_high + regular.size > _MAX_ALL_LEVELS:
        raise ValueError(
            f"lower_um={lower!r} and upper_um={upper!r} at interval_um={step!r} give "
            f"{k_low + k_high + regular.size} levels, more than {_MAX_ALL_LEVELS}"
        )
    below = lower + d_low * np.arange(k_low, dtype=np.float64)
    above = upper - d_high * np.arange(k_high - 1, -1, -1, dtype=np.float64)
    levels = np.concatenate([below, regular, above])
    extended = np.concatenate(
        [np.ones(k_low, bool), np.zeros(regular.size, bool), np.ones(k_high, bool)]
    )
    return ExtendedFocusLevels(levels, extended, d_low, d_high)
