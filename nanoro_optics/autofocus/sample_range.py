"""The specimen's Z range in the field, and the scan that covers it.

:func:`find_sample_range` sweeps once, scoring every tile of the field, fits each tile's
focus, then refines the highest and lowest tiles with a few more frames; the extremes of
the tiles' foci are the specimen's top and bottom. :func:`auto_zscan` plans the scan that
covers that range (:func:`nanoro_optics.zscan.plan_for_sample`) and runs it
(:func:`nanoro_optics.acquire.run_zscan`). Refusal and safety as :mod:`.search`.

References
----------
.. [1] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021):
   focus above the top, below the bottom, subtract, choose the spacing, scan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optics
from .._validation import check_finite_real, check_interval, check_positive
from ._session import FocusCurve, _Session
from .search import (
    MIN_CONTRAST,
    MIN_SCORE,
    FocusNotFoundError,
    _coarse_band,
    _edge_error,
    _fit_peak,
    _session,
    _Setup,
    _setup,
    _sweep_positions,
)

__all__ = ["SampleRange", "auto_zscan", "find_sample_range"]

#: Default step of the sweep of :func:`find_sample_range` where the field shows nothing,
#: and where it shows structure, in depths of field.
RANGE_FAR_STEP_DOF = 4.0
RANGE_NEAR_STEP_DOF = 2.0
#: A tile whose peak score is below this fraction of a neighbour's is left out of the range.
GLOW_FRACTION = 0.2
#: ... and below this fraction when its focus is more than a near step from that one's.
RIM_FRACTION = 0.5
#: ... within this many tiles.
RIM_RADIUS_TILES = 2
#: A tile's second peak (another layer) counts from this fraction of its highest.
LAYER_FRACTION = 0.25
#: Default margin (depths of field) by which the found extremes are pushed outwards: the
#: tiles' fits carry about 0.2 DoF of error, and a summit lies above its tile's mean; a
#: scan that misses the top is worse than one a quarter DoF longer.
EXTEND_DOF = 0.25
#: ... unless it is fainter than a neighbour's by RIM_FRACTION and this many near steps
#: from its focus (a layer lies further from the surface than a rim from its object)
LAYER_RIM_STEPS = 2.0


@dataclass(frozen=True, eq=False)
class SampleRange:
    """The Z extent of the specimen in the field, from :func:`find_sample_range`.

    Attributes
    ----------
    top_um, bottom_um : float
        Stage Z at which the highest and the lowest part of the field is in focus.
    height_map_um : numpy.ndarray
        Focus Z of every tile (``tile_px`` square), NaN where a tile shows no structure.
    confidence : float
        ``1 - 1 / score`` of the weaker of the top and bottom tiles' peak scores, times
        the fraction of the tiles that show structure, in [0, 1].
    frames : int
        Frames taken.
    curve : FocusCurve
        Every frame's position and whole-field scores.
    tile_px : int
        Tile size of the height map.
    """

    top_um: float
    bottom_um: float
    height_map_um: np.ndarray
    confidence: float
    frames: int
    curve: FocusCurve
    tile_px: int

    @property
    def depth_um(self) -> float:
        """``top_um - bottom_um``."""
        return self.top_um - self.bottom_um


# ------------------------------------------------------------------------------ range


def find_sample_range(
    stage: Any,
    camera: Any,
    *,
    search_um: tuple[float, float],
    objective: optics.Objective | str | None = None,
    spacing_um: float | None = None,
    pixel_um: float | None = None,
    wavelength_um: float = optics.DEFAULT_WAVELENGTH_UM,
    tile_px: int = 16,
    far_step_dof: float = RANGE_FAR_STEP_DOF,
    near_step_dof: float = RANGE_NEAR_STEP_DOF,
    min_score: float = MIN_SCORE,
    min_contrast: float = MIN_CONTRAST,
    timeout_s: float | None = None,
    backlash_um: float = 0.0,
    position_tolerance_um: float | None = None,
    readout_tolerance_um: float = 0.1,
    max_frames: int = 200,
    extend_dof: float = EXTEND_DOF,
) -> SampleRange:
    """Find the highest and lowest Z at which some part of the field is in focus.

    1. A sweep from the top of the search range down, ``far_step_dof`` depths of field at
       a time while no tile of the field shows structure and ``near_step_dof`` while one
       does, each frame scored tile by tile (``tile_px`` square) with band-passes sized to
       the two steps.
    2. Each tile's focus: a Gaussian through its sharpest frame and the neighbours (the
       near band); tiles whose peak is below ``min_score`` show nothing and are left out,
       and so is a tile whose focus is more than two near steps from every neighbour's
       (an outlier). Refusal as :func:`find_focus` when no tile shows structure, or when
       the highest or lowest tile's sharpest frame is on an edge of the search range.
    3. Two frames half a depth of field above and below the highest tile's focus, and
       two around the lowest's, and the fits again; the extremes of the tiles' foci (each
       plus or minus half its tile's rise, the minmod of its neighbours' differences),
       pushed out by ``extend_dof``, are ``top_um`` and ``bottom_um``. The stage stays at
       the last frame.

    Parameters
    ----------
    stage, camera, search_um, objective, spacing_um, pixel_um, wavelength_um
        As :func:`find_focus`.
    tile_px : int, keyword-only
        Tile size of the height map (>= 4, default 16 px).
    far_step_dof, near_step_dof : float, keyword-only
        Sweep steps in depths of field away from and near structure (> 0; 4 and 2).
    min_score, min_contrast, timeout_s, backlash_um, position_tolerance_um,
    readout_tolerance_um, max_frames
        As :func:`find_focus`.
    extend_dof : float, keyword-only
        Margin by which ``top_um`` and ``bottom_um`` are pushed outwards, in depths of
        field (>= 0, default 0.25; kept inside the search range).

    Returns
    -------
    SampleRange

    Raises
    ------
    FocusNotFoundError, FocusSearchError, StageLimitError, ValueError, TypeError
        As :func:`find_focus`.
    """
    backlash = check_positive(backlash_um, "backlash_um", allow_zero=True)
    s = _setup(
        stage,
        camera,
        search_um,
        objective,
        spacing_um,
        None,
        pixel_um,
        wavelength_um,
        backlash,
        min_score,
        min_contrast,
    )
    extend = check_positive(extend_dof, "extend_dof", allow_zero=True)
    far = check_positive(far_step_dof, "far_step_dof") * s.dof
    near = check_positive(near_step_dof, "near_step_dof") * s.dof
    if near > far:
        raise ValueError(
            f"near_step_dof={near_step_dof!r} must be <= far_step_dof={far_step_dof!r}"
        )
    session = _session(
        stage,
        camera,
        s,
        (_coarse_band(s, near), _coarse_band(s, far)),
        search_um=search_um,
        tile_px=tile_px,
        timeout_s=timeout_s,
        backlash_um=backlash,
        position_tolerance_um=position_tolerance_um,
        readout_tolerance_um=readout_tolerance_um,
        max_frames=max_frames,
    )
    _sweep_positions(s, far, session.max_frames)  # refuse a hopeless range before moving
    z = s.hi
    while True:
        i = session.snap_at(z)
        if z <= s.lo:
            break
        near_t = session.tiles("coarse", 0)[i]
        far_t = session.tiles("coarse", 1)[i]
        seen = float(near_t.max()) >= max(s.min_score, session.threshold("coarse", 0)) or float(
            far_t.max()
        ) >= max(s.min_score, session.threshold("coarse", 1))
        z = max(z - (near if seen else far), s.lo)
        if s.lo < z < s.lo + 0.25 * near:  # no sliver of a step at the bottom
            z = s.lo
    heights, peaks = _tile_foci(session, s, near)
    top, bottom = _extremes(session, s, heights, peaks)
    for zt in sorted(
        {top + s.fine_step, top - s.fine_step, bottom + s.fine_step, bottom - s.fine_step},
        reverse=True,
    ):
        if (
            s.lo <= zt <= s.hi
            and np.min(np.abs(np.asarray(session.measured) - zt)) > 0.2 * s.fine_step
        ):
            session.snap_at(zt)
    heights, peaks = _tile_foci(session, s, near)
    top, bottom = _extremes(session, s, heights, peaks)
    top, bottom = top + extend * s.dof, bottom - extend * s.dof
    if bottom < s.lo or top > s.hi:
        # the margin only: the foci themselves are inside (else the edge error came first)
        bottom, top = max(bottom, s.lo), min(top, s.hi)
    ok = np.isfinite(heights)
    conf_peak = min(_peak_at(heights, peaks, top), _peak_at(heights, peaks, bottom))
    confidence = max(0.0, 1.0 - 1.0 / conf_peak) * float(ok.mean())
    return SampleRange(
        top_um=top,
        bottom_um=bottom,
        height_map_um=heights,
        confidence=confidence,
        frames=session.frames,
        curve=session.curve(),
        tile_px=session.tile_px,
    )


def _peak_at(heights: np.ndarray, peaks: np.ndarray, z: float) -> float:
    ok = np.isfinite(heights)
    i = np.argmin(np.where(ok, np.abs(heights - z), np.inf))
    return float(peaks.flat[i])


def _tile_foci(session: _Session, s: _Setup, near: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile focus Z (NaN without structure) and peak score."""
    t = session.tiles("coarse", 0)  # (frames, ty, tx)
    z = np.asarray(session.measured)
    order = np.argsort(z, kind="stable")
    zs, ts = z[order], t[order]
    n = len(zs)
    j = np.argmax(ts, axis=0)
    peaks = np.take_along_axis(ts, j[None], axis=0)[0]
    med = np.median(ts, axis=0)
    floor = max(s.min_score, session.threshold("coarse", 0))
    fine = session.tiles("fine")[order]
    fine_floor = max(s.min_score, session.threshold("fine"))
    heights = np.full(peaks.shape, np.nan)
    edge = np.zeros(peaks.shape, dtype=np.int8)  # +1 top edge, -1 bottom edge
    for idx in np.ndindex(peaks.shape):  # a few hundred tiles, three samples each
        jj = int(j[idx])
        if peaks[idx] < floor or peaks[idx] < s.min_contrast * med[idx]:
            continue
        if jj == 0:
            edge[idx] = -1
            heights[idx] = zs[0]
            continue
        if jj == n - 1:
            edge[idx] = 1
            heights[idx] = zs[-1]
            continue
        # sharp detail near the peak: a blur disc's rim sweeping over a tile far from focus
        # shows in the coarse band only
        if fine[max(jj - 1, 0) : jj + 2, idx[0], idx[1]].max() < fine_floor:
            continue
        heights[idx] = _fit_peak(zs, ts[(slice(None), idx[0], idx[1])], jj)[0]
    # outliers: tiles more than two near steps from every structured neighbour
    from scipy import ndimage

    # a tile far fainter than a neighbour sees that neighbour's defocused glow (the rim of
    # a bright object's blur disc), not structure of its own
    glow = peaks < GLOW_FRACTION * ndimage.maximum_filter(peaks, size=3, mode="nearest")
    # ... or, fainter than a neighbour by RIM_FRACTION, peaks far from that neighbour's
    # focus (the rim of its blur disc sweeping over the tile out of focus)
    main = heights.copy()

    def rim(y: int, x: int, value: float, z: float, tol: float) -> bool:
        """Tell whether a peak of ``value`` at ``z`` is the rim of a brighter tile's blur disc."""
        r = RIM_RADIUS_TILES
        ys, xs = slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)
        win_h, win_p = main[ys, xs], peaks[ys, xs]
        bright = np.isfinite(win_h) & (win_p * RIM_FRACTION > value)
        return bool(np.any(np.abs(win_h[bright] - z) > tol))

    for y, x in zip(*np.nonzero(np.isfinite(heights)), strict=True):
        if rim(y, x, peaks[y, x], heights[y, x], near):
            glow[y, x] = True
    # supported by neighbours before the glow goes (a bright tile's neighbours are glow)
    ok = np.isfinite(heights)
    filled = np.where(ok, heights, np.nan)
    pad = np.pad(filled, 1, constant_values=np.nan)
    neigh = np.stack(
        [
            pad[1 + dy : 1 + dy + heights.shape[0], 1 + dx : 1 + dx + heights.shape[1]]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0)
        ]
    )
    with np.errstate(invalid="ignore"):
        close = np.abs(neigh - heights[None]) <= 2.0 * near
    supported = np.any(close & np.isfinite(neigh), axis=0)
    lonely = ok & ~supported & (ndimage.binary_dilation(ok, np.ones((3, 3))).sum() > 1)
    heights[lonely | glow] = np.nan
    session.edge_tiles = edge * (~(lonely | glow))  # type: ignore[attr-defined]
    # a tile may see two layers (a semi-transparent one above): its highest and lowest
    # local peaks of at least LAYER_FRACTION of its own, with sharp detail near them
    upper, lower = heights.copy(), heights.copy()
    for y, x in zip(*np.nonzero(np.isfinite(heights)), strict=True):
        v = ts[:, y, x]
        lim = max(floor, LAYER_FRACTION * peaks[y, x])
        cand = [
            k
            for k in range(1, n - 1)
            if v[k] >= lim
            and v[k] >= v[k - 1]
            and v[k] >= v[k + 1]
            and fine[k - 1 : k + 2, y, x].max() >= fine_floor
            and not rim(y, x, v[k], zs[k], LAYER_RIM_STEPS * near)
        ]
        if cand:
            upper[y, x] = max(upper[y, x], _fit_peak(zs, v, cand[-1])[0])
            lower[y, x] = min(lower[y, x], _fit_peak(zs, v, cand[0])[0])
    session.layers = (upper, lower)  # type: ignore[attr-defined]
    return heights, peaks


def _extremes(
    session: _Session, s: _Setup, heights: np.ndarray, peaks: np.ndarray
) -> tuple[float, float]:
    ok = np.isfinite(heights)
    if not ok.any():
        best = float(peaks.max())
        raise FocusNotFoundError(
            f"no tile of the field shows structure above the noise in search_um=[{s.lo:.6g}, "
            f"{s.hi:.6g}] um (best tile score {best:.3g} x the noise energy, min_score="
            f"{s.min_score!r})",
            curve=session.curve(),
            best_score=best,
        )
    edge = session.edge_tiles  # type: ignore[attr-defined]
    for e, name in ((1, "top"), (-1, "bottom")):
        if np.any((edge == e) & ok):
            raise _edge_error(session, s, name, float(peaks[(edge == e) & ok].max()))
    upper, lower = session.layers  # type: ignore[attr-defined]
    return _span_extremes(heights, upper, lower)


def _rise(h: np.ndarray, axis: int) -> np.ndarray:
    """Rise per tile along ``axis``: the smaller of the differences to the two neighbours.

    The minmod limiter of finite-volume schemes [1]_: a slope shows on both sides with one
    sign, a step (a layer's edge, an outlier) on one side only, a summit or a trough with
    two signs (0). On the field's border the one neighbour's; 0 next to a tile without a
    focus.

    References
    ----------
    .. [1] P. L. Roe, "Characteristic-based schemes for the Euler equations", Annu. Rev.
       Fluid Mech. 18, 337-365 (1986), doi:10.1146/annurev.fl.18.010186.002005
    """
    if h.shape[axis] < 2:
        return np.zeros_like(h)
    d = np.diff(h, axis=axis)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 0)
    before = np.pad(d, pad, mode="edge")  # the field's border: its one neighbour
    pad[axis] = (0, 1)
    after = np.pad(d, pad, mode="edge")
    rise = np.where(before * after > 0, np.minimum(np.abs(before), np.abs(after)), 0.0)
    return np.nan_to_num(rise)  # NaN (a neighbour without a focus): 0


def _span_extremes(
    heights: np.ndarray, upper: np.ndarray | None = None, lower: np.ndarray | None = None
) -> tuple[float, float]:
    """Highest and lowest point: each tile's focus plus or minus half its span.

    A tile's focus is about its mean height; a sloping tile reaches half a tile's rise
    above and below it (its corner), the rise taken from the neighbours' foci.
    """
    half = 0.5 * (_rise(heights, 0) + _rise(heights, 1))
    up = heights if upper is None else upper
    lo = heights if lower is None else lower
    # a second layer is taken as flat over its tile: the rise is the surface's
    with np.errstate(invalid="ignore"):
        half_up = np.where(up > heights, 0.0, half)
        half_lo = np.where(lo < heights, 0.0, half)
    return float(np.nanmax(up + half_up)), float(np.nanmin(lo - half_lo))


# ------------------------------------------------------------------------------ auto_zscan


def auto_zscan(
    stage: Any,
    camera: Any,
    *,
    search_um: tuple[float, float],
    objective: optics.Objective | str,
    fuser: Any = None,
    spacing_um: float | None = None,
    margin_steps: int = 1,
    range_options: dict[str, Any] | None = None,
    on_range: Callable[[SampleRange], Any] | None = None,
    **run_options: Any,
) -> Any:
    """Find the specimen's range, plan the scan that covers it, and run it.

    The procedure of Urwin (2021) in one call: :func:`find_sample_range`, then
    :func:`nanoro_optics.zscan.plan_for_sample` (spacing at most the objective's depth of
    field, ``margin_steps`` beyond each end), then :func:`nanoro_optics.acquire.run_zscan`.
    The plan must lie inside ``search_um`` (its start is never below ``search_um[0]``);
    one that does not is refused before the scan moves anything.

    Parameters
    ----------
    stage, camera, search_um, objective
        As :func:`find_sample_range`.
    fuser : StackFuser, keyword-only
        Passed to :func:`~nanoro_optics.acquire.run_zscan` (fuses while acquiring).
    spacing_um : float, keyword-only
        Largest scan spacing (default the objective's, see ``plan_for_sample``).
    margin_steps : int, keyword-only
        Steps beyond each end of the range (default 1).
    range_options : dict, keyword-only
        Further keyword arguments of :func:`find_sample_range` (``timeout_s`` and
        ``backlash_um`` are taken from ``run_options`` unless given here).
    on_range : callable, keyword-only
        Called with the :class:`SampleRange` before the scan starts.
    **run_options
        Keyword arguments of :func:`~nanoro_optics.acquire.run_zscan`.

    Returns
    -------
    nanoro_optics.acquire.ZStack
        The stack, with its ``plan``.

    Raises
    ------
    FocusNotFoundError, FocusSearchError
        From the range search (nothing scanned).
    ValueError
        A plan reaching outside ``search_um``.
    """
    from ..acquire import run_zscan
    from ..zscan import plan_for_sample

    if on_range is not None and not callable(on_range):
        raise TypeError(f"on_range must be callable, got {on_range!r}")
    opts = dict(range_options or {})
    for key in ("timeout_s", "backlash_um"):
        if key in run_options and key not in opts:
            opts[key] = run_options[key]
    rng = find_sample_range(stage, camera, search_um=search_um, objective=objective, **opts)
    plan = plan_for_sample(
        rng.top_um,
        rng.bottom_um,
        spacing_um=spacing_um,
        objective=objective,
        margin_steps=margin_steps,
    )
    lo, hi = check_interval(search_um, "search_um")
    positions = plan.positions_um()
    overshoot = check_finite_real(run_options.get("backlash_um", 0.0), "backlash_um")
    if positions.min() < lo or positions.max() + overshoot > hi:
        raise ValueError(
            f"the plan for the found range {rng.bottom_um:.6g} .. {rng.top_um:.6g} um runs "
            f"from {positions.min():.6g} to {positions.max() + overshoot:.6g} um (margins and "
            f"overshoot included), outside search_um={(lo, hi)!r}; widen the search range or "
            "lower margin_steps"
        )
    if on_range is not None:
        on_range(rng)
    return run_zscan(plan, stage, camera, fuser=fuser, **run_options)
