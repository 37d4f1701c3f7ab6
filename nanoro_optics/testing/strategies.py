"""Hypothesis strategies for nanoro_optics values: plans, objectives, stacks, faults, tilt pairs.

Every strategy draws only valid values by default, is built from ``st.builds`` /
``st.composite`` so failures shrink to simple examples (a preset objective, count 0, a
single frame, no fault, zero defocus), and takes keyword options that are either a fixed
value or a strategy, to pin a parameter or ask for edge cases::

    zscan_plans(count=0)                               # single-image plans
    zscan_plans(limits=lim, spacing_um=lim.max_spacing_um)   # spacing at its limit
    focus_stacks(n_frames=1)                           # single-frame stacks
    stage_faults(kinds=("fail",), max_move=1)          # a fault on the very first move

A value given explicitly is used as it is: a pinned option that contradicts ``limits``
(a count above ``limits.max_count``, say) gives plans that break those limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .. import optics
from .._validation import check_positive
from ..zscan import MAX_COUNT, ZScanLimits, ZScanPlan

__all__ = [
    "DEFAULT_SPACING_RANGE_UM",
    "DEFAULT_START_RANGE_UM",
    "DEVICE_FAULT_KINDS",
    "DeviceFault",
    "FocusStackExample",
    "StageFaultSchedule",
    "beam_tilt_pairs",
    "device_faults",
    "focus_stacks",
    "objectives",
    "stage_faults",
    "zscan_limits",
    "zscan_plans",
]

T = TypeVar("T")

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


class _Default:
    """Marker of an option left at its default (distinct from an explicit None)."""

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()


def _as_strategy(value: Any, default: SearchStrategy[T]) -> SearchStrategy[T]:
    """``default`` for an unset option, the value itself if it is a strategy, else ``just``."""
    if value is _DEFAULT:
        return default
    if isinstance(value, SearchStrategy):
        return value
    return st.just(value)


def _floats(lo: float, hi: float) -> SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# Strategies with bounds known only at draw time scale one prebuilt unit draw: building a
# new st.floats per example costs more than the rest of the example, and a unit draw
# shrinks to the lower bound all the same.
_UNIT = st.floats(0.0, 1.0)
_HALF_OPEN = st.floats(0.0, 0.5, exclude_max=True)
_SIGNED_UNIT = st.floats(-1.0, 1.0)


def _scaled(u: float, lo: float, hi: float) -> float:
    """``lo + u (hi - lo)`` for ``u`` in [0, 1], exactly ``hi`` at ``u = 1``."""
    if u >= 1.0:
        return hi
    return min(lo + u * (hi - lo), hi)


def _draw_between(draw: st.DrawFn, lo: float, hi: float, *, ends: bool = False) -> float:
    """Draw in ``[lo, hi]``; with ``ends``, each end comes up about a tenth of the time.

    A unit float is 0 in about a quarter of hypothesis' draws and 1 almost never; mirroring
    it on a coin flip shares those draws between the two ends. Shrinks to ``lo``.
    """
    u = draw(_UNIT)
    if ends and draw(st.booleans()):
        u = 1.0 - u
    return _scaled(u, lo, hi)


# ------------------------------------------------------------------------------ objectives


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


# ------------------------------------------------------------------------------ focus stacks


@dataclass(frozen=True, eq=False)
class FocusStackExample:
    """A small synthetic focus stack with its ground truth (see :func:`focus_stacks`).

    Attributes
    ----------
    frames : numpy.ndarray
        ``(N, H, W)`` grey or ``(N, H, W, C)`` colour frames, frame 0 first.
    truth : numpy.ndarray
        The all-in-focus image ``(H, W[, C])``, same dtype as ``frames``.
    depth : numpy.ndarray
        float64 ``(H, W)``: the frame index (fractional) at which each pixel is in focus,
        ``0 <= depth <= N - 1``.
    blur_px_per_frame : float
        Growth of the blur sigma (px) per frame of defocus beyond half a frame.
    seed : int
        Seed of the texture and depth map.
    """

    frames: np.ndarray
    truth: np.ndarray
    depth: np.ndarray
    blur_px_per_frame: float
    seed: int

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])

    def sharp_mask(self, k: int) -> np.ndarray:
        """Pixels within half a frame of focus in frame ``k``: there ``frames[k] == truth``."""
        return np.abs(self.depth - k) <= 0.5

    def depth_um(self, *, spacing_um: float, start_um: float = 0.0) -> np.ndarray:
        """Return the true depth in um for frames ``spacing_um`` apart, frame 0 at ``start_um``."""
        return start_um + self.depth * spacing_um


#: Blur sigmas (px) rendered exactly; sigmas in between are interpolated linearly.
_SIGMA_GRID = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])


def _render_stack(
    shape: tuple[int, int],
    n_frames: int,
    dtype: np.dtype,
    channels: int,
    blur_px_per_frame: float,
    seed: int,
) -> FocusStackExample:
    """White-noise texture on a random tilted plane plus a bump, blurred per pixel."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = shape
    full = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
    tex = rng.random((h, w) if channels == 1 else (h, w, channels)) * full
    truth = (np.rint(tex) if dtype.kind in "ui" else tex).astype(dtype)
    truth_f = truth.astype(np.float64)

    y = (np.arange(h) + 0.5)[:, None] / h
    x = (np.arange(w) + 0.5)[None, :] / w
    ax, ay, amp = rng.uniform(-1.0, 1.0, 3)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    d = ax * x + ay * y + amp * np.exp(-0.5 * (((y - cy) ** 2 + (x - cx) ** 2) / 0.04))
    span = float(d.max() - d.min())
    d = (d - d.min()) / span if span > 0 else np.zeros_like(d)
    depth = d * (n_frames - 1)

    sig_max = blur_px_per_frame * max(0.0, n_frames - 1.5)
    grid = _SIGMA_GRID[: int(np.searchsorted(_SIGMA_GRID, sig_max)) + 1]
    blurred = [
        truth_f
        if s == 0.0
        else ndimage.gaussian_filter(
            truth_f, (s, s) if channels == 1 else (s, s, 0.0), mode="mirror", truncate=3.0
        )
        for s in grid
    ]
    stacked = np.stack(blurred)
    yy, xx = np.indices((h, w))
    frames = np.empty((n_frames, *truth.shape), dtype=dtype)
    for k in range(n_frames):
        sig = blur_px_per_frame * np.maximum(0.0, np.abs(depth - k) - 0.5)
        pos = np.interp(sig, grid, np.arange(grid.size, dtype=np.float64))
        i0 = np.minimum(np.floor(pos).astype(np.intp), grid.size - 1)
        i1 = np.minimum(i0 + 1, grid.size - 1)
        t = pos - i0
        if channels > 1:
            t = t[..., None]
        img = stacked[i0, yy, xx] * (1.0 - t) + stacked[i1, yy, xx] * t
        frames[k] = np.rint(img) if dtype.kind in "ui" else img
    return FocusStackExample(frames, truth, depth, float(blur_px_per_frame), int(seed))


def _check_shape(shape: Any) -> None:
    ok = isinstance(shape, tuple) and len(shape) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 4 for v in shape):
        raise ValueError(f"shape must be a tuple of two ints >= 4, got {shape!r}")


def _check_n_frames(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_frames must be an int >= 1, got {n!r}")


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be a numpy dtype, got {dtype!r}") from exc
    if dt.kind not in "uif":
        raise ValueError(f"dtype must be an integer or float dtype, got {dt}")
    return dt


def _check_channels(channels: Any) -> None:
    if channels not in (1, 3, 4) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1, 3 or 4, got {channels!r}")


def _check_blur(blur: Any) -> None:
    if not (isinstance(blur, (int, float)) and math.isfinite(blur) and blur > 0):
        raise ValueError(f"blur_px_per_frame must be finite and > 0, got {blur!r}")


def _eager(value: Any, check: Any) -> None:
    """Validate an option given as a fixed value now, not at the first draw."""
    if value is not _DEFAULT and not isinstance(value, SearchStrategy):
        check(value)


@st.composite
def _focus_stacks(
    draw: st.DrawFn,
    shape: SearchStrategy[tuple[int, int]],
    dtype: SearchStrategy[Any],
    n_frames: SearchStrategy[int],
    channels: SearchStrategy[int],
    blur_px_per_frame: SearchStrategy[float],
) -> FocusStackExample:
    shp = draw(shape)
    _check_shape(shp)
    h, w = shp
    n = draw(n_frames)
    dt = draw(dtype)
    ch = draw(channels)
    blur = draw(blur_px_per_frame)
    seed = draw(st.integers(0, 2**32 - 1))
    _check_shape((h, w))
    _check_n_frames(n)
    dt = _check_dtype(dt)
    _check_channels(ch)
    _check_blur(blur)
    return _render_stack((h, w), n, dt, ch, blur, seed)


def focus_stacks(
    *,
    shape: Any = _DEFAULT,
    dtype: Any = _DEFAULT,
    n_frames: Any = _DEFAULT,
    channels: Any = _DEFAULT,
    blur_px_per_frame: Any = _DEFAULT,
) -> SearchStrategy[FocusStackExample]:
    """Draw small synthetic focus stacks with a known depth map and all-in-focus image.

    A white-noise texture (the truth) lies on a random tilted plane plus a Gaussian bump
    spanning the whole stack (``0 <= depth <= n_frames - 1``, in frame units). Frame ``k``
    shows each pixel blurred by a Gaussian of standard deviation
    ``blur_px_per_frame * max(0, |depth - k| - 0.5)`` px (sigma, not FWHM), rendered at a
    grid of sigmas and interpolated linearly, the defocus model of synthetic
    shape-from-focus benchmarks [1]_. A pixel is *exactly* the truth in every frame within
    half a frame of its depth (:meth:`FocusStackExample.sharp_mask`). A stack costs about
    a millisecond, so properties can draw thousands.

    (nanoro_optics.fusion.synthetic_stack makes the same kind of stack from a photographic
    texture; it costs tens of milliseconds a stack, too slow for thousands of examples.)

    Parameters
    ----------
    shape : (int, int) or strategy, keyword-only
        Frame ``(rows, cols)``; default 16 to 48 px each.
    dtype : dtype or strategy, keyword-only
        Default: uint8, uint16, float32 or float64 (floats on a 0-1 scale).
    n_frames : int or strategy, keyword-only
        Default 1 to 8; ``n_frames=1`` for single-frame stacks.
    channels : int or strategy, keyword-only
        1 gives ``(N, H, W)`` frames, 3 or 4 gives ``(N, H, W, C)``; default 1 or 3.
    blur_px_per_frame : float or strategy, keyword-only
        Default 0.5 to 2.0.

    Returns
    -------
    SearchStrategy[FocusStackExample]

    References
    ----------
    .. [1] S. Pertuz, D. Puig and M. A. Garcia, "Analysis of focus measure operators for
       shape-from-focus", Pattern Recognit. 46(5), 1415-1432 (2013),
       https://doi.org/10.1016/j.patcog.2012.11.011

    Examples
    --------
    >>> from hypothesis import find
    >>> ex = find(focus_stacks(n_frames=3, shape=(16, 20), channels=1), lambda ex: True)
    >>> ex.frames.shape, ex.truth.shape
    ((3, 16, 20), (16, 20))
    """
    for value, check in (
        (shape, _check_shape),
        (dtype, _check_dtype),
        (n_frames, _check_n_frames),
        (channels, _check_channels),
        (blur_px_per_frame, _check_blur),
    ):
        _eager(value, check)
    return _focus_stacks(
        _as_strategy(shape, st.tuples(st.integers(16, 48), st.integers(16, 48))),
        _as_strategy(dtype, st.sampled_from(("uint8", "uint16", "float32", "float64"))),
        # sampled_from, not integers: alongside the shape and seed draws, hypothesis gives
        # st.integers(1, 8) its lower bound in most examples (60 % single-frame stacks)
        _as_strategy(n_frames, st.sampled_from(range(1, 9))),
        _as_strategy(channels, st.sampled_from((1, 3))),
        _as_strategy(blur_px_per_frame, _floats(0.5, 2.0)),
    )


# ------------------------------------------------------------------------------ stage faults


@dataclass(frozen=True)
class StageFaultSchedule:
    """When a :class:`~nanoro_optics.hardware.MockZStage` fails (see :func:`stage_faults`).

    Attributes
    ----------
    fail_on_move : int or None
        The k-th accepted move (1-based) raises ``StageFault`` and leaves the stage faulted.
    hang_on_move : int or None
        The k-th accepted move never ends: waiting for it raises ``StageTimeoutError``.
    hang_timeout_s : float
        Simulated time a wait without a timeout spends on a hung move.
    """

    fail_on_move: int | None = None
    hang_on_move: int | None = None
    hang_timeout_s: float = 30.0

    @property
    def first_fault_move(self) -> int | None:
        """The move on which the first fault strikes, or None for a healthy stage."""
        moves = [m for m in (self.fail_on_move, self.hang_on_move) if m is not None]
        return min(moves) if moves else None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~nanoro_optics.hardware.MockZStage` for the schedule."""
        return {
            "fail_on_move": self.fail_on_move,
            "hang_on_move": self.hang_on_move,
            "hang_timeout_s": self.hang_timeout_s,
        }

    def make_stage(self, **options: Any) -> Any:
        """Make a :class:`~nanoro_optics.hardware.MockZStage` with this schedule and ``options``."""
        from ..hardware import MockZStage

        return MockZStage(**options, **self.kwargs())


_FAULT_KINDS = ("none", "fail", "hang", "both")


def _check_count(value: Any, name: str) -> None:
    """Refuse anything but an int >= 1 (a 1-based move, reading or snap number)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_kinds(kinds: Sequence[str], known: tuple[str, ...]) -> tuple[str, ...]:
    """Return ``kinds`` as a tuple if it is a non-empty subset of ``known``."""
    chosen = tuple(kinds)
    if not chosen or any(k not in known for k in chosen):
        raise ValueError(f"kinds must be a non-empty subset of {known}, got {chosen!r}")
    return chosen


def stage_faults(
    *, max_move: int = 20, kinds: Sequence[str] = _FAULT_KINDS
) -> SearchStrategy[StageFaultSchedule]:
    """Draw fault schedules for the mock stage: a fault, a hang, both, or none.

    Parameters
    ----------
    max_move : int, keyword-only
        Faults strike on a move in ``1..max_move`` (default 20; a Z-scan of ``n`` images
        makes ``n`` or ``n + 1`` moves, plus one back to the start).
    kinds : sequence of str, keyword-only
        Which schedules to draw, from ``"none"`` (a healthy stage), ``"fail"``
        (``StageFault``), ``"hang"`` (``StageTimeoutError``) and ``"both"``. Failures shrink
        to the first kind listed, then to move 1.

    Returns
    -------
    SearchStrategy[StageFaultSchedule]

    Examples
    --------
    >>> from hypothesis import find
    >>> find(stage_faults(kinds=("fail",), max_move=1), lambda f: True)
    StageFaultSchedule(fail_on_move=1, hang_on_move=None, hang_timeout_s=30.0)
    """
    _check_count(max_move, "max_move")
    kinds = _check_kinds(kinds, _FAULT_KINDS)
    moves = st.integers(1, max_move)
    options = {
        "none": st.just(StageFaultSchedule()),
        "fail": st.builds(StageFaultSchedule, fail_on_move=moves),
        "hang": st.builds(StageFaultSchedule, hang_on_move=moves),
        "both": st.builds(StageFaultSchedule, fail_on_move=moves, hang_on_move=moves),
    }
    return st.one_of([options[k] for k in kinds])


#: Kinds of :class:`DeviceFault`: what goes wrong, and the double that does it.
DEVICE_FAULT_KINDS = (
    "none",  # a healthy mock stage
    "fail",  # move `at` raises StageFault (MockZStage(fail_on_move=at))
    "hang",  # move `at` never ends (MockZStage(hang_on_move=at))
    "nan",  # reading `at` is NaN (NaNReadingStage)
    "overshoot",  # move `at` ends `size` um below its target (OvershootingStage)
    "slow",  # move `at` takes `size` s longer and ignores timeouts (SlowStage)
    "settling",  # every wait returns `size` ms early (SettlingStage)
    "camera",  # snap `at` raises CameraError (BufferReusingCamera(fail_on_snap=at))
)
_STAGE_FAULT_KINDS = frozenset(DEVICE_FAULT_KINDS[1:-1])


@dataclass(frozen=True)
class DeviceFault:
    """One misbehaviour of the stage or the camera during a scan (see :func:`device_faults`).

    The camera is always a :class:`~nanoro_optics.testing.doubles.BufferReusingCamera`:
    reusing one buffer is how real cameras behave, not a fault.

    Attributes
    ----------
    kind : str
        One of :data:`DEVICE_FAULT_KINDS`.
    at : int
        Which move, reading or snap (1-based) goes wrong.
    size : float
        ``overshoot_um`` of an overshoot, ``delay_s`` of a slow move, ``idle_early_ms`` of
        a settling stage; unused otherwise.
    """

    kind: str = "none"
    at: int = 1
    size: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DEVICE_FAULT_KINDS:
            raise ValueError(f"kind must be one of {DEVICE_FAULT_KINDS}, got {self.kind!r}")
        _check_count(self.at, "at")
        check_positive(self.size, "size")

    @property
    def stage_fault(self) -> bool:
        """True when the stage misbehaves (every kind but "none" and "camera")."""
        return self.kind in _STAGE_FAULT_KINDS

    def make_stage(self, **options: Any) -> Any:
        """Make the (misbehaving) mock stage with these ``MockZStage`` options."""
        from ..hardware import MockZStage
        from . import doubles

        k, size = self.kind, self.size
        if k == "fail":
            return MockZStage(fail_on_move=self.at, **options)
        if k == "hang":
            return MockZStage(hang_on_move=self.at, **options)
        if k == "nan":
            return doubles.NaNReadingStage(nan_on_read=self.at, **options)
        if k == "overshoot":
            return doubles.OvershootingStage(
                overshoot_um=size, overshoot_on_move=self.at, **options
            )
        if k == "slow":
            return doubles.SlowStage(delay_s=size, slow_on_move=self.at, **options)
        if k == "settling":
            return doubles.SettlingStage(idle_early_ms=size, **options)
        return MockZStage(**options)

    def make_camera(self, **options: Any) -> Any:
        """Make the buffer-reusing camera (failing on snap ``at`` for kind "camera")."""
        from .doubles import BufferReusingCamera

        if self.kind == "camera":
            options["fail_on_snap"] = self.at
        return BufferReusingCamera(**options)


def device_faults(
    *,
    kinds: Sequence[str] = DEVICE_FAULT_KINDS,
    max_at: int = 20,
    size: Any = _DEFAULT,
) -> SearchStrategy[DeviceFault]:
    """Draw device misbehaviours for a scan (see :data:`DEVICE_FAULT_KINDS`).

    Failed, hung, NaN-reading, overshooting, slow or settling stages, a failing camera, or
    none; build the devices with :meth:`DeviceFault.make_stage` and
    :meth:`DeviceFault.make_camera`.

    Parameters
    ----------
    kinds : sequence of str, keyword-only
        Kinds to draw from :data:`DEVICE_FAULT_KINDS` (default all); failures shrink to the
        first listed, then to ``at=1`` and a simple ``size``.
    max_at : int, keyword-only
        The fault strikes at a move, reading or snap in ``1..max_at`` (default 20).
    size : float or strategy, keyword-only
        The fault's size (default: 0.05 to 20, see :class:`DeviceFault`).

    Returns
    -------
    SearchStrategy[DeviceFault]

    Examples
    --------
    >>> from hypothesis import find
    >>> find(device_faults(kinds=("overshoot",), max_at=3), lambda f: True)
    DeviceFault(kind='overshoot', at=1, size=1.0)
    """
    _check_count(max_at, "max_at")
    kinds = _check_kinds(kinds, DEVICE_FAULT_KINDS)
    return st.builds(
        DeviceFault,
        kind=st.sampled_from(kinds),
        at=st.integers(1, max_at),
        size=_as_strategy(size, _floats(0.05, 20.0)),
    )


# ------------------------------------------------------------------------------ beam tilt


@st.composite
def _beam_tilt_pairs(
    draw: st.DrawFn,
    shape: SearchStrategy[tuple[int, int]],
    tilt_mrad: SearchStrategy[Any],
    pixel_size_nm: SearchStrategy[float],
    cs_mm: SearchStrategy[float],
    max_shift_px: SearchStrategy[float] | None,
    dose_e_per_px: SearchStrategy[float | None],
) -> Any:
    from ..beamtilt import simulate_tilt_pair

    ny, nx = draw(shape)
    tilt = complex(draw(tilt_mrad))
    px = draw(pixel_size_nm)
    cs = draw(cs_mm)
    reach = min(ny, nx) / 4.0 if max_shift_px is None else draw(max_shift_px)
    if abs(tilt) == 0:
        raise ValueError("tilt_mrad must not be zero (a pair at zero tilt has no shift)")
    # pair shift |2 (z + Cs |t|^2) t| / pixel <= reach: bound the apparent defocus
    w = abs(tilt) * 1e-3
    apparent_max_um = reach * px * 1e-3 / (2.0 * w)
    apparent = draw(_SIGNED_UNIT) * apparent_max_um
    defocus = apparent - cs * 1e3 * w * w
    return simulate_tilt_pair(
        tilt_mrad=tilt,
        shape=(ny, nx),
        pixel_size_nm=px,
        defocus_um=defocus,
        cs_mm=cs,
        dose_e_per_px=draw(dose_e_per_px),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


_TILT_MAGNITUDE = _floats(1.0, 10.0)
_TILT_AZIMUTH = st.sampled_from((0.0, 0.5 * math.pi)) | _floats(0.0, 2.0 * math.pi)


@st.composite
def _tilts(draw: st.DrawFn) -> complex:
    magnitude = draw(_TILT_MAGNITUDE)
    angle = draw(_TILT_AZIMUTH)
    return complex(magnitude * math.cos(angle), magnitude * math.sin(angle))


def beam_tilt_pairs(
    *,
    shape: Any = _DEFAULT,
    tilt_mrad: Any = _DEFAULT,
    pixel_size_nm: Any = _DEFAULT,
    cs_mm: Any = _DEFAULT,
    max_shift_px: Any = _DEFAULT,
    dose_e_per_px: Any = None,
) -> SearchStrategy[Any]:
    """Draw simulated beam-tilt image pairs with known defocus and shift.

    Draws a :class:`~nanoro_optics.beamtilt.TiltPair` from
    :func:`~nanoro_optics.beamtilt.simulate_tilt_pair`: a textured field imaged at tilts
    ``-t`` and ``+t``, displaced by the BTID model ``2 (z + Cs |t|^2) t`` [1]_. The defocus
    is drawn so that the true shift stays within ``max_shift_px``, where a phase
    correlation can measure it; it shrinks to an apparent defocus of zero (no shift).

    Parameters
    ----------
    shape : (int, int) or strategy, keyword-only
        Image ``(rows, cols)``; default 32 to 48 px each (>= 16 required).
    tilt_mrad : complex or strategy, keyword-only
        Half the tilt separation (mrad, ``x + i y``); default magnitude 1 to 10 mrad at
        any azimuth (often along x or y). Must not be zero.
    pixel_size_nm : float or strategy, keyword-only
        Default 0.2 to 2 nm.
    cs_mm : float or strategy, keyword-only
        Spherical aberration; default 0 to 3 mm.
    max_shift_px : float or strategy, keyword-only
        Largest true shift magnitude of the pair (px); default a quarter of the smaller
        side.
    dose_e_per_px : float, None or strategy, keyword-only
        Mean electrons per pixel for Poisson noise; default None (noise-free).

    Returns
    -------
    SearchStrategy[TiltPair]
        ``pair.shift_px`` is the true shift of ``moving`` relative to ``reference``;
        ``pair.defocus_um`` and ``pair.apparent_defocus_um`` the truth.

    References
    ----------
    .. [1] A. J. Koster, A. van den Bos and K. D. van der Mast, "An autofocus method for a
       TEM", Ultramicroscopy 21, 209-222 (1987), https://doi.org/10.1016/0304-3991(87)90146-2

    Examples
    --------
    >>> from hypothesis import find
    >>> pair = find(beam_tilt_pairs(shape=(32, 32)), lambda p: True)
    >>> pair.reference.shape == pair.moving.shape == (32, 32)
    True
    """
    if tilt_mrad is not _DEFAULT and not isinstance(tilt_mrad, SearchStrategy):
        if abs(complex(tilt_mrad)) == 0:
            raise ValueError("tilt_mrad must not be zero (a pair at zero tilt has no shift)")
    for name, value in (("pixel_size_nm", pixel_size_nm), ("max_shift_px", max_shift_px)):
        if value is not _DEFAULT and not isinstance(value, SearchStrategy):
            check_positive(value, name)
    if cs_mm is not _DEFAULT and not isinstance(cs_mm, SearchStrategy):
        check_positive(cs_mm, "cs_mm", allow_zero=True)
    side = st.integers(32, 48)
    return _beam_tilt_pairs(
        _as_strategy(shape, st.tuples(side, side)),
        _as_strategy(tilt_mrad, _tilts()),
        _as_strategy(pixel_size_nm, _floats(0.2, 2.0)),
        _as_strategy(cs_mm, _floats(0.0, 3.0) | st.just(2.7)),
        None if max_shift_px is _DEFAULT else _as_strategy(max_shift_px, st.nothing()),
        _as_strategy(dose_e_per_px, st.none()),
    )
