"""Strategies for beam-tilt pairs."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..._validation import check_positive
from ._common import (
    _DEFAULT,
    _SIGNED_UNIT,
    _as_strategy,
    _floats,
)

__all__ = ["beam_tilt_pairs"]


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
    from ...beamtilt import simulate_tilt_pair

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
