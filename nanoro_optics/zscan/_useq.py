"""Interchange with useq-schema Z plans (the Micro-Manager / pymmcore-plus plan schema).

:func:`to_useq` and :func:`from_useq` convert plans; :func:`check_mda_sequence` checks the
Z plan of a whole ``useq.MDASequence`` against this library's rules before anything moves.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import optics
from .._validation import (
    LENGTH_MAX_UM,
    WAVELENGTH_RANGE_UM,
    check_finite_real,
    check_interval,
    check_positive,
    check_range,
)
from ._limits import resolve_objective
from ._plan import MAX_COUNT, PlanProblemsError, ZScanPlan

__all__ = ["EVEN_RTOL", "check_mda_sequence", "from_useq", "to_useq"]

#: Relative tolerance on each gap when deciding that positions are evenly spaced.
EVEN_RTOL = 1e-6
#: vacuum wavelengths (um) :func:`check_mda_sequence` accepts: the optical arguments' range
WAVELENGTH_UM_RANGE = WAVELENGTH_RANGE_UM


def _import_useq() -> Any:
    try:
        import useq
    except ImportError as exc:
        raise ImportError(
            "useq-schema interchange needs the optional dependency useq-schema: "
            'pip install "nanoro_optics[useq]"'
        ) from exc
    return useq


def _check_sequence_type(sequence: Any) -> Any:
    useq = _import_useq()
    if not isinstance(sequence, useq.MDASequence):
        raise TypeError(
            f"sequence must be a useq.MDASequence, got {type(sequence).__name__}; "
            "the check reads the z positions of its events"
        )
    return sequence


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


def check_mda_sequence(
    sequence: Any,
    *,
    limits_um: tuple[float, float],
    objective: optics.Objective | str,
    current_um: float | None = None,
    wavelength_um: float = optics.DEFAULT_WAVELENGTH_UM,
) -> None:
    """Refuse an MDA whose Z plan breaks this library's rules, naming the positions.

    Every z position the sequence will visit (``sequence.iter_events()``, as the engine
    moves the stage) is checked: never below its start, the z where the user placed the
    lens (the stage position's ``z``, else ``current_um``; Urwin 2021, the scan never goes
    below the start), inside the stage limits, and the gaps between a z-loop's sorted
    positions no larger than the objective's depth of field
    (:meth:`~nanoro_optics.optics.Objective.depth_of_field`), so that every depth is in
    focus in some frame.

    Parameters
    ----------
    sequence : useq.MDASequence
        The sequence to run.
    limits_um : (float, float), keyword-only
        The stage's travel limits ``(lo, hi)`` in um.
    objective : Objective or str, keyword-only
        The objective (or a preset name of :data:`nanoro_optics.optics.OBJECTIVES`).
    current_um : float, keyword-only, optional
        The stage's z now: the start of positions without a ``z`` of their own (and of a
        sequence without stage positions). Required when there are such positions.
    wavelength_um : float, keyword-only
        Wavelength of the depth of field (default
        :data:`~nanoro_optics.optics.DEFAULT_WAVELENGTH_UM`).

    Raises
    ------
    nanoro_optics.zscan.PlanProblemsError
        A ``ValueError`` listing every problem (``.problems``), each naming the stage
        position, its z positions and the limit broken.
    ValueError, TypeError
        Bad arguments, or a position without a start and no ``current_um``.

    Notes
    -----
    useq computes a relative Z plan (``ZRangeAround``, ``ZAboveBelow``, relative lists)
    around the stage position's ``z``; a sequence without stage positions gets the
    offsets themselves as absolute positions (around 0 um, whatever the stage's z), which
    this check then refuses as below the start or outside the limits.

    References
    ----------
    .. [1] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021).

    Examples
    --------
    >>> import useq
    >>> seq = useq.MDASequence(stage_positions=[(0, 0, 100.0)],
    ...     z_plan=useq.ZRelativePositions(relative=[4.0, 2.0, 0.0]))
    >>> check_mda_sequence(seq, limits_um=(0, 200), objective="Nikon MRP70101")
    >>> seq = useq.MDASequence(stage_positions=[(0, 0, 100.0)],
    ...     z_plan=useq.ZRangeAround(range=4.0, step=1.0))
    >>> check_mda_sequence(seq, limits_um=(0, 200), objective="Nikon MRP70101")
    Traceback (most recent call last):
    ...
    nanoro_optics.zscan._plan.PlanProblemsError: Z-scan plan cannot run: position 0: z 98, 99 um below its start 100 um
    """  # noqa: E501
    seq = _check_sequence_type(sequence)
    lo, hi = check_interval(limits_um, "limits_um")
    obj = resolve_objective(objective)
    lam = check_range(wavelength_um, "wavelength_um", *WAVELENGTH_UM_RANGE)
    dof = obj.depth_of_field(wavelength_um=lam)
    start_now = None if current_um is None else check_finite_real(current_um, "current_um")
    starts: dict[int, float] = {}
    loops: dict[tuple[tuple[str, int], ...], list[float]] = {}
    for ev in seq.iter_events():
        if ev.z_pos is None:
            continue
        index = {str(k): int(v) for k, v in dict(ev.index).items()}
        p = index.get("p", 0)
        if p not in starts:
            pos = seq.stage_positions[p] if seq.stage_positions else None
            start = pos.z if pos is not None and pos.z is not None else start_now
            if start is None:
                raise ValueError(
                    f"position {p} has no z of its own: give current_um (the stage's z, "
                    "where the lens was placed) to check it"
                )
            starts[p] = float(start)
        key = tuple(sorted((k, v) for k, v in index.items() if k != "z"))
        loops.setdefault(key, []).append(float(ev.z_pos))
    problems: list[str] = []
    seen: set[tuple[int, str]] = set()

    def fmt(values: Any) -> str:
        return ", ".join(f"{v:g}" for v in sorted(set(values)))

    def report(p: int, kind: str, text: str) -> None:
        if (p, kind) not in seen:  # one line per position and rule, not per time point
            seen.add((p, kind))
            problems.append(f"position {p}: {text}")

    tol = 1e-9
    for key, zs in loops.items():
        p = dict(key).get("p", 0)
        z = np.asarray(zs)
        below = z[z < starts[p] - tol]
        if below.size:
            report(p, "start", f"z {fmt(below)} um below its start {starts[p]:g} um")
        out = z[(z < lo) | (z > hi)]
        if out.size:
            report(p, "limits", f"z {fmt(out)} um outside the stage limits [{lo:g}, {hi:g}] um")
        gaps = np.diff(np.sort(z))
        if gaps.size and float(gaps.max()) > dof + tol:
            report(
                p,
                "dof",
                f"z step {float(gaps.max()):g} um exceeds the depth of field {dof:.3g} um of "
                f"{obj.name}",
            )
    if problems:
        raise PlanProblemsError(problems)
