"""Focus and two-fold astigmatism from beam-tilt-induced displacements in several directions.

For a coma-free aligned column, the shift of the ``+t`` image relative to the ``-t`` image is
(see :mod:`.model`)::

    S(t) = 2 [C1 t + A1 conj(t) + C3 |t|^2 t]

which is linear in the unknowns ``C1`` (real) and ``A1 = a + i b`` (complex). Each tilt
direction gives two real equations; SerialEM's "Astigmatism by BTID" measures three
directions, i.e. 6 equations for 3 unknowns, and reports the RMS residual [1]_. Tilts along
one direction only (or its opposite) cannot separate defocus from astigmatism.

References
----------
.. [1] D. N. Mastronarde, SerialEM help, "Astigmatism by BTID" and "Correct Astigmatism".
.. [2] A. J. Koster, A. van den Bos and K. D. van der Mast, "An autofocus method for a TEM",
   Ultramicroscopy 21, 209-222 (1987), doi:10.1016/0304-3991(87)90146-2
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .._validation import check_range
from .leginon import _shifts, _tilt_vectors
from .model import CS_MAX_MM, PIXEL_SIZE_RANGE_NM, TILT_MIN_MRAD

__all__ = ["AstigmatismResult", "solve_btid_astigmatism"]


@dataclass(frozen=True)
class AstigmatismResult:
    """Outcome of :func:`solve_btid_astigmatism`.

    Attributes
    ----------
    defocus_um : float
        ``C1`` (um, > 0 overfocus); apparent (``+ Cs |t|^2``) unless ``cs_corrected``.
    astigmatism_um : complex
        ``A1`` (um) in the tilt frame. Its modulus is the astigmatism amplitude (half the
        difference between the two principal defoci), its argument twice the azimuth.
    residual_px : numpy.ndarray
        ``(n, 2)`` residual shifts (px).
    residual_rms_px : float
        RMS of the residual vector lengths (px).
    residual_rms_um : float
        The same as defocus: ``rms_px * pixel / (2 |t|_rms)`` (um).
    dof : int
        Equations minus unknowns (3 for three directions).
    cs_corrected : bool
        Whether the ``Cs |t|^2`` offset was modelled.
    """

    defocus_um: float
    astigmatism_um: complex
    residual_px: np.ndarray = field(repr=False)
    residual_rms_px: float
    residual_rms_um: float
    dof: int
    cs_corrected: bool

    @property
    def astigmatism_magnitude_um(self) -> float:
        """``|A1|`` (um)."""
        return abs(self.astigmatism_um)

    @property
    def astigmatism_azimuth_deg(self) -> float:
        """Azimuth of the astigmatism axis, ``arg(A1) / 2`` (degrees, in ``(-90, 90]``)."""
        return math.degrees(np.angle(self.astigmatism_um)) / 2.0


def solve_btid_astigmatism(
    shifts_px: npt.ArrayLike,
    tilts_mrad: npt.ArrayLike,
    *,
    pixel_size_nm: float,
    image_rotation_deg: float = 0.0,
    cs_mm: float | None = None,
) -> AstigmatismResult:
    """Solve pair shifts from several tilt directions for defocus and astigmatism.

    Parameters
    ----------
    shifts_px : array_like, shape (n, 2)
        Shift ``(dy, dx)`` (px) of each ``+t`` image relative to its ``-t`` image.
    tilts_mrad : array_like
        ``n`` complex tilts ``t`` (mrad) or ``(n, 2)`` reals; at least two directions
        that are not parallel.
    pixel_size_nm : float
        Pixel size at the specimen (nm).
    image_rotation_deg : float, optional
        Rotation of the image relative to the tilt frame (as in the simulator).
    cs_mm : float, optional
        Model the ``Cs |t|^2`` term when given.

    Returns
    -------
    AstigmatismResult

    Raises
    ------
    ValueError
        Fewer than two independent tilt directions, or mismatched shapes.

    References
    ----------
    SerialEM "Astigmatism by BTID"; Koster et al. 1987, doi:10.1016/0304-3991(87)90146-2.

    Examples
    --------
    >>> from nanoro_optics.beamtilt import displacement_px, tilt_pair_displacement
    >>> tilts = [5.0 * np.exp(1j * a) for a in (0.0, 2.094, 4.189)]
    >>> d = [tilt_pair_displacement(t, defocus_um=-1.0, astigmatism_um=0.2j) for t in tilts]
    >>> s = displacement_px(np.array(d), pixel_size_nm=0.5)
    >>> r = solve_btid_astigmatism(s, tilts, pixel_size_nm=0.5)
    >>> round(r.defocus_um, 6), complex(round(r.astigmatism_um.imag, 6) * 1j), r.dof
    (-1.0, 0.2j, 3)
    """
    t = _tilt_vectors(tilts_mrad)
    s = _shifts(shifts_px, t.shape[0])
    px = check_range(pixel_size_nm, "pixel_size_nm", *PIXEL_SIZE_RANGE_NM)
    rot = check_range(image_rotation_deg, "image_rotation_deg", -360.0, 360.0)
    tc = (t[:, 0] + 1j * t[:, 1]) * 1e-3  # rad
    if np.any(np.abs(tc) < TILT_MIN_MRAD * 1e-3):
        raise ValueError(
            f"tilts_mrad must all be at least {TILT_MIN_MRAD!r} mrad in magnitude, got "
            f"{complex(tc[np.argmin(np.abs(tc))] * 1e3)!r}"
        )
    # measured shifts as complex displacements (um) in the tilt frame
    d = (s[:, 1] + 1j * s[:, 0]) * (px * 1e-3) * np.exp(-1j * math.radians(rot))
    rhs = d.copy()
    if cs_mm is not None:
        cs = check_range(cs_mm, "cs_mm", 0.0, CS_MAX_MM) * 1e3
        rhs = rhs - 2.0 * cs * np.abs(tc) ** 2 * tc
    # unknowns (C1, a, b): 2 C1 t + 2 (a + i b) conj(t)
    cols = np.stack([2.0 * tc, 2.0 * np.conj(tc), 2j * np.conj(tc)], axis=1)  # (n, 3) complex
    design = np.concatenate([cols.real, cols.imag], axis=0)
    y = np.concatenate([rhs.real, rhs.imag])
    rank = np.linalg.matrix_rank(design)
    if rank < 3:
        raise ValueError(
            f"defocus and astigmatism need tilts along at least two non-parallel directions, "
            f"got tilts {t.tolist()} (rank {rank} < 3)"
        )
    x, *_ = np.linalg.lstsq(design, y, rcond=None)
    r = y - design @ x
    n = len(tc)
    resid_um = r[:n] + 1j * r[n:]
    resid_img = resid_um * np.exp(1j * math.radians(rot)) / (px * 1e-3)
    resid_px = np.stack([resid_img.imag, resid_img.real], axis=1)
    rms_px = float(np.sqrt(np.mean(np.abs(resid_img) ** 2)))
    t_rms = float(np.sqrt(np.mean(np.abs(tc) ** 2)))
    rms_um = rms_px * px * 1e-3 / (2.0 * t_rms)
    return AstigmatismResult(
        defocus_um=float(x[0]),
        astigmatism_um=complex(x[1], x[2]),
        residual_px=resid_px,
        residual_rms_px=rms_px,
        residual_rms_um=rms_um,
        dof=int(2 * n - 3),
        cs_corrected=cs_mm is not None,
    )
