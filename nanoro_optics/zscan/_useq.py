"""Interchange with useq-schema Z plans (the Micro-Manager / pymmcore-plus plan schema)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._validation import LENGTH_MAX_UM, check_positive, check_range
from ._plan import MAX_COUNT, ZScanPlan

__all__ = ["EVEN_RTOL", "from_useq", "to_useq"]

#: Relative tolerance on each gap when deciding that positions are evenly spaced.
EVEN_RTOL = 1e-6


def _import_useq() -> Any:
    try:
        import useq
    except ImportError as exc:
        raise ImportError(
            "useq-schema interchange needs the optional dependency useq-schema: "
            'pip install "nanoro_optics[useq]"'
        ) from exc
    return useq


def to_useq(plan: ZScanPlan, *, start_um: float | None = None) -> Any:
    """Export a plan as a useq-schema Z plan that visits the same positions in order.

    useq's range plans (``ZTopBottom``, ``ZRangeAround``, ``ZAboveBelow``) are built with
    ``numpy.arange`` and may stop short of the declared end (``ZRangeAround(range=54,
    step=12)`` visits -27 ... 21, never +27, while ``num_positions()`` says 6), and they
    start at the bottom by default. An explicit position list avoids both surprises.

    Parameters
    ----------
    plan : ZScanPlan
        A synchronised plan (an out-of-sync plan is refused).
    start_um : float, optional
        The stage position of the start, for a plan whose ``start_um`` is None.

    Returns
    -------
    useq.ZAbsolutePositions, useq.ZRelativePositions, useq.ZTopBottom or useq.ZRangeAround
        Absolute positions when the start is known, else positions relative to the stage
        position when the sequence starts; in capture order (top to bottom, ``go_up=True``
        which for position lists means "in the order given"). A plan of a single position
        (``count`` 0) is a ``ZTopBottom`` with ``top == bottom`` (absolute) or a
        ``ZRangeAround`` of range 0 (relative) whose ``step`` is the plan's spacing, so
        :func:`from_useq` gives the plan back with its spacing.

    Raises
    ------
    ImportError
        Without useq-schema (``pip install "nanoro_optics[useq]"``).

    Examples
    --------
    >>> ZScanPlan(60.0, 10.0, 6, start_um=-10.0).to_useq().absolute[:3]
    [50.0, 40.0, 30.0]
    >>> ZScanPlan(0.0, 2.5, 0, start_um=4.0).to_useq()
    ZTopBottom(top=4.0, bottom=4.0, step=2.5)
    """
    useq = _import_useq()
    if not isinstance(plan, ZScanPlan):
        raise TypeError(f"plan must be a ZScanPlan, got {type(plan).__name__} {plan!r}")
    positions = [float(z) for z in plan.positions_um(start_um)]
    relative = plan.start_um is None and start_um is None
    if plan.count == 0:  # a position list would lose the spacing: a range plan keeps it
        if relative:
            return useq.ZRangeAround(range=0.0, step=plan.spacing_um, go_up=True)
        return useq.ZTopBottom(
            top=positions[0], bottom=positions[0], step=plan.spacing_um, go_up=True
        )
    if relative:
        return useq.ZRelativePositions(relative=positions, go_up=True)
    return useq.ZAbsolutePositions(absolute=positions, go_up=True)


def _coerce(useq: Any, zplan: Any) -> Any:
    if isinstance(zplan, Mapping):
        from pydantic import TypeAdapter

        return TypeAdapter(useq.AnyZPlan).validate_python(dict(zplan))
    if not (hasattr(zplan, "positions") and hasattr(zplan, "is_relative")):
        raise TypeError(
            f"zplan must be a useq-schema Z plan (ZTopBottom, ZRangeAround, ZAboveBelow, "
            f"ZAbsolutePositions, ZRelativePositions) or a dict of one, got "
            f"{type(zplan).__name__} {zplan!r}"
        )
    return zplan


def from_useq(
    zplan: Any, *, current_um: float | None = None, spacing_um: float | None = None
) -> ZScanPlan:
    """Build a plan from any useq-schema Z plan, or say why its positions do not fit one.

    The useq plan's positions are listed as useq visits them (``iter(zplan)``: its own
    rounding, ``go_up``), sorted, and checked for even spacing. The plan returned visits
    them top to bottom, the capture order of Urwin (2021), whatever order useq would use.

    Parameters
    ----------
    zplan : useq Z plan or dict
        ``ZTopBottom``, ``ZRangeAround``, ``ZAboveBelow``, ``ZAbsolutePositions``,
        ``ZRelativePositions``, or a dict useq would accept as one.
    current_um : float, optional, keyword-only
        The stage position the relative plans are relative to. Needed for a relative plan
        whose lowest position is below the reference (the plan's start must be its lowest
        position); without it a relative plan starting at 0 gives a plan with
        ``start_um=None``. Ignored, with a warning, for absolute plans.
    spacing_um : float, optional, keyword-only
        Spacing for a plan with a single position (which has none of its own); by default
        the useq plan's ``step`` if it has a positive one. With several positions the
        positions set the spacing, and a given ``spacing_um`` must agree with it (within
        ``EVEN_RTOL``).

    Returns
    -------
    ZScanPlan
        ``start_um`` = lowest position, ``count`` = positions - 1, spacing = their gap.

    Raises
    ------
    ValueError
        If the positions are not evenly spaced (within ``EVEN_RTOL`` of the mean gap), repeat
        a position, number more than 100, or a relative plan reaches below the reference
        without ``current_um``; the message lists the offending gaps.
    ImportError
        Without useq-schema (``pip install "nanoro_optics[useq]"``).

    Examples
    --------
    >>> import useq
    >>> p = from_useq(useq.ZRangeAround(range=54, step=12), current_um=100.0)
    >>> p.start_um, p.distance_um, p.count  # useq stops short of +27
    (73.0, 48.0, 4)
    """
    useq = _import_useq()
    zplan = _coerce(useq, zplan)
    visited = np.array([float(z) for z in zplan], dtype=np.float64)
    if visited.size == 0:
        raise ValueError(f"zplan {zplan!r} has no positions")
    if not np.all(np.isfinite(visited)):
        raise ValueError(f"zplan {zplan!r} has a non-finite position: {visited.tolist()}")
    if visited.size - 1 > MAX_COUNT:
        raise ValueError(
            f"zplan has {visited.size} positions; a Z-scan plan takes at most {MAX_COUNT + 1}"
        )
    relative = bool(zplan.is_relative)
    current = (
        None
        if current_um is None
        else check_range(current_um, "current_um", -LENGTH_MAX_UM, LENGTH_MAX_UM)
    )
    if not relative and current is not None:
        warnings.warn(
            f"current_um={current!r} is ignored: {type(zplan).__name__} is absolute",
            UserWarning,
            stacklevel=2,
        )
    positions = np.sort(visited)
    if relative and current is not None:
        positions = current + positions
    elif relative and positions[0] != 0.0:
        raise ValueError(
            f"the relative zplan's lowest position is {float(positions[0])!r} um from the "
            "reference, but a plan starts at its lowest position; give current_um (the "
            "reference stage position) to place it"
        )
    start = None if relative and current is None else float(positions[0])

    if positions.size == 1:
        step = getattr(zplan, "step", None) if spacing_um is None else spacing_um
        if step is None or not step > 0:
            raise ValueError(
                f"zplan {zplan!r} has a single position and no positive step; give spacing_um"
            )
        return ZScanPlan(0.0, check_positive(step, "spacing_um"), 0, start_um=start)

    gaps = np.diff(positions)
    distance = float(positions[-1] - positions[0])
    spacing = distance / (positions.size - 1)
    scale = float(np.max(np.abs(positions)))
    tolerance = EVEN_RTOL * spacing + 8 * np.finfo(np.float64).eps * scale
    bad = np.abs(gaps - spacing) > tolerance
    if spacing == 0 or bad.any():
        repeats = positions[1:][gaps <= tolerance]
        why = f"; {float(repeats[0])!r} um repeats" if repeats.size else ""
        raise ValueError(
            "zplan positions are not evenly spaced: gaps between the sorted positions are "
            f"{np.round(gaps, 9).tolist()} um, expected {spacing:.9g} um each (relative "
            f"tolerance {EVEN_RTOL:g}){why}; a Z-scan plan needs one spacing"
        )
    if spacing_um is not None:
        expected = check_positive(spacing_um, "spacing_um")
        if abs(expected - spacing) > tolerance:
            raise ValueError(
                f"spacing_um={expected!r} disagrees with the zplan's positions, which are "
                f"{spacing:.9g} um apart"
            )
    return ZScanPlan(distance, spacing, positions.size - 1, start_um=start)
