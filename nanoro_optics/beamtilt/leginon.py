"""Leginon-style beam-tilt calibration and the defocus/stigmator least-squares solve.

The measured shift ``s`` (px, ``(dy, dx)``) of the ``+t`` image relative to the ``-t`` image
is modelled as linear in the tilt vector ``t = (tx, ty)`` (mrad) and in the defocus ``d``
(um) and the stigmator offsets ``(sx, sy)`` (stigmator units)::

    s = 2 (F d + A sx + B sy) t            (+ 2 F t Cs |t|^2 when Cs is modelled)

``F``, ``A`` and ``B`` are 2x2 matrices (rows ``dy, dx``; one column per tilt axis ``x, y``)
measured as in Leginon's calibration client [1]_: for a parameter stepped from ``p0`` to
``p1`` with tilt ``T`` along one axis, that axis' column is ``(s(p1) - s(p0)) / (2 (p1 - p0) T)``.
The solve stacks ``2 [F t | A t | B t]`` for every measured tilt and solves for
``(d, sx, sy)`` by least squares; with more equations than unknowns the residual tells
whether the shifts are consistent ([1]_, [2]_).

Fit limit: Leginon compares the sum of squared residuals (px^2) with a limit, a number whose
meaning changes with pixel size, tilt and the number of tilts [2]_. Here the RMS residual is
converted to the defocus it would represent, ``rms_px / rms_k |2 F t_k|`` (um), which does
not depend on pixel size or tilt; :attr:`DefocusStigResult.passed` compares that with
``fit_limit_um``.

Correction sign: :attr:`DefocusStigResult.defocus_um` and ``stigmator`` are the *current*
errors (defocus > 0 = overfocus, relative to the focus at which shifts vanish); to correct,
change the objective focus by ``-defocus_um`` and the stigmators by ``-stigmator``
(:attr:`~DefocusStigResult.focus_correction_um`, :attr:`~DefocusStigResult.stig_correction`).

References
----------
.. [1] C. Suloway et al., "Automated molecular microscopy: the new Leginon system",
   J. Struct. Biol. 151, 41-60 (2005), doi:10.1016/j.jsb.2005.03.010; Leginon
   ``calibrationclient.py`` (beam-tilt matrices and the least-squares solve).
.. [2] A. Cheng, "Optimizing Autofocus", Leginon documentation (fit residual, fit limit,
   Cs term of ``d = Cs a^3 + z a``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import as_float_array, as_float_array_in, check_positive, check_range
from .model import CS_MAX_MM, SHIFT_MAX_PX, TILT_MAX_MRAD, TILT_MIN_MRAD, as_complex_array

__all__ = ["BeamTiltCalibration", "DefocusStigResult", "solve_defocus_stig"]


def _tilt_vectors(tilts_mrad: Any, name: str = "tilts_mrad") -> np.ndarray:
    """``(n, 2)`` tilt vectors ``(tx, ty)`` from complex numbers or ``(n, 2)`` reals."""
    try:
        arr = np.asarray(tilts_mrad)
    except ValueError as exc:  # ragged nested sequences
        raise TypeError(f"{name} must be 1-D complex or (n, 2) reals: {exc}") from exc
    if arr.dtype.kind == "c" or arr.ndim <= 1:
        c = np.atleast_1d(as_complex_array(tilts_mrad, name, TILT_MAX_MRAD))
        if c.ndim != 1:
            raise ValueError(f"{name} must be 1-D complex or (n, 2) reals, got shape {c.shape}")
        return np.stack([c.real, c.imag], axis=-1)
    v = as_float_array_in(tilts_mrad, name, -TILT_MAX_MRAD, TILT_MAX_MRAD)
    if v.ndim != 2 or v.shape[1] != 2:
        raise ValueError(f"{name} must be 1-D complex or (n, 2) reals, got shape {v.shape}")
    return v


def _shifts(shifts_px: Any, n: int | None, name: str = "shifts_px") -> np.ndarray:
    s = as_float_array_in(shifts_px, name, -SHIFT_MAX_PX, SHIFT_MAX_PX)
    if s.ndim == 1 and s.shape == (2,):
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2) of (dy, dx), got {s.shape}")
    if n is not None and s.shape[0] != n:
        raise ValueError(
            f"{name} must have one (dy, dx) row per tilt of tilts_mrad ({n}), got {s.shape[0]}"
        )
    return s


def _matrix(value: Any, name: str) -> np.ndarray:
    m = as_float_array(value, name)
    if m.shape != (2, 2):
        raise ValueError(f"{name} must be a 2x2 matrix, got shape {m.shape}")
    m = m.copy()
    m.setflags(write=False)
    return m


@dataclass(frozen=True)
class BeamTiltCalibration:
    """Shift response matrices of one magnification (Leginon's beam-tilt calibration).

    Attributes
    ----------
    defocus_matrix : numpy.ndarray
        ``F`` (2x2), px per (um of defocus x mrad of tilt); rows ``(dy, dx)``, columns tilt
        axes ``(x, y)``.
    stig_x_matrix, stig_y_matrix : numpy.ndarray or None
        ``A`` and ``B`` (2x2), px per (stigmator unit x mrad); None if not calibrated.
    tilt_mrad : float
        Tilt used for the calibration (informational).
    """

    defocus_matrix: np.ndarray
    stig_x_matrix: np.ndarray | None = None
    stig_y_matrix: np.ndarray | None = None
    tilt_mrad: float = field(default=float("nan"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "defocus_matrix", _matrix(self.defocus_matrix, "defocus_matrix"))
        for name in ("stig_x_matrix", "stig_y_matrix"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, _matrix(v, name))
        if (self.stig_x_matrix is None) != (self.stig_y_matrix is None):
            raise ValueError("stig_x_matrix and stig_y_matrix must be given together")
        if abs(np.linalg.det(self.defocus_matrix)) < 1e-12 * max(
            1e-300, float(np.abs(self.defocus_matrix).max()) ** 2
        ):
            raise ValueError(
                f"defocus_matrix must be invertible (tilts along x and y must move the image "
                f"in different directions), got {self.defocus_matrix.tolist()}"
            )

    @property
    def has_stigmators(self) -> bool:
        """True when the stigmator matrices were calibrated."""
        return self.stig_x_matrix is not None

    @classmethod
    def from_shifts(
        cls,
        *,
        tilt_mrad: float,
        defocus_um: Sequence[float],
        defocus_shifts_px: npt.ArrayLike,
        stig_step: float | None = None,
        stig_x_shifts_px: npt.ArrayLike | None = None,
        stig_y_shifts_px: npt.ArrayLike | None = None,
    ) -> BeamTiltCalibration:
        """Build the matrices from measured pair shifts.

        Parameters
        ----------
        tilt_mrad : float
            Half the tilt separation ``T`` used for every calibration pair (mrad).
        defocus_um : (float, float)
            The two defocus levels ``(z0, z1)`` (um).
        defocus_shifts_px : array_like, shape (2, 2, 2)
            ``[axis, level, (dy, dx)]``: shift of the ``+T`` image relative to the ``-T``
            image with tilt along ``x`` (axis 0) or ``y`` (axis 1) at ``z0`` and ``z1``.
        stig_step : float, optional
            Stigmator change ``delta``: levels are ``-delta`` and ``+delta`` about the
            current setting (stigmator units).
        stig_x_shifts_px, stig_y_shifts_px : array_like, shape (2, 2, 2), optional
            ``[axis, (-delta, +delta), (dy, dx)]`` for the X and the Y stigmator.

        Returns
        -------
        BeamTiltCalibration

        References
        ----------
        Leginon ``calibrationclient`` (Suloway et al. 2005, doi:10.1016/j.jsb.2005.03.010).
        """
        t = check_range(tilt_mrad, "tilt_mrad", TILT_MIN_MRAD, TILT_MAX_MRAD)
        z = as_float_array(defocus_um, "defocus_um")
        if z.shape != (2,) or z[0] == z[1]:
            raise ValueError(f"defocus_um must be two different levels (z0, z1), got {z}")

        def columns(shifts: Any, name: str, dp: float) -> np.ndarray:
            s = as_float_array(shifts, name)
            if s.shape != (2, 2, 2):
                raise ValueError(f"{name} must have shape (2 axes, 2 levels, 2), got {s.shape}")
            # column per tilt axis: (s(p1) - s(p0)) / (2 (p1 - p0) T)
            return np.stack([(s[k, 1] - s[k, 0]) / (2.0 * dp * t) for k in range(2)], axis=1)

        f = columns(defocus_shifts_px, "defocus_shifts_px", float(z[1] - z[0]))
        if stig_step is None:
            if stig_x_shifts_px is not None or stig_y_shifts_px is not None:
                raise ValueError("stig_step is required with stigmator shifts")
            return cls(defocus_matrix=f, tilt_mrad=t)
        step = check_positive(stig_step, "stig_step")
        if stig_x_shifts_px is None or stig_y_shifts_px is None:
            raise ValueError("stig_x_shifts_px and stig_y_shifts_px are required with stig_step")
        a = columns(stig_x_shifts_px, "stig_x_shifts_px", 2.0 * step)
        b = columns(stig_y_shifts_px, "stig_y_shifts_px", 2.0 * step)
        return cls(defocus_matrix=f, stig_x_matrix=a, stig_y_matrix=b, tilt_mrad=t)

    @classmethod
    def measure(
        cls,
        measure_pair: Callable[[complex, float, tuple[float, float]], Any],
        *,
        tilt_mrad: float,
        defocus_um: Sequence[float],
        stig_step: float | None = None,
        stigmator: tuple[float, float] = (0.0, 0.0),
    ) -> BeamTiltCalibration:
        """Run the calibration sequence through a measuring callback.

        Parameters
        ----------
        measure_pair : callable
            ``measure_pair(tilt, defocus_um, (stig_x, stig_y))`` sets the column, takes the
            ``-tilt`` and ``+tilt`` images and returns the shift ``(dy, dx)`` (px) of the
            second relative to the first (or a result with ``shift_px``). ``tilt`` is complex
            (mrad).
        tilt_mrad : float
            ``T`` (mrad).
        defocus_um : (float, float)
            Two defocus levels.
        stig_step : float, optional
            Stigmator change about ``stigmator``; omit to calibrate defocus only.
        stigmator : (float, float)
            Stigmator setting about which to step, measured at the mean defocus.

        Returns
        -------
        BeamTiltCalibration
        """
        t = check_range(tilt_mrad, "tilt_mrad", TILT_MIN_MRAD, TILT_MAX_MRAD)
        axes = (complex(t, 0.0), complex(0.0, t))

        def shift(tilt: complex, z: float, stig: tuple[float, float]) -> np.ndarray:
            r = measure_pair(tilt, z, stig)
            return np.asarray(getattr(r, "shift_px", r), dtype=float)

        z = [float(v) for v in defocus_um]
        sx0, sy0 = (float(stigmator[0]), float(stigmator[1]))
        dz = np.array([[shift(a, zz, (sx0, sy0)) for zz in z] for a in axes])
        if stig_step is None:
            return cls.from_shifts(tilt_mrad=t, defocus_um=z, defocus_shifts_px=dz)
        d = check_positive(stig_step, "stig_step")
        zm = 0.5 * (z[0] + z[1])
        sxs = np.array([[shift(a, zm, (sx0 + k * d, sy0)) for k in (-1, 1)] for a in axes])
        sys_ = np.array([[shift(a, zm, (sx0, sy0 + k * d)) for k in (-1, 1)] for a in axes])
        return cls.from_shifts(
            tilt_mrad=t,
            defocus_um=z,
            defocus_shifts_px=dz,
            stig_step=d,
            stig_x_shifts_px=sxs,
            stig_y_shifts_px=sys_,
        )


@dataclass(frozen=True)
class DefocusStigResult:
    """Outcome of :func:`solve_defocus_stig`.

    Attributes
    ----------
    defocus_um : float
        Current defocus (um, > 0 overfocus). Includes the ``Cs |t|^2`` offset unless
        ``cs_corrected``.
    stigmator : tuple of float or None
        Current stigmator error ``(x, y)`` in stigmator units, None when not fitted.
    residual_px : numpy.ndarray
        ``(n, 2)`` residual shifts (px).
    residual_rms_px : float
        RMS over measurements of the residual vector length (px).
    residual_sum_sq_px2 : float
        Sum of squared residuals (px^2), Leginon's number.
    residual_rms_um : float
        The RMS residual expressed as defocus (um): independent of pixel size and tilt.
    fit_limit_um : float
        Limit applied to ``residual_rms_um``.
    passed : bool
        ``residual_rms_um <= fit_limit_um`` and the fit had spare equations (``dof > 0``).
    dof : int
        Equations minus unknowns.
    cs_corrected : bool
        True when ``cs_mm`` was given and the ``Cs |t|^2`` offset removed.
    cs_offset_um : float or None
        The removed offset ``Cs |t|^2`` (RMS over the tilts) when ``cs_corrected``.
    """

    defocus_um: float
    stigmator: tuple[float, float] | None
    residual_px: np.ndarray = field(repr=False)
    residual_rms_px: float
    residual_sum_sq_px2: float
    residual_rms_um: float
    fit_limit_um: float
    passed: bool
    dof: int
    cs_corrected: bool
    cs_offset_um: float | None

    @property
    def focus_correction_um(self) -> float:
        """Focus change that corrects the defocus: ``-defocus_um``."""
        return -self.defocus_um

    @property
    def stig_correction(self) -> tuple[float, float] | None:
        """Stigmator change that corrects the astigmatism: ``-stigmator``."""
        if self.stigmator is None:
            return None
        return (-self.stigmator[0], -self.stigmator[1])


def solve_defocus_stig(
    shifts_px: npt.ArrayLike,
    tilts_mrad: npt.ArrayLike,
    calibration: BeamTiltCalibration,
    *,
    fit_stig: bool | None = None,
    cs_mm: float | None = None,
    fit_limit_um: float = 0.1,
) -> DefocusStigResult:
    """Solve measured pair shifts for defocus (and stigmators) by least squares.

    Parameters
    ----------
    shifts_px : array_like, shape (n, 2)
        Shift ``(dy, dx)`` of each ``+t`` image relative to its ``-t`` image (px).
    tilts_mrad : array_like
        ``n`` complex tilts ``t`` (mrad) or an ``(n, 2)`` array ``(tx, ty)``.
    calibration : BeamTiltCalibration
        Matrices for this magnification.
    fit_stig : bool, optional
        Fit the stigmators too. Default: when the calibration has stigmator matrices.
        Needs tilts along at least two directions.
    cs_mm : float, optional
        Spherical aberration (mm). When given, the ``Cs |t|^2`` apparent-defocus offset is
        removed from the fit; otherwise the defocus includes it (``cs_corrected`` False).
    fit_limit_um : float, optional
        Largest acceptable RMS residual expressed as defocus (um). Default 0.1 um, the
        final-focus accuracy of Leginon's autofocus (A. Cheng, "Optimizing Autofocus");
        raise it for coarse (large-pixel) steps.

    Returns
    -------
    DefocusStigResult
        Defocus, stigmators, residuals and the fit-limit verdict.

    Raises
    ------
    ValueError
        Shapes that do not match, a singular system (e.g. stigmators from one tilt
        direction), or a stigmator fit without stigmator matrices.

    References
    ----------
    Leginon ``calibrationclient`` (Suloway et al. 2005, doi:10.1016/j.jsb.2005.03.010);
    "Optimizing Autofocus" (Leginon documentation) for the fit residual and ``Cs a^3``.

    Examples
    --------
    >>> import numpy as np
    >>> cal = BeamTiltCalibration(defocus_matrix=np.array([[0.0, 10.0], [10.0, 0.0]]))
    >>> res = solve_defocus_stig([[0.0, -100.0]], [5.0], cal)  # 2 * 10 * 5 * d = -100
    >>> round(res.defocus_um, 6), res.dof
    (-1.0, 1)
    """
    if not isinstance(calibration, BeamTiltCalibration):
        raise TypeError(
            f"calibration must be a BeamTiltCalibration, got {type(calibration).__name__}"
        )
    t = _tilt_vectors(tilts_mrad)
    s = _shifts(shifts_px, t.shape[0])
    if fit_stig is None:
        fit_stig = calibration.has_stigmators
    if not isinstance(fit_stig, (bool, np.bool_)):
        raise TypeError(f"fit_stig must be a bool or None, got {fit_stig!r}")
    if fit_stig and not calibration.has_stigmators:
        raise ValueError("fit_stig=True needs a calibration with stigmator matrices")
    limit = check_positive(fit_limit_um, "fit_limit_um")
    if np.any(np.hypot(t[:, 0], t[:, 1]) == 0):
        raise ValueError("tilts_mrad must all be non-zero")

    f = calibration.defocus_matrix
    cols = [2.0 * (t @ f.T)]  # (n, 2): response of each tilt to 1 um of defocus
    if fit_stig:
        assert calibration.stig_x_matrix is not None and calibration.stig_y_matrix is not None
        cols += [2.0 * (t @ calibration.stig_x_matrix.T), 2.0 * (t @ calibration.stig_y_matrix.T)]
    design = np.stack([c.reshape(-1) for c in cols], axis=1)  # (2n, k)
    rhs = s.copy()
    cs_offset = None
    if cs_mm is not None:
        cs = check_range(cs_mm, "cs_mm", 0.0, CS_MAX_MM)
        t2 = (np.hypot(t[:, 0], t[:, 1]) * 1e-3) ** 2  # rad^2
        offsets = cs * 1e3 * t2  # um: the apparent extra defocus of each tilt
        rhs = rhs - cols[0] * offsets[:, None]
        cs_offset = float(np.sqrt(np.mean(offsets**2)))
    k = design.shape[1]
    rank = np.linalg.matrix_rank(design)
    if rank < k:
        raise ValueError(
            f"the system is singular (rank {rank} < {k} unknowns): fitting stigmators needs "
            f"tilts along at least two different directions, got tilts {t.tolist()}"
        )
    x, *_ = np.linalg.lstsq(design, rhs.reshape(-1), rcond=None)
    resid = (rhs.reshape(-1) - design @ x).reshape(-1, 2)
    rms_px = float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    gain = float(np.sqrt(np.mean(np.sum(cols[0] ** 2, axis=1))))  # px per um of defocus
    rms_um = rms_px / gain
    dof = design.shape[0] - k
    return DefocusStigResult(
        defocus_um=float(x[0]),
        stigmator=(float(x[1]), float(x[2])) if fit_stig else None,
        residual_px=resid,
        residual_rms_px=rms_px,
        residual_sum_sq_px2=float(np.sum(resid**2)),
        residual_rms_um=rms_um,
        fit_limit_um=limit,
        passed=bool(dof > 0 and rms_um <= limit),
        dof=int(dof),
        cs_corrected=cs_mm is not None,
        cs_offset_um=cs_offset,
    )
