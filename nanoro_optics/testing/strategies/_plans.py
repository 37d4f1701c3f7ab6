"""Strategies for objectives, Z-scan limits and Z-scan plans."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ... import optics
from ...zscan import MAX_COUNT, ZScanLimits, ZScanPlan
from ._common import (
    _DEFAULT,
    _HALF_OPEN,
    _as_strategy,
    _draw_between,
    _floats,
)

__all__ = [
    "DEFAULT_SPACING_RANGE_UM",
    "DEFAULT_START_RANGE_UM",
    "objectives",
    "zscan_limits",
    "zscan_plans",
]


#: Spacing range (um) of :func:`zscan_plans` when no limits are given.
DEFAULT_SPACING_RANGE_UM = (0.01, 100.0)
#: Range (um) of the finite starts :func:`zscan_plans` draws by default.
DEFAULT_START_RANGE_UM = (-10000.0, 10000.0)

#: Immersion media and indices of the custom objectives of :func:`objectives`.
_MEDIA = {
    "air": 1.0,
    "water": 1.333,
    "silicone": 1.406,
    "glycerol": 1.473,
    "oil": optics.OIL_INDEX,
}
_MAGNIFICATIONS = (1.0, 2.0, 4.0, 5.0, 10.0, 20.0, 40.0, 50.0, 60.0, 63.0, 100.0, 150.0)


@st.composite
def _custom_objective(draw: st.DrawFn, immersion: SearchStrategy[str]) -> optics.Objective:
    medium = draw(immersion)
    n = _MEDIA[medium]
    magnification = draw(st.sampled_from(_MAGNIFICATIONS))
    # NA up to 95 % of the medium's index, the practical ceiling of real lenses
    na = _draw_between(draw, 0.03, round(0.95 * n, 3))
    wd = _draw_between(draw, 50.0, 30000.0)
    return optics.Objective(
        f"{magnification:g}x/{na:.3g} {medium}", magnification, na, medium, n, wd
    )


def objectives(*, immersion: Any = _DEFAULT, presets: bool = True) -> SearchStrategy[Any]:
    """Draw objectives: the table's presets first, then lenses with any valid NA and medium.

    Parameters
    ----------
    immersion : str or strategy of str, keyword-only
        Medium of the custom lenses, one of "air", "water", "silicone", "glycerol", "oil"
        (default: any). Presets are drawn only when no medium is pinned.
    presets : bool, keyword-only
        Include :data:`nanoro_optics.optics.OBJECTIVES` (default True); failures then
        shrink to a catalogue lens.

    Returns
    -------
    SearchStrategy[Objective]
        Valid :class:`~nanoro_optics.optics.Objective` values: ``0.03 <= NA <= 0.95 n``.

    Examples
    --------
    >>> from hypothesis import find
    >>> find(objectives(), lambda obj: True).name  # failures shrink to the first preset
    'Nikon MRP70101'
    """
    if isinstance(immersion, str) and immersion not in _MEDIA:
        raise ValueError(f"immersion must be one of {sorted(_MEDIA)}, got {immersion!r}")
    media = _as_strategy(immersion, st.sampled_from(sorted(_MEDIA)))
    custom = _custom_objective(media)
    if presets and immersion is _DEFAULT:
        return st.one_of(st.sampled_from(list(optics.OBJECTIVES.values())), custom)
    return custom


# ------------------------------------------------------------------------------ limits, plans


@st.composite
def _custom_limits(draw: st.DrawFn) -> ZScanLimits:
    lo = _draw_between(draw, 0.01, 20.0)
    mid = lo * _draw_between(draw, 1.0, 10.0)
    hi = mid * _draw_between(draw, 1.0, 3.0)
    cmin = draw(st.integers(0, 10))
    cmax = draw(st.integers(max(cmin, 1), MAX_COUNT))
    cdef = draw(st.integers(cmin, cmax))
    # a maximum distance that still admits a plan with min_count steps of min_spacing
    dmax = None
    if draw(st.booleans()):
        dmax = _draw_between(draw, max(mid, cmin * lo), cmax * hi)
    return ZScanLimits(
        lo,
        mid,
        hi,
        dmax,
        min_count=cmin,
        default_count=cdef,
        max_count=cmax,
        description="hypothesis limits",
    )


def zscan_limits(*, objective: Any = _DEFAULT) -> SearchStrategy[ZScanLimits]:
    """Draw Z-scan limits: those of an objective (Urwin 2021), or arbitrary valid limits.

    Parameters
    ----------
    objective : Objective, str or strategy, keyword-only
        Draw only :meth:`ZScanLimits.for_objective` limits of these objectives. Default:
        limits of :func:`objectives` or custom limits (counts, spacings and maximum
        distance of their own), always admitting at least one plan.

    Returns
    -------
    SearchStrategy[ZScanLimits]
    """
    if objective is not _DEFAULT:
        return st.builds(ZScanLimits.for_objective, _as_strategy(objective, objectives()))
    return st.one_of(st.builds(ZScanLimits.for_objective, objectives()), _custom_limits())


def _limits_bounds(lim: ZScanLimits | None) -> tuple[float, float, int, int, float]:
    """(min spacing, max spacing, min count, max count, max distance) of ``lim``."""
    if lim is None:
        lo, hi = DEFAULT_SPACING_RANGE_UM
        return lo, hi, 0, MAX_COUNT, math.inf
    assert lim.max_distance_um is not None
    dmax = lim.max_distance_um
    cmax = lim.max_count if dmax == math.inf else min(lim.max_count, int(dmax / lim.min_spacing_um))
    return lim.min_spacing_um, lim.max_spacing_um, lim.min_count, cmax, dmax


@st.composite
def _zscan_plans(
    draw: st.DrawFn,
    limits: SearchStrategy[ZScanLimits | None],
    synchronised: bool,
    start_um: SearchStrategy[float | None],
    count: SearchStrategy[int] | None,
    spacing_um: SearchStrategy[float] | None,
) -> ZScanPlan:
    lim = draw(limits)
    lo, hi, cmin, cmax, dmax = _limits_bounds(lim)
    n = draw(st.integers(cmin, max(cmin, cmax)) if count is None else count)
    if spacing_um is None:
        s_hi = hi if n == 0 else max(lo, min(hi, dmax / n))
        # the ends of the range are drawn on purpose: spacing at the limits is an edge case
        s = _draw_between(draw, lo, s_hi, ends=True)
    else:
        s = draw(spacing_um)
    start = draw(start_um)
    if synchronised or not draw(st.booleans()):
        return ZScanPlan.from_spacing_count(s, n, start_um=start)
    # the Count button's result: count = distance / spacing rounded to the nearest integer,
    # so the distance is within half a spacing of spacing x count
    frac = draw(_HALF_OPEN) - (0.0 if n == 0 else 0.5) * draw(st.booleans())
    distance = min(max(s * (n + frac), 0.0), dmax)
    return ZScanPlan(distance, s, n, start_um=start)


def zscan_plans(
    *,
    limits: Any = None,
    synchronised: bool = True,
    start_um: Any = _DEFAULT,
    count: Any = _DEFAULT,
    spacing_um: Any = _DEFAULT,
) -> SearchStrategy[ZScanPlan]:
    """Draw Z-scan plans (:class:`~nanoro_optics.zscan.ZScanPlan`).

    Parameters
    ----------
    limits : ZScanLimits or strategy of ZScanLimits, keyword-only
        Plans obey these limits (``limits.problems(plan) == []``): spacing in
        ``[min_spacing_um, max_spacing_um]``, count in ``[min_count, max_count]``, distance
        up to ``max_distance_um``. Default None: count 0..99 and spacing in
        :data:`DEFAULT_SPACING_RANGE_UM` (0.01 to 100 um).
    synchronised : bool, keyword-only
        True (default): every plan has ``distance = spacing x count``. False: plans may also
        be out of sync as a Count button that rounds leaves them (count = distance / spacing
        rounded to the nearest integer, so the distance is within half a spacing of
        ``spacing x count``); such plans are legal values that must not run.
    start_um : float, None or strategy, keyword-only
        Default: None (start where the stage is) or a finite start in
        :data:`DEFAULT_START_RANGE_UM`.
    count : int or strategy of int, keyword-only
        Pin the step count (``count=0`` for single-image plans).
    spacing_um : float or strategy of float, keyword-only
        Pin the spacing. By default the spacing is drawn from the allowed range *and its two
        ends*, so spacings exactly at the limits come up often.

    Returns
    -------
    SearchStrategy[ZScanPlan]

    Notes
    -----
    To check a plan against the limits it was drawn for, share the limits strategy; both
    arguments then receive the same limits in every example::

        lim = st.shared(zscan_limits(), key="limits")

        @given(lim, zscan_plans(limits=lim))
        def test_plan(limits, plan):
            assert limits.problems(plan) == []

    Examples
    --------
    >>> from hypothesis import find
    >>> plan = find(zscan_plans(count=0), lambda p: True)
    >>> plan.image_count, plan.distance_um
    (1, 0.0)
    """
    if not isinstance(synchronised, bool):
        raise TypeError(f"synchronised must be a bool, got {synchronised!r}")
    if limits is not None and not isinstance(limits, (ZScanLimits, SearchStrategy)):
        raise TypeError(f"limits must be a ZScanLimits, a strategy of them or None, got {limits!r}")
    if isinstance(count, int) and not isinstance(count, bool) and not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in 0..{MAX_COUNT}, got {count}")
    lo, hi = DEFAULT_START_RANGE_UM
    return _zscan_plans(
        _as_strategy(limits, st.none()),
        synchronised,
        _as_strategy(start_um, st.none() | _floats(lo, hi)),
        None if count is _DEFAULT else _as_strategy(count, st.nothing()),
        None if spacing_um is _DEFAULT else _as_strategy(spacing_um, st.nothing()),
    )
