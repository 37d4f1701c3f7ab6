"""SerialEM-style autofocus calibration: a curve of displacement against defocus.

The beam-tilt-induced displacement is not exactly linear in defocus (magnification and
rotation change with focus, and at large defocus other lens terms matter), so SerialEM
stores the whole curve instead of one slope [1]_:

* displacements per unit tilt are measured at ``N`` defocus levels
  ``z_k = offset - R/2 + k R/(N-1)`` (defaults ``R = 72`` um, ``N = 13``,
  :func:`focus_levels`);
* the curve is smoothed by a running least-squares line over ``smooth_levels`` (3) levels;
* it is re-zeroed so that zero displacement means zero defocus;
* a shift is converted to defocus by the closest approach of the shift to the piecewise
  linear curve, extrapolating the end segments past the ends;
* a new calibration is compared with a stored one by the "slope and magnitude" of the
  curves: length ratio, rotation, and the predicted defocus change in percent;
* an extended range (default -300 .. +100 um) adds sparse levels outside the regular range,
  measured at a reduced beam tilt (factor 0.1 .. 1, default 0.5), :func:`extended_focus_levels`.

Shifts are stored per mrad of ``t`` (half the tilt separation of the ``-t``/``+t`` pair), so a
calibration taken at one tilt serves measurements at another, as in SerialEM. This scaling
assumes the term linear in tilt dominates; the ``Cs |t|^2`` offset (67 nm at 5 mrad for
Cs = 2.7 mm) is not rescaled.

References
----------
.. [1] D. N. Mastronarde, SerialEM help, "Calibration menu": Autofocus, Set Focus Range,
   Extended Autofocus, Set Extended Range; D. N. Mastronarde, "Automated electron
   microscope tomography using robust prediction of specimen movements",
   J. Struct. Biol. 152, 36-51 (2005), doi:10.1016/j.jsb.2005.07.007
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import (
    as_float_array,
    as_float_array_in,
    check_int,
    check_interval,
    check_range,
)
from .model import ABERRATION_MAX_UM, TILT_MAX_MRAD, TILT_MIN_MRAD

__all__ = [
    "CurveComparison",
    "FocusCalibrationCurve",
    "extended_focus_levels",
    "focus_levels",
]

#: SerialEM defaults: total range (um) and number of levels of a regular calibration.
DEFAULT_RANGE_UM = 72.0
DEFAULT_LEVELS = 13
#: SerialEM defaults of the extended range (um) and its approximate interval.
DEFAULT_EXTENDED_UM = (-300.0, 100.0)
DEFAULT_EXTENDED_INTERVAL_UM = 20.0
#: Beam tilt factor for the extended levels: default and the allowed range.
DEFAULT_EXTENDED_TILT_FACTOR = 0.5
EXTENDED_TILT_FACTOR_RANGE = (0.1, 1.0)


def focus_levels(
    *, range_um: float = DEFAULT_RANGE_UM, n_levels: int = DEFAULT_LEVELS, offset_um: float = 0.0
) -> np.ndarray:
    """Defocus levels of a regular calibration, ``offset - R/2 + k R/(N-1)`` (um).

    Parameters
    ----------
    range_um : float
        Total range ``R`` (um), > 0.
    n_levels : int
        Number of levels ``N`` (>= 3).
    offset_um : float
        Offset of the whole range (negative = underfocus).

    Returns
    -------
    numpy.ndarray
        ``N`` increasing levels (um).

    Examples
    --------
    >>> focus_levels()[[0, 6, 12]].tolist()
    [-36.0, 0.0, 36.0]
    """
    r = check_range(range_um, "range_um", 0.0, ABERRATION_MAX_UM)
    if r <= 0:
        raise ValueError(f"range_um must be > 0, got {r!r}")
    n = check_int(n_levels, "n_levels", 3, 10_000)
    off = check_range(offset_um, "offset_um", -ABERRATION_MAX_UM, ABERRATION_MAX_UM)
    return off - r / 2.0 + np.arange(n) * r / (n - 1)


def extended_focus_levels(
    *,
    regular_um: tuple[float, float],
    lower_um: float = DEFAULT_EXTENDED_UM[0],
    upper_um: float = DEFAULT_EXTENDED_UM[1],
    interval_um: float = DEFAULT_EXTENDED_INTERVAL_UM,
) -> np.ndarray:
    """Sparse levels outside the regular range, evenly filling each side.

    The actual interval on each side is the largest that is no more than ``interval_um``
    and divides that side evenly (SerialEM's "somewhat less than specified").

    Parameters
    ----------
    regular_um : (float, float)
        Lowest and highest level of the regular calibration (um).
    lower_um, upper_um : float
        Ends of the extended range (um); ``lower_um`` < 0 underfocus.
    interval_um : float
        Approximate interval (um), >= 6 (SerialEM's minimum).

    Returns
    -------
    numpy.ndarray
        Increasing levels strictly outside ``regular_um`` (um).

    Examples
    --------
    >>> extended_focus_levels(regular_um=(-36.0, 36.0), lower_um=-100.0, upper_um=60.0).tolist()
    [-100.0, -84.0, -68.0, -52.0, 48.0, 60.0]
    """
    lim = ABERRATION_MAX_UM
    lo_reg, hi_reg = check_interval(regular_um, "regular_um")
    check_range(lo_reg, "regular_um[0]", -lim, lim)
    check_range(hi_reg, "regular_um[1]", -lim, lim)
    lo = check_range(lower_um, "lower_um", -lim, lo_reg)
    hi = check_range(upper_um, "upper_um", hi_reg, lim)
    step = check_range(interval_um, "interval_um", 6.0, 2 * lim)

    def side(span: float) -> np.ndarray:
        if span <= 0:
            return np.empty(0)
        n = math.ceil(span / step - 1e-9)
        return np.arange(1, n + 1) * (span / n)

    below = lo_reg - side(lo_reg - lo)[::-1]
    above = hi_reg + side(hi - hi_reg)
    return np.concatenate([below, above])


@dataclass(frozen=True)
class CurveComparison:
    """Slope-and-magnitude comparison of two calibration curves.

    Attributes
    ----------
    length_ratio : float
        ``|v_other| / |v_self|`` of the central (least-squares) displacement vectors.
    rotation_deg : float
        Angle from ``v_self`` to ``v_other`` (degrees, in ``(-180, 180]``).
    defocus_change_percent : float
        How much the defocus read from ``other`` differs from the defocus read from
        ``self`` for the same shift along ``v_self``:
        ``100 (|v_self| cos(rotation) / |v_other| - 1)``.
    """

    length_ratio: float
    rotation_deg: float
    defocus_change_percent: float


def _smooth(z: np.ndarray, s: np.ndarray, levels: int) -> np.ndarray:
    """Smooth by a running least-squares line over ``levels`` consecutive levels."""
    n = len(z)
    if levels <= 1:
        return s.copy()
    out = np.empty_like(s)
    half = (levels - 1) // 2
    for k in range(n):
        lo = min(max(0, k - half), n - levels)
        sl = slice(lo, lo + levels)
        zz = z[sl]
        zc = zz - zz.mean()
        slope = (zc @ (s[sl] - s[sl].mean(axis=0))) / (zc @ zc)
        out[k] = s[sl].mean(axis=0) + slope * (z[k] - zz.mean())
    return out


def _closest_approach(z: np.ndarray, pts: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Defocus of the closest point of the polyline ``(z_k, pts_k)`` to each query shift.

    End segments extend past the ends (extrapolation).
    """
    p0 = pts[:-1]  # (m, 2)
    v = pts[1:] - p0
    vv = np.sum(v * v, axis=1)
    rel = query[:, None, :] - p0[None, :, :]  # (q, m, 2)
    u = np.sum(rel * v[None], axis=2) / vv[None]  # (q, m)
    lo = np.zeros(len(vv))
    hi = np.ones(len(vv))
    lo[0] = -np.inf
    hi[-1] = np.inf
    u = np.clip(u, lo[None], hi[None])
    d = rel - u[..., None] * v[None]
    dist = np.sum(d * d, axis=2)
    best = np.argmin(dist, axis=1)
    idx = np.arange(len(query))
    ub = u[idx, best]
    return z[best] + ub * (z[best + 1] - z[best])


def _central_vector(z: np.ndarray, s: np.ndarray) -> np.ndarray:
    zc = z - z.mean()
    return (zc @ (s - s.mean(axis=0))) / (zc @ zc)


@dataclass(frozen=True)
class FocusCalibrationCurve:
    """Smoothed, re-zeroed displacement-per-tilt curve against defocus.

    Build it with :meth:`from_measurements`.

    Attributes
    ----------
    defocus_um : numpy.ndarray
        Increasing defocus levels, re-zeroed (um).
    shift_px_per_mrad : numpy.ndarray
        ``(n, 2)`` smoothed ``(dy, dx)`` per mrad of ``t`` at each level.
    zero_offset_um : float
        Nominal defocus at which the smoothed curve passes closest to zero shift; it was
        subtracted from the nominal levels.
    smooth_levels : int
        Levels in the running line.
    raw_defocus_um, raw_shift_px_per_mrad : numpy.ndarray
        The measurements (nominal defocus, unsmoothed), kept for merging.
    """

    defocus_um: np.ndarray
    shift_px_per_mrad: np.ndarray
    zero_offset_um: float
    smooth_levels: int
    raw_defocus_um: np.ndarray = field(repr=False)
    raw_shift_px_per_mrad: np.ndarray = field(repr=False)
    max_segment_angle_deg: float = 30.0

    @classmethod
    def from_measurements(
        cls,
        defocus_um: npt.ArrayLike,
        shifts: npt.ArrayLike,
        *,
        tilt_mrad: npt.ArrayLike = 1.0,
        smooth_levels: int = 3,
        max_segment_angle_deg: float = 30.0,
    ) -> FocusCalibrationCurve:
        """Build the curve from pair shifts measured at several defocus levels.

        Parameters
        ----------
        defocus_um : array_like
            Nominal defocus of each level (um), all different (any order).
        shifts : array_like, shape (n, 2)
            Shift ``(dy, dx)`` (px) of the ``+t`` image relative to the ``-t`` image.
        tilt_mrad : float or array_like
            ``t`` (mrad) for all levels or per level (the extended range uses less tilt).
        smooth_levels : int
            Levels in the running least-squares line (1 = no smoothing); <= n.
        max_segment_angle_deg : float
            Reject the curve if a segment turns further than this from the central
            direction (the least-squares displacement vector).

        Returns
        -------
        FocusCalibrationCurve

        Raises
        ------
        ValueError
            Fewer than 3 levels, repeated levels, a segment off the central direction, or
            a curve that does not move with defocus.
        """
        z = as_float_array(defocus_um, "defocus_um")
        s = as_float_array(shifts, "shifts")
        if z.ndim != 1 or z.size < 3:
            raise ValueError(f"defocus_um must be 1-D with >= 3 levels, got shape {z.shape}")
        if s.shape != (z.size, 2):
            raise ValueError(f"shifts must have shape ({z.size}, 2) of (dy, dx), got {s.shape}")
        t = as_float_array_in(tilt_mrad, "tilt_mrad", TILT_MIN_MRAD, TILT_MAX_MRAD)
        if t.ndim > 1 or (t.ndim == 1 and t.size != z.size):
            raise ValueError(
                f"tilt_mrad must be a scalar or one per level ({z.size}), got {t.shape}"
            )
        levels = check_int(smooth_levels, "smooth_levels", 1, int(z.size))
        max_angle = check_range(max_segment_angle_deg, "max_segment_angle_deg", 0.0, 180.0)
        order = np.argsort(z)
        z = z[order]
        if np.any(np.diff(z) == 0):
            raise ValueError(f"defocus_um must not repeat a level, got {np.sort(z).tolist()}")
        per = s / (t[:, None] if t.ndim else t)
        per = per[order]
        return cls._build(z, per, levels, max_angle)

    @classmethod
    def _build(
        cls, z: np.ndarray, per: np.ndarray, levels: int, max_angle: float
    ) -> FocusCalibrationCurve:
        smooth = _smooth(z, per, levels)
        v = _central_vector(z, smooth)
        vlen = float(np.hypot(*v))
        seg = np.diff(smooth, axis=0)
        if not vlen > 0:
            raise ValueError("shifts do not change with defocus: no calibration")
        cosang = (seg @ v) / (np.hypot(seg[:, 0], seg[:, 1]) * vlen + 1e-300)
        ang = np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))
        bad = np.flatnonzero(ang > max_angle)
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"segment {k} of the calibration curve (defocus {z[k]:g} to {z[k + 1]:g} um) "
                f"is {ang[k]:.1f} degrees off the central direction, more than "
                f"max_segment_angle_deg={max_angle:g}; remeasure (bad correlation?)"
            )
        z0 = float(_closest_approach(z, smooth, np.zeros((1, 2)))[0])
        for arr in (z, smooth, per):
            arr.setflags(write=False)
        zr = z - z0
        zr.setflags(write=False)
        return cls(
            defocus_um=zr,
            shift_px_per_mrad=smooth,
            zero_offset_um=z0,
            smooth_levels=levels,
            raw_defocus_um=z,
            raw_shift_px_per_mrad=per,
            max_segment_angle_deg=max_angle,
        )

    @property
    def slope_px_per_um_mrad(self) -> np.ndarray:
        """Central displacement vector ``(dy, dx)`` per um of defocus per mrad (least squares)."""
        return _central_vector(self.defocus_um, self.shift_px_per_mrad)

    def defocus_from_shift(self, shift_px: npt.ArrayLike, *, tilt_mrad: float = 1.0) -> Any:
        """Defocus (um) by closest approach of the shift to the curve.

        Parameters
        ----------
        shift_px : array_like, shape (2,) or (m, 2)
            Measured ``(dy, dx)`` (px) of the ``+t`` image relative to the ``-t`` image.
        tilt_mrad : float
            ``t`` used for the measurement (mrad).

        Returns
        -------
        float or numpy.ndarray
            Defocus (um, re-zeroed); a float for a single shift.
        """
        q = as_float_array(shift_px, "shift_px")
        t = check_range(tilt_mrad, "tilt_mrad", TILT_MIN_MRAD, TILT_MAX_MRAD)
        single = q.shape == (2,)
        if single:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != 2:
            raise ValueError(f"shift_px must be (dy, dx) or (m, 2), got shape {q.shape}")
        out = _closest_approach(self.defocus_um, self.shift_px_per_mrad, q / t)
        return float(out[0]) if single else out

    def shift_at(self, defocus_um: npt.ArrayLike, *, tilt_mrad: float = 1.0) -> np.ndarray:
        """Shift ``(dy, dx)`` (px) the curve predicts at a defocus (linear between levels)."""
        zq = as_float_array_in(defocus_um, "defocus_um", -ABERRATION_MAX_UM, ABERRATION_MAX_UM)
        t = check_range(tilt_mrad, "tilt_mrad", TILT_MIN_MRAD, TILT_MAX_MRAD)
        z = self.defocus_um
        k = np.clip(np.searchsorted(z, zq) - 1, 0, len(z) - 2)
        u = (zq - z[k]) / (z[k + 1] - z[k])
        p = self.shift_px_per_mrad
        out = p[k] + u[..., None] * (p[k + 1] - p[k])
        return np.asarray(out * t)

    def compare(self, other: FocusCalibrationCurve) -> CurveComparison:
        """Slope and magnitude of ``other`` relative to this curve.

        Returns
        -------
        CurveComparison
            Length ratio, rotation (degrees), predicted defocus change (%).
        """
        if not isinstance(other, FocusCalibrationCurve):
            raise TypeError(f"other must be a FocusCalibrationCurve, got {type(other).__name__}")
        vs = self.slope_px_per_um_mrad
        vo = other.slope_px_per_um_mrad
        ls, lo = float(np.hypot(*vs)), float(np.hypot(*vo))
        # angle in the (x, y) = (dx, dy) plane
        rot = math.degrees(math.atan2(vo[0], vo[1]) - math.atan2(vs[0], vs[1]))
        rot = (rot + 180.0) % 360.0 - 180.0
        if rot == -180.0:
            rot = 180.0
        change = 100.0 * (ls * math.cos(math.radians(rot)) / lo - 1.0)
        return CurveComparison(
            length_ratio=lo / ls, rotation_deg=rot, defocus_change_percent=change
        )

    def with_extended_range(
        self,
        defocus_um: npt.ArrayLike,
        shifts: npt.ArrayLike,
        *,
        tilt_mrad: npt.ArrayLike,
    ) -> FocusCalibrationCurve:
        """Merge sparse extended-range levels into one curve.

        Levels inside the regular range are ignored (the regular measurements win); the
        merged measurements are smoothed and re-zeroed together.

        Parameters
        ----------
        defocus_um : array_like
            Nominal defocus of the extended levels (um), e.g. from
            :func:`extended_focus_levels`, on the same nominal scale as the regular ones.
        shifts : array_like, shape (n, 2)
            Measured shifts (px).
        tilt_mrad : float or array_like
            ``t`` of the extended measurements (mrad), typically the regular tilt times a
            factor in ``[0.1, 1]`` (default 0.5 in SerialEM).

        Returns
        -------
        FocusCalibrationCurve
        """
        z = as_float_array(defocus_um, "defocus_um")
        s = as_float_array(shifts, "shifts")
        if z.ndim != 1 or s.shape != (z.size, 2):
            raise ValueError(
                f"defocus_um (n,) and shifts (n, 2) must match, got {z.shape} and {s.shape}"
            )
        t = as_float_array_in(tilt_mrad, "tilt_mrad", TILT_MIN_MRAD, TILT_MAX_MRAD)
        per = s / (t[:, None] if t.ndim else t)
        lo, hi = self.raw_defocus_um[0], self.raw_defocus_um[-1]
        keep = (z < lo) | (z > hi)
        zz = np.concatenate([self.raw_defocus_um, z[keep]])
        pp = np.concatenate([self.raw_shift_px_per_mrad, per[keep]])
        order = np.argsort(zz)
        return self._build(zz[order], pp[order], self.smooth_levels, self.max_segment_angle_deg)
