"""Best focus, the specimen's Z range, and the scan that covers it, on any stage and camera.

:func:`find_focus` brackets the focus with a coarse sweep whose band-pass measure is sized
to its step (the detail that survives half a step of defocus, so no focus hides between
two steps), then samples a few frames half a depth of field apart around the bracket's
peak with the objective's fine band and fits a Gaussian through the three best (a
parabola in the logarithm of the scores, as in the sub-step interpolation of focus
curves [1]_). :func:`find_sample_range` sweeps once scoring every tile of the field and
fits each tile's focus, then refines the highest and lowest tiles with a few more
frames; its extremes are the specimen's top and bottom. :func:`auto_zscan` plans the scan
that covers that range (:func:`nanoro_optics.zscan.plan_for_sample`) and runs it
(:func:`nanoro_optics.acquire.run_zscan`).

Refusal
-------
A field with no structure above the noise (blank, dark, or focus far outside the search
range) raises :class:`FocusNotFoundError` (a ``ValueError``) naming the best score against
the noise floor, with the measured curve as ``err.curve``; a peak on the edge of the search
range raises it too, with ``err.at_edge`` set to ``"top"`` or ``"bottom"``: the focus may
lie beyond, and a position on the edge is not returned as focus.

Safety
------
As the executor's (:func:`nanoro_optics.acquire.run_zscan`): the search range is checked
against the stage limits before any motion; every commanded position, an overshoot
included, lies inside the search range and the limits, never below ``search_um[0]`` (the
side towards the specimen); every device call has a deadline of ``timeout_s`` kept in real
time (:class:`~nanoro_optics.acquire.MotionGuard`, and moves on the stage's clock too);
each reading is checked, after every move (the overshoot's included); a stage fault stops
the stage and moves it no more; every error carries the curve measured so far
(:class:`FocusSearchError` for a device fault, :class:`FocusNotFoundError` for a refusal).
The stage is moved to the found focus only
after success; after a refusal or a camera fault it stays at the last frame's position.

References
----------
.. [1] Y. Sun, S. Duthaler and B. J. Nelson, "Autofocusing in computer microscopy: selecting
   the optimal focus algorithm", Microsc. Res. Tech. 65, 139-149 (2004),
   doi:10.1002/jemt.20118
.. [2] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021):
   focus above the top, below the bottom, subtract, choose the spacing, scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optics
from .._validation import check_int, check_interval, check_positive
from ..hardware.errors import StageLimitError
from ._session import FocusCurve, FocusSearchError, _Session
from .measures import MEASURES, FocusBand, _objective, focus_band

__all__ = [
    "FocusCurve",
    "FocusNotFoundError",
    "FocusResult",
    "FocusSearchError",
    "find_focus",
]

#: Default step of the bracketing sweep of :func:`find_focus`, in depths of field.
FOCUS_COARSE_STEP_DOF = 4.0
#: Default least peak score (units of noise energy) taken as structure: twice what noise
#: alone gives. A blank field scores 1.0-1.1 (the noise estimate reads a few % low).
MIN_SCORE = 2.0
#: Default least ratio of the peak score to the curve's median: a field whose score is
#: high everywhere (a smooth gradient, fixed-pattern noise) has no focus.
MIN_CONTRAST = 1.25
#: Gaussian FWHM / sigma.
_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


class FocusNotFoundError(ValueError):
    """No focus in the search range: no structure above the noise, or a peak on its edge.

    Attributes
    ----------
    curve : FocusCurve
        Everything measured.
    best_score : float
        The highest score of the curve (units of noise energy).
    noise_floor : float
        The score noise alone gives (1 by construction of the measures; the curve's lowest
        score is in the message).
    at_edge : str or None
        ``"top"`` or ``"bottom"`` when the sharpest frames are on that edge of the search
        range (the focus may lie beyond), else None.
    """

    def __init__(
        self,
        message: str,
        *,
        curve: FocusCurve,
        best_score: float,
        noise_floor: float = 1.0,
        at_edge: str | None = None,
    ) -> None:
        super().__init__(message)
        self.curve = curve
        self.best_score = best_score
        self.noise_floor = noise_floor
        self.at_edge = at_edge


@dataclass(frozen=True, eq=False)
class FocusResult:
    """Where :func:`find_focus` found the focus.

    Attributes
    ----------
    z_um : float
        Best focus (um), from a Gaussian fit through the sharpest frame and its neighbours
        (sub-step); the stage was left there.
    curve : FocusCurve
        Every frame's position and scores, in capture order.
    width_um : float
        Full width at half maximum of the fitted focus curve (um).
    peak_score : float
        The sharpest frame's score (units of noise energy).
    confidence : float
        ``(1 - 1 / peak_score) x (1 - median / peak_score)`` in [0, 1]: how far the peak
        stands above the noise and above the rest of the curve.
    frames : int
        Frames taken.
    final_um : float
        The stage's reading at ``z_um`` after the search.
    """

    z_um: float
    curve: FocusCurve
    width_um: float
    peak_score: float
    confidence: float
    frames: int
    final_um: float


# ------------------------------------------------------------------------------ set-up


@dataclass(frozen=True)
class _Setup:
    lo: float
    hi: float  # the highest image position (search top minus the overshoot)
    dof: float
    fine_step: float
    obj: optics.Objective | None
    pixel_um: float | None
    wavelength_um: float
    fine: tuple[str, FocusBand | None]
    min_score: float
    min_contrast: float


def _setup(
    stage: Any,
    camera: Any,
    search_um: Any,
    objective: Any,
    spacing_um: Any,
    measure: Any,
    pixel_um: Any,
    wavelength_um: Any,
    backlash_um: float,
    min_score: Any,
    min_contrast: Any,
) -> _Setup:
    lo, hi = check_interval(search_um, "search_um")
    limits = check_interval(getattr(stage, "limits_um", None), "stage.limits_um")
    if lo < limits[0] or hi > limits[1]:
        raise StageLimitError(
            f"search_um={(lo, hi)!r} is outside the stage limits {limits!r} um; nothing was moved"
        )
    obj = None if objective is None else _objective(objective)
    lam = check_positive(wavelength_um, "wavelength_um")
    if spacing_um is not None:
        spacing = check_positive(spacing_um, "spacing_um")
    if obj is None and spacing_um is None:
        raise ValueError("give objective= (its depth of field sets the steps) or spacing_um=")
    dof = obj.depth_of_field(wavelength_um=lam) if obj is not None else 2.0 * spacing
    fine_step = spacing if spacing_um is not None else dof / 2.0
    if pixel_um is None:
        cam_px = getattr(camera, "pixel_um", None)
        if isinstance(cam_px, (int, float)) and not isinstance(cam_px, bool):
            pixel_um = cam_px
        elif obj is not None:
            from ..hardware.sim_camera import DEFAULT_CAMERA_PIXEL_UM

            pixel_um = DEFAULT_CAMERA_PIXEL_UM / obj.magnification
    px = None if pixel_um is None else check_positive(pixel_um, "pixel_um")
    if measure is None:
        measure = "bandpass" if obj is not None and px is not None else "laplacian"
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    band = None
    if measure == "bandpass":
        if obj is None or px is None:
            raise ValueError("measure='bandpass' needs objective= and pixel_um= (its band)")
        band = focus_band(obj, pixel_um=px, wavelength_um=lam)
    top = hi - backlash_um
    if top - lo < 2.0 * fine_step:
        raise ValueError(
            f"search_um={(lo, hi)!r} spans {hi - lo:.6g} um"
            + (f" (less backlash_um={backlash_um!r})" if backlash_um else "")
            + f", less than two fine steps of {fine_step:.6g} um: nothing to search"
        )
    return _Setup(
        lo=lo,
        hi=top,
        dof=dof,
        fine_step=fine_step,
        obj=obj,
        pixel_um=px,
        wavelength_um=lam,
        fine=(measure, band),
        min_score=check_positive(min_score, "min_score"),
        min_contrast=check_positive(min_contrast, "min_contrast"),
    )


def _coarse_band(s: _Setup, step_um: float) -> FocusBand:
    """Return the band that still sees detail half a step from focus (see focus_band)."""
    if s.obj is not None and s.pixel_um is not None:
        return focus_band(
            s.obj, pixel_um=s.pixel_um, wavelength_um=s.wavelength_um, defocus_um=step_um / 2
        )
    return FocusBand(0.015, 0.06)  # periods of 17 to 67 px, without an objective


def _session(
    stage: Any,
    camera: Any,
    s: _Setup,
    coarse: tuple[FocusBand, ...],
    *,
    search_um: Any,
    tile_px: Any,
    timeout_s: Any,
    backlash_um: float,
    position_tolerance_um: Any,
    readout_tolerance_um: Any,
    max_frames: Any,
) -> _Session:
    lo, hi = check_interval(search_um, "search_um")
    return _Session(
        stage,
        camera,
        search=(lo, hi),
        limits=check_interval(stage.limits_um, "stage.limits_um"),
        fine=s.fine,
        coarse=coarse,
        tile_px=check_int(tile_px, "tile_px", 4),
        timeout_s=None if timeout_s is None else check_positive(timeout_s, "timeout_s"),
        backlash_um=backlash_um,
        position_tolerance_um=(
            s.fine_step / 2.0
            if position_tolerance_um is None
            else check_positive(position_tolerance_um, "position_tolerance_um", allow_zero=True)
        ),
        readout_tolerance_um=check_positive(
            readout_tolerance_um, "readout_tolerance_um", allow_zero=True
        ),
        max_frames=check_int(max_frames, "max_frames", 3),
    )


def _sweep_positions(s: _Setup, step: float, max_frames: int) -> np.ndarray:
    n = max(2, math.ceil((s.hi - s.lo) / step - 1e-9))
    if n + 1 > max_frames:
        raise ValueError(
            f"a sweep of [{s.lo!r}, {s.hi!r}] um at {step:.6g} um needs {n + 1} frames, more "
            f"than max_frames={max_frames}; nothing was moved"
        )
    return np.linspace(s.hi, s.lo, n + 1)


# ------------------------------------------------------------------------------ fitting


def _fit_peak(z: np.ndarray, v: np.ndarray, j: int) -> tuple[float, float]:
    """Vertex and FWHM of the Gaussian through samples j-1, j, j+1 (z sorted ascending).

    A parabola through the logarithms of the three scores; where it does not open
    downwards (flat or noisy tops), a parabola through the scores themselves. The vertex
    is kept inside ``[z[j-1], z[j+1]]``.
    """
    zz, vv = z[j - 1 : j + 2], np.maximum(v[j - 1 : j + 2], 1e-12)
    width = math.nan
    d0, d2 = float(zz[0] - zz[1]), float(zz[2] - zz[1])
    if not d0 < 0.0 < d2:  # two frames at one z (a stage that did not move): no parabola
        return float(zz[1]), width
    for values, log in ((np.log(vv), True), (vv, False)):
        # the parabola through the three points, in Newton's divided differences (x from
        # zz[1]); np.polyfit's least squares warned of a poorly conditioned fit on close z
        s0 = (values[1] - values[0]) / -d0
        s1 = (values[2] - values[1]) / d2
        a = (s1 - s0) / (d2 - d0)
        b = s0 - a * d0
        if a < 0:
            vertex = zz[1] - b / (2.0 * a)
            if log:
                width = _FWHM * math.sqrt(-1.0 / (2.0 * a))
            else:
                width = 2.0 * math.sqrt(max(values[1], 1e-12) / (-2.0 * a))
            return float(min(max(vertex, zz[0]), zz[2])), float(width)
    return float(zz[1]), width  # pragma: no cover - j is a strict local maximum


def _refuse_if_flat(
    session: _Session, s: _Setup, scores: np.ndarray, what: str, noise_max: float = 0.0
) -> None:
    best = float(np.max(scores))
    med = float(np.median(scores))
    if best < max(s.min_score, noise_max) or best < s.min_contrast * med:
        raise FocusNotFoundError(
            f"no focus in search_um=[{s.lo:.6g}, {s.hi:.6g}] um: the best {what} score is "
            f"{best:.3g} x the noise energy (noise alone scores 1; this curve's lowest is "
            f"{float(np.min(scores)):.3g}, its median {med:.3g}); structure needs at least "
            f"min_score={s.min_score!r}, {noise_max:.3g} (what noise alone exceeds once in "
            f"1e6) and min_contrast={s.min_contrast!r} x the median "
            f"({session.frames} frames taken; the stage stays at the last one)",
            curve=session.curve(),
            best_score=best,
        )


def _edge_error(session: _Session, s: _Setup, edge: str, best: float) -> FocusNotFoundError:
    where = s.hi if edge == "top" else s.lo
    return FocusNotFoundError(
        f"the sharpest frames are on the {edge} edge of the search range ({where:.6g} um, score "
        f"{best:.3g} x the noise energy): the focus may lie beyond it; widen search_um "
        f"({session.frames} frames taken; the stage stays at the last one)",
        curve=session.curve(),
        best_score=best,
        at_edge=edge,
    )


# ------------------------------------------------------------------------------ find_focus


def find_focus(
    stage: Any,
    camera: Any,
    *,
    search_um: tuple[float, float],
    objective: optics.Objective | str | None = None,
    spacing_um: float | None = None,
    measure: str | None = None,
    pixel_um: float | None = None,
    wavelength_um: float = optics.DEFAULT_WAVELENGTH_UM,
    coarse_step_dof: float = FOCUS_COARSE_STEP_DOF,
    min_score: float = MIN_SCORE,
    min_contrast: float = MIN_CONTRAST,
    timeout_s: float | None = None,
    backlash_um: float = 0.0,
    position_tolerance_um: float | None = None,
    readout_tolerance_um: float = 0.1,
    max_frames: int = 200,
) -> FocusResult:
    """Find the best focus in ``search_um`` with few frames, and leave the stage there.

    1. A sweep from the top of the search range down to its bottom at ``coarse_step_dof``
       depths of field, scored with a band-pass sized to the step
       (:func:`~nanoro_optics.autofocus.focus_band` with half the step as defocus).
    2. Refusal when the best score is below ``min_score`` (noise energies) or below
       ``min_contrast`` x the curve's median; a peak on the first or last frame is
       followed to the edge and refused there (:class:`FocusNotFoundError`).
    3. Frames ``fine step`` (half a depth of field) apart around the coarse peak, scored
       with ``measure``, extended one step at a time until the sharpest frame has a
       less sharp neighbour on both sides; a Gaussian through those three gives ``z_um``.

    Parameters
    ----------
    stage : ZStage
        The focus drive (:class:`~nanoro_optics.hardware.ZStage`).
    camera : Camera
        The camera (:class:`~nanoro_optics.hardware.Camera`).
    search_um : (float, float), keyword-only
        ``(lo, hi)`` stage Z to search, inside the stage limits; ``lo`` is the side
        towards the specimen and nothing below it is ever commanded.
    objective : Objective or str, keyword-only
        The objective: its depth of field sets the steps and its NA the bands.
    spacing_um : float, keyword-only
        The fine step (um, > 0), in place of half the objective's depth of field; without
        ``objective`` the depth of field is taken as twice this.
    measure : str, keyword-only
        Fine measure (:data:`~nanoro_optics.autofocus.MEASURES`); default ``"bandpass"``
        with an objective and a pixel size, else ``"laplacian"``.
    pixel_um : float, keyword-only
        Object-space pixel size (um); default the camera's ``pixel_um`` if it has one,
        else 6.5 um / the objective's magnification.
    wavelength_um : float, keyword-only
        Vacuum wavelength of the depth of field and the bands (default 0.70 um).
    coarse_step_dof : float, keyword-only
        Step of the bracketing sweep in depths of field (> 0, default 4).
    min_score, min_contrast : float, keyword-only
        Refusal thresholds (see step 2).
    timeout_s : float, keyword-only
        Deadline (s, > 0, at most :data:`~nanoro_optics.acquire.MAX_TIMEOUT_S`) of each
        move (the command and the wait together), each reading, each snap and each
        ``stop()``, kept in real time as :func:`~nanoro_optics.acquire.run_zscan` keeps it
        (:class:`~nanoro_optics.acquire.MotionGuard`): a call that blocks past it raises
        :class:`FocusSearchError` on time (its cause a ``StageTimeoutError`` or
        ``CameraTimeoutError``), with the curve so far. None (default): no limit.
    backlash_um : float, keyword-only
        Approach every position from above by this much (>= 0); the highest frame is then
        ``search_um[1] - backlash_um`` so the overshoot stays inside the range.
    position_tolerance_um : float, keyword-only
        How far a reading may be from the commanded position (default half the fine step).
    readout_tolerance_um : float, keyword-only
        How far a reading may lie below ``search_um[0]`` or past a limit (default 0.1).
    max_frames : int, keyword-only
        Most frames the search may take (default 200); a sweep needing more is refused
        before any motion.

    Returns
    -------
    FocusResult

    Raises
    ------
    FocusNotFoundError
        No structure above the noise, or the focus on an edge of the search range.
    FocusSearchError
        A device fault (``err.curve`` holds the frames so far; the stage was stopped after
        a stage fault).
    StageLimitError
        ``search_um`` outside the stage limits (nothing moved).
    ValueError, TypeError
        Bad arguments (nothing moved).

    Examples
    --------
    >>> from nanoro_optics.hardware import MockZStage, SimulatedCamera, Specimen
    >>> stage = MockZStage(position_um=0.0)
    >>> spec = Specimen.synthetic((64, 64), relief_um=0.0, base_um=12.0, feature_px=2.0)
    >>> cam = SimulatedCamera(stage, spec, seed=1)
    >>> res = find_focus(stage, cam, search_um=(0.0, 40.0), objective="Nikon MRP70401")
    >>> abs(res.z_um - 12.0) < 0.3, res.frames < 40 / 0.857 / 3
    (True, True)
    """
    backlash = check_positive(backlash_um, "backlash_um", allow_zero=True)
    s = _setup(
        stage,
        camera,
        search_um,
        objective,
        spacing_um,
        measure,
        pixel_um,
        wavelength_um,
        backlash,
        min_score,
        min_contrast,
    )
    step = check_positive(coarse_step_dof, "coarse_step_dof") * s.dof
    session = _session(
        stage,
        camera,
        s,
        (_coarse_band(s, step),),
        search_um=search_um,
        tile_px=32,
        timeout_s=timeout_s,
        backlash_um=backlash,
        position_tolerance_um=position_tolerance_um,
        readout_tolerance_um=readout_tolerance_um,
        max_frames=max_frames,
    )
    positions = _sweep_positions(s, step, session.max_frames)
    for z in positions:
        session.snap_at(z)
    coarse = session.curve().coarse_scores
    _refuse_if_flat(session, s, coarse, "coarse", session.threshold("coarse", tile=False))
    k = int(np.argmax(coarse))
    if 0 < k < len(positions) - 1:
        zc, _ = _fit_peak(positions[::-1].copy(), coarse[::-1].copy(), len(positions) - 1 - k)
    else:
        zc = float(positions[k])
    z_um, width, peak = _fine_peak(session, s, zc, step)
    curve = session.curve()
    med = float(np.median(curve.scores))
    confidence = max(0.0, (1.0 - 1.0 / peak) * (1.0 - med / peak))
    final = session.finish_at(z_um)
    return FocusResult(
        z_um=z_um,
        curve=curve,
        width_um=width,
        peak_score=peak,
        confidence=confidence,
        frames=session.frames,
        final_um=final,
    )


def _fine_peak(
    session: _Session, s: _Setup, zc: float, bracket: float
) -> tuple[float, float, float]:
    """Fine frames around ``zc`` until the sharpest has lower neighbours; fit the peak."""
    h = s.fine_step
    grid = [zc + h, zc, zc - h]
    taken: dict[float, int] = {}

    def take(z: float) -> bool:
        if not s.lo <= z <= s.hi:
            return False
        key = round(z, 9)
        if key not in taken:
            taken[key] = session.snap_at(z)
        return True

    for z in grid:  # top down
        take(z)
    # the fine measure sees less defocus than the coarse one: while it shows nothing, step
    # outwards from the coarse estimate, within its bracket
    floor = max(s.min_score, session.threshold("fine", tile=False))
    k = 2
    while k * h <= bracket and max(session.curve().scores[list(taken.values())]) < floor:
        take(zc + k * h)
        take(zc - k * h)
        k += 1
    for _ in range(64):
        keys = sorted(taken)
        zs = np.array(keys)
        scores = session.curve().scores
        v = np.array([scores[taken[k]] for k in keys])
        j = int(np.argmax(v))
        if 0 < j < len(keys) - 1:
            if v[j] < s.min_score:
                _refuse_if_flat(session, s, v, "fine")
            meas = session.curve().z_um
            zm = np.array([meas[taken[k]] for k in keys])
            z_um, width = _fit_peak(zm, v, j)
            return z_um, width, float(v[j])
        nxt = zs[j] + h if j == len(keys) - 1 else zs[j] - h
        if not take(float(nxt)):
            # follow to the very edge before calling it
            edge_z = s.hi if j == len(keys) - 1 else s.lo
            if abs(edge_z - zs[j]) > 1e-9 and take(edge_z):
                continue
            raise _edge_error(session, s, "top" if j == len(keys) - 1 else "bottom", float(v[j]))
    raise FocusSearchError(  # pragma: no cover - bounded by max_frames first
        "the fine search did not settle", curve=session.curve()
    )
