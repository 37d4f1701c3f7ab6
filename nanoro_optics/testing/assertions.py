"""Assertion helpers: plan invariants, scan-position safety, stack consistency.

Each helper returns None when its subject is sound and raises :class:`AssertionError`
naming the first broken rule, the offending value and the rule's limit, so a failing
hypothesis example reads as a sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..zscan import MAX_COUNT, SYNC_RTOL, ZScanLimits, ZScanPlan

__all__ = ["assert_plan_invariants", "assert_positions_safe", "assert_stack_consistent"]

_EPS = float(np.finfo(np.float64).eps)


def _fail(message: str) -> None:
    raise AssertionError(message)


def _is_finite_real(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(float(value))
    )


def assert_plan_invariants(plan: Any, *, limits: ZScanLimits | None = None) -> None:
    """Check the invariants every :class:`~nanoro_optics.zscan.ZScanPlan` must keep.

    - ``distance_um`` finite and >= 0, ``spacing_um`` finite and > 0, ``count`` an int in
      0..99, ``image_count == count + 1``, ``start_um`` None or finite;
    - a synchronised plan (``distance = spacing x count`` within ``SYNC_RTOL``) has no
      problems and ``image_count`` positions that run strictly downward one spacing at a
      time, from ``start + distance`` (its :attr:`top_um`) to exactly the start, none
      below it (Urwin 2021: the lens stays above its initial position);
    - an out-of-sync plan reports the fact in :meth:`problems` and refuses to give
      positions (it must not run);
    - :meth:`to_dict` and :meth:`replace` round-trip to an equal plan;
    - with ``limits``, ``limits.problems(plan)`` is empty.

    Parameters
    ----------
    plan : ZScanPlan
        The plan to check.
    limits : ZScanLimits, keyword-only
        Objective limits the plan must also obey.

    Raises
    ------
    AssertionError
        Naming the broken invariant and the values involved.

    Examples
    --------
    >>> assert_plan_invariants(ZScanPlan(60.0, 10.0, 6, start_um=-10.0))
    >>> assert_plan_invariants(ZScanPlan(6.0, 0.6, 10), limits=ZScanLimits(1.0, 2.0, 3.0))
    Traceback (most recent call last):
    ...
    AssertionError: plan ZScanPlan(distance_um=6.0, spacing_um=0.6, count=10, start_um=None) breaks its limits: spacing 0.6 um is below the minimum 1 um
    """  # noqa: E501
    if not isinstance(plan, ZScanPlan):
        _fail(f"expected a ZScanPlan, got {type(plan).__name__} {plan!r}")
    where = f"plan {plan!r}"
    d, s, n, start = plan.distance_um, plan.spacing_um, plan.count, plan.start_um
    if not (_is_finite_real(d) and d >= 0):
        _fail(f"{where}: distance_um={d!r} must be finite and >= 0")
    if not (_is_finite_real(s) and s > 0):
        _fail(f"{where}: spacing_um={s!r} must be finite and > 0")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
        _fail(f"{where}: count={n!r} must be an int in 0..{MAX_COUNT}")
    if start is not None and not _is_finite_real(start):
        _fail(f"{where}: start_um={start!r} must be None or finite")
    if plan.image_count != n + 1:
        _fail(f"{where}: image_count={plan.image_count!r} must be count + 1 = {n + 1}")

    problems = plan.problems()
    if plan.synchronised:
        product = s * n
        if abs(d - product) > SYNC_RTOL * max(d, product, s):
            _fail(
                f"{where}: synchronised is True but distance {d!r} != spacing x count "
                f"{product!r} beyond SYNC_RTOL={SYNC_RTOL}"
            )
        if problems:
            _fail(f"{where}: a synchronised plan without limits has problems {problems!r}")
        positions = plan.positions_um()
        base = 0.0 if start is None else start
        _check_plan_positions(where, positions, base, plan)
    else:
        if not any("out of sync" in p for p in problems):
            _fail(f"{where}: an out-of-sync plan must say so in problems(), got {problems!r}")
        try:
            plan.positions_um()
        except ValueError:
            pass
        else:
            _fail(f"{where}: positions_um() of an out-of-sync plan must raise, it returned")

    summary = plan.to_dict()
    again = ZScanPlan(
        summary["distance_um"],
        summary["spacing_um"],
        summary["count"],
        start_um=summary["start_um"],
    )
    if again != plan:
        _fail(f"{where}: to_dict() does not round-trip, rebuilt {again!r}")
    if summary["image_count"] != n + 1 or summary["synchronised"] != plan.synchronised:
        _fail(f"{where}: to_dict() disagrees with the plan: {summary!r}")
    if plan.replace() != plan:
        _fail(f"{where}: replace() without changes gives a different plan {plan.replace()!r}")
    if limits is not None:
        broken = limits.problems(plan)
        if broken:
            _fail(f"{where} breaks its limits: " + "; ".join(broken))


def _check_plan_positions(where: str, positions: np.ndarray, base: float, plan: ZScanPlan) -> None:
    n, s = plan.count, plan.spacing_um
    if positions.shape != (n + 1,):
        _fail(f"{where}: positions_um() has shape {positions.shape}, expected ({n + 1},)")
    first, last = float(positions[0]), float(positions[-1])
    if last != base:
        _fail(f"{where}: the last position {last!r} must be exactly the start {base!r}")
    # each position is start + k x spacing rounded once: allow a few ulps of the largest value
    atol = 4.0 * _EPS * float(np.max(np.abs(positions))) + SYNC_RTOL * s
    top = base + plan.distance_um
    if abs(first - top) > atol + SYNC_RTOL * plan.distance_um:
        _fail(f"{where}: the first position {first!r} must be start + distance = {top!r}")
    if plan.start_um is not None and plan.top_um != first:
        _fail(f"{where}: top_um={plan.top_um!r} differs from the first position {first!r}")
    if n:
        steps = np.diff(positions)
        if not np.all(steps < 0):
            i = int(np.argmax(steps >= 0))
            _fail(
                f"{where}: positions must run strictly downward, but position {i + 1} "
                f"({float(positions[i + 1])!r}) is not below position {i} ({float(positions[i])!r})"
            )
        err = np.abs(-steps - s)
        if np.any(err > 2 * atol):
            i = int(np.argmax(err))
            _fail(
                f"{where}: positions {i} and {i + 1} are {float(-steps[i])!r} um apart, "
                f"not the spacing {s!r} um"
            )
    below = positions < base
    if np.any(below):
        i = int(np.argmax(below))
        _fail(f"{where}: position {i} ({float(positions[i])!r}) is below the start {base!r}")


def assert_positions_safe(
    positions_um: Any,
    *,
    start_um: float,
    limits_um: tuple[float, float],
    descending: bool = True,
) -> None:
    """Check that stage targets keep the lens safe: the rules of Urwin (2021) and the stage.

    - every position is finite and inside ``limits_um`` (nothing for the stage to clip);
    - none is below ``start_um``, where the user placed the lens ("the lens stays above
      its initial position during the whole scan process");
    - with ``descending`` (default), they run strictly downward, top to bottom, as the
      capture sequence does.

    An empty sequence (nothing moved) is safe.

    Parameters
    ----------
    positions_um : array_like
        Commanded positions (um) in order, e.g. a mock stage's ``commanded_um`` or a
        :class:`~nanoro_optics.acquire.ZStack`'s ``commanded_um``.
    start_um : float, keyword-only
        The start (lowest allowed) position.
    limits_um : (float, float), keyword-only
        The stage's travel limits ``(lo, hi)``.
    descending : bool, keyword-only
        Require strictly decreasing positions.

    Raises
    ------
    AssertionError
        Naming the first offending index and value and the rule it breaks.
    ValueError
        If ``start_um`` or ``limits_um`` are not finite, or ``lo >= hi``.

    Examples
    --------
    >>> assert_positions_safe([12.0, 11.0, 10.0], start_um=10.0, limits_um=(0.0, 100.0))
    >>> assert_positions_safe([12.0, 9.5], start_um=10.0, limits_um=(0.0, 100.0))
    Traceback (most recent call last):
    ...
    AssertionError: positions_um[1] = 9.5 um is 0.5 um below start_um = 10.0 um (the lens must stay above its start)
    """  # noqa: E501
    if not _is_finite_real(start_um):
        raise ValueError(f"start_um must be a finite real number, got {start_um!r}")
    try:
        lo, hi = (float(v) for v in limits_um)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"limits_um must be a pair (lo, hi), got {limits_um!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"limits_um must be finite with lo < hi, got {limits_um!r}")
    z = np.asarray(positions_um, dtype=np.float64)
    if z.ndim != 1:
        _fail(f"positions_um must be 1-D, got shape {z.shape}")
    if z.size == 0:
        return
    bad = ~np.isfinite(z)
    if bad.any():
        i = int(np.argmax(bad))
        _fail(f"positions_um[{i}] = {float(z[i])!r} is not finite")
    start = float(start_um)
    below = z < start
    if below.any():
        i = int(np.argmax(below))
        _fail(
            f"positions_um[{i}] = {float(z[i])!r} um is {start - z[i]:.6g} um below start_um = "
            f"{start!r} um (the lens must stay above its start)"
        )
    outside = (z < lo) | (z > hi)
    if outside.any():
        i = int(np.argmax(outside))
        side = "above the upper limit" if z[i] > hi else "below the lower limit"
        _fail(f"positions_um[{i}] = {float(z[i])!r} um is {side} of limits_um = ({lo!r}, {hi!r})")
    if descending and z.size > 1:
        up = np.diff(z) >= 0
        if up.any():
            i = int(np.argmax(up))
            _fail(
                f"positions_um[{i + 1}] = {float(z[i + 1])!r} um is not below positions_um[{i}] = "
                f"{float(z[i])!r} um (a scan runs strictly top to bottom)"
            )


def _frames_of(frames: Any) -> tuple[list[Any], Any]:
    """Return the frames and the positions (or None) of an array, sequence or stack."""
    z = None
    if hasattr(frames, "frames") and not isinstance(frames, np.ndarray):
        z = getattr(frames, "commanded_um", None)
        frames = frames.frames
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4):
            _fail(f"a stack array must be (N, H, W) or (N, H, W, C), got shape {frames.shape}")
        return [frames[k] for k in range(frames.shape[0])], z
    if isinstance(frames, (str, bytes)) or not isinstance(frames, Sequence):
        _fail(f"frames must be an array or a sequence of arrays, got {type(frames).__name__}")
    return list(frames), z


def assert_stack_consistent(frames: Any, *, z_um: Any = None) -> None:
    """Check that a focus stack is usable: numeric frames of one shape and dtype, no aliasing.

    - at least one frame; every frame a numpy array, 2-D ``(rows, cols)`` or colour
      ``(rows, cols, channels)`` with 1, 3 or 4 channels, not empty, of an integer or
      float dtype;
    - every frame has the shape and dtype of frame 0;
    - float frames are finite;
    - no two frames share memory (a camera that hands out its one buffer would make every
      frame of the stack the last image);
    - positions, when given (``z_um``, or a stack's ``commanded_um``), are finite, one per
      frame and strictly monotonic.

    Parameters
    ----------
    frames : array_like, sequence of numpy.ndarray, ZStack or FocusStackExample
        An ``(N, H, W[, C])`` array, a list of frames, or an object with ``frames``
        (and optionally ``commanded_um``).
    z_um : array_like, keyword-only
        Position of each frame (um).

    Raises
    ------
    AssertionError
        Naming the first inconsistent frame and how it differs.

    Examples
    --------
    >>> assert_stack_consistent([np.zeros((4, 4)), np.zeros((4, 4))])
    >>> assert_stack_consistent([np.zeros((4, 4)), np.zeros((4, 5))])
    Traceback (most recent call last):
    ...
    AssertionError: frame 1 has shape (4, 5), unlike frame 0's (4, 4)
    """
    items, z_attr = _frames_of(frames)
    if z_um is None:
        z_um = z_attr
    if not items:
        _fail("the stack has no frames")
    for k, f in enumerate(items):
        if not isinstance(f, np.ndarray):
            _fail(f"frame {k} is a {type(f).__name__}, not a numpy array")
        if f.dtype.kind not in "uif":
            _fail(f"frame {k} has dtype {f.dtype}; expected an integer or float dtype")
        if f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[2] not in (1, 3, 4)):
            _fail(f"frame {k} has shape {f.shape}; expected (rows, cols) or (rows, cols, 1|3|4)")
        if f.size == 0:
            _fail(f"frame {k} is empty (shape {f.shape})")
    first = items[0]
    for k, f in enumerate(items[1:], start=1):
        if f.shape != first.shape:
            _fail(f"frame {k} has shape {f.shape}, unlike frame 0's {first.shape}")
        if f.dtype != first.dtype:
            _fail(f"frame {k} has dtype {f.dtype}, unlike frame 0's {first.dtype}")
    if first.dtype.kind == "f":
        for k, f in enumerate(items):
            bad = ~np.isfinite(f)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                _fail(f"frame {k} has {int(bad.sum())} non-finite pixel(s), first at {idx}")
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            a, b = items[i], items[j]
            if a is b or (np.may_share_memory(a, b) and np.shares_memory(a, b)):
                _fail(
                    f"frames {i} and {j} share memory: the camera returned the same buffer "
                    "twice, so the earlier frame was overwritten"
                )
    if z_um is not None:
        z = np.asarray(z_um, dtype=np.float64)
        if z.shape != (len(items),):
            _fail(f"z_um has shape {z.shape}, expected one position per frame ({len(items)},)")
        if not np.all(np.isfinite(z)):
            i = int(np.argmax(~np.isfinite(z)))
            _fail(f"z_um[{i}] = {float(z[i])!r} is not finite")
        if z.size > 1:
            dz = np.diff(z)
            if not (np.all(dz > 0) or np.all(dz < 0)):
                i = int(np.argmax(np.sign(dz) != np.sign(dz[0])) if dz[0] != 0 else 0)
                _fail(
                    f"z_um must be strictly monotonic; z_um[{i}] = {float(z[i])!r} and "
                    f"z_um[{i + 1}] = {float(z[i + 1])!r} break the order"
                )
