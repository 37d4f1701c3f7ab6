"""Focus measures in units of the frame's noise, for whole frames and for tiles.

Every measure here is an energy of some (high-pass or band-pass) filter output divided by
the energy the same filter gives for white noise of the frame's own noise level
(:func:`nanoro_optics.fusion.noise.noise_sigma`, the fuser's estimate), so that a frame of
pure noise scores 1 whatever its brightness, bit depth or camera, and a score of 9 means
"nine times the energy noise alone would give". A blank field therefore scores about 1 at
every focus position, and the search functions of :mod:`nanoro_optics.autofocus` can refuse
it instead of returning the position of the largest noise fluctuation.

================================ ============================================================
name                             energy of
================================ ============================================================
``"normalized_variance"``        the frame about its mean (Groen et al. [1]_ divide the
                                 variance by the mean brightness; here by the noise variance)
``"brenner"``                    the difference of pixels two apart along rows (Brenner et
                                 al. [2]_)
``"tenengrad"``                  the Sobel gradient magnitude (Tenenbaum, Krotkov [3]_)
``"laplacian"``                  the 3 x 3 Laplacian about its mean, i.e. the variance of the
                                 Laplacian (Pech-Pacheco et al. [4]_)
``"bandpass"``                   a difference-of-Gaussians band set by the objective: its
                                 upper edge below the incoherent cutoff ``2 NA / lambda`` of
                                 the objective on the pixel grid, where only noise lies
                                 beyond (Goodman [5]_), and its lower edge a quarter of that
================================ ============================================================

Colour frames are scored on the mean of their channels (with the noise of that mean);
integer frames of any bit depth and float frames are accepted. Tiles: :func:`tile_scores`
gives the score of every tile of a grid, so a frame says *where* it is sharp.

References
----------
.. [1] F. C. A. Groen, I. T. Young and G. Ligthart, "A comparison of different focus
   functions for use in autofocus algorithms", Cytometry 6, 81-91 (1985),
   doi:10.1002/cyto.990060202
.. [2] J. F. Brenner et al., "An automated microscope for cytologic research", J. Histochem.
   Cytochem. 24, 100-111 (1976), doi:10.1177/24.1.1254907
.. [3] E. Krotkov, "Focusing", Int. J. Comput. Vision 1, 223-237 (1988),
   doi:10.1007/BF00127822
.. [4] J. L. Pech-Pacheco, G. Cristobal, J. Chamorro-Martinez and J. Fernandez-Valdivia,
   "Diatom autofocusing in brightfield microscopy: a comparative study", Proc. 15th ICPR,
   vol. 3, 314-317 (2000), doi:10.1109/ICPR.2000.903548
.. [5] J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed., Roberts (2005), sec. 6.3
   (the incoherent cutoff frequency ``2 NA / lambda``).
.. [6] Y. Sun, S. Duthaler and B. J. Nelson, "Autofocusing in computer microscopy: selecting
   the optimal focus algorithm", Microsc. Res. Tech. 65, 139-149 (2004),
   doi:10.1002/jemt.20118
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optics
from .._validation import check_choice, check_int, check_positive

__all__ = [
    "MEASURES",
    "FocusBand",
    "focus_band",
    "focus_score",
    "frame_noise",
    "noise_threshold",
    "tile_scores",
]

#: Names of the focus measures (see the module table).
MEASURES = ("normalized_variance", "brenner", "tenengrad", "laplacian", "bandpass")

#: Response of a Gaussian low-pass ``exp(-2 pi^2 s^2 f^2)`` falls to 1/2 at
#: ``f = _HALF / s`` cycles per pixel.
_HALF = math.sqrt(math.log(2.0) / 2.0) / math.pi
#: The band's upper edge as a fraction of the optical cutoff, and the highest it may be
#: (cycles/px): above 0.35 the Gaussian low-pass of the band is under half a pixel wide.
_BAND_TOP_OF_CUTOFF = 0.8
_BAND_TOP_MAX = 0.35
#: Ratio of the band's upper to lower edge (two octaves).
_BAND_RATIO = 4.0


@dataclass(frozen=True)
class FocusBand:
    """A spatial-frequency band ``[low, high]`` in cycles per pixel (``0 < low < high``).

    Attributes
    ----------
    low_per_px, high_per_px : float
        Half-response edges of the difference-of-Gaussians band-pass.
    """

    low_per_px: float
    high_per_px: float

    def __post_init__(self) -> None:
        lo = check_positive(self.low_per_px, "low_per_px")
        hi = check_positive(self.high_per_px, "high_per_px")
        if not lo < hi:
            raise ValueError(f"low_per_px={lo!r} must be below high_per_px={hi!r}")
        if hi > 0.5:
            raise ValueError(f"high_per_px={hi!r} is above the Nyquist frequency 0.5 cycles/px")
        object.__setattr__(self, "low_per_px", lo)
        object.__setattr__(self, "high_per_px", hi)

    @property
    def sigmas_px(self) -> tuple[float, float]:
        """Standard deviations (px) of the narrow and the wide Gaussian of the band-pass."""
        return _HALF / self.high_per_px, _HALF / self.low_per_px


def focus_band(
    objective: optics.Objective | str,
    *,
    pixel_um: float,
    wavelength_um: float = optics.DEFAULT_WAVELENGTH_UM,
    defocus_um: float | None = None,
) -> FocusBand:
    """Return the band of the ``"bandpass"`` measure for an objective on a pixel grid.

    Without ``defocus_um`` the band's upper edge is 0.8 x the incoherent cutoff
    ``2 NA / lambda`` in cycles per pixel (at most 0.35), its lower edge a quarter of that:
    the finest detail the objective passes, whose contrast falls fastest with defocus.
    With ``defocus_um`` the band is centred (on a log scale, two octaves wide) on the
    period ``2 dz tan(asin(NA / n))`` of the geometric blur spot at that defocus, the detail
    that still shows ``defocus_um`` away from focus: a search stepping by ``2 dz`` sees every
    focus between its steps.

    Parameters
    ----------
    objective : Objective or str
        The objective or a key of :data:`~nanoro_optics.optics.OBJECTIVES`.
    pixel_um : float, keyword-only
        Object-space pixel size (um, > 0).
    wavelength_um : float, keyword-only
        Vacuum wavelength (um); default 0.70 as the depth-of-field table.
    defocus_um : float, keyword-only
        Defocus the band should still see (um, > 0).

    Returns
    -------
    FocusBand

    References
    ----------
    .. [1] J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed. (2005), sec. 6.3.

    Examples
    --------
    >>> b = focus_band("Nikon MRP70401", pixel_um=6.5 / 40)
    >>> round(b.high_per_px, 3), round(b.low_per_px, 3)
    (0.241, 0.06)
    """
    obj = _objective(objective)
    p = check_positive(pixel_um, "pixel_um")
    lam = check_positive(wavelength_um, "wavelength_um")
    cutoff = 2.0 * obj.na / lam * p  # cycles per pixel
    top = min(_BAND_TOP_OF_CUTOFF * cutoff, _BAND_TOP_MAX)
    if defocus_um is None:
        return FocusBand(top / _BAND_RATIO, top)
    dz = check_positive(defocus_um, "defocus_um")
    tan_a = math.tan(math.asin(min(obj.na / obj.n_immersion, 0.999)))
    centre = p / (2.0 * dz * tan_a)
    hi = min(centre * math.sqrt(_BAND_RATIO), top)
    return FocusBand(hi / _BAND_RATIO, hi)


def _objective(objective: Any) -> optics.Objective:
    if isinstance(objective, optics.Objective):
        return objective
    if isinstance(objective, str):
        if objective not in optics.OBJECTIVES:
            raise ValueError(
                f"objective {objective!r} is unknown; known: {sorted(optics.OBJECTIVES)}"
            )
        return optics.OBJECTIVES[objective]
    raise TypeError(f"objective must be an Objective or a preset name, got {objective!r}")


def _as_frame(frame: Any) -> np.ndarray:
    """Check a frame; return it as (H, W, C)."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype.kind not in "iuf":
        raise TypeError(f"frame must have an integer or float dtype, got {frame.dtype}")
    if frame.ndim not in (2, 3) or min(frame.shape[:2]) < 3 or frame.size == 0:
        raise ValueError(
            f"frame must be 2-D or (rows, cols, channels) with at least 3 x 3 pixels, "
            f"got shape {frame.shape}"
        )
    if frame.dtype.kind == "f" and not np.all(np.isfinite(frame)):
        raise ValueError("frame must be finite everywhere")
    return frame if frame.ndim == 3 else frame[..., None]


def frame_noise(frame: np.ndarray) -> float:
    """Noise standard deviation of the channel mean of ``frame`` (DN).

    The fuser's per-channel estimate (:func:`nanoro_optics.fusion.noise.noise_sigma`:
    robust MAD of second differences in the flattest quarter of the frame, at least 1 DN
    for integer frames) combined for the mean of ``C`` channels,
    ``sqrt(sum sigma_c^2) / C`` (independent channel noise).

    Parameters
    ----------
    frame : numpy.ndarray
        2-D grey or ``(rows, cols, channels)`` frame.

    Returns
    -------
    float
    """
    from ..fusion.noise import noise_sigma

    f3 = _as_frame(frame)
    sig = np.asarray(noise_sigma(f3), dtype=np.float64)
    return float(np.sqrt(np.sum(sig**2)) / f3.shape[2])


def _grey(f3: np.ndarray) -> np.ndarray:
    g = f3.astype(np.float64, copy=False)
    return g[..., 0] if g.shape[2] == 1 else g.mean(axis=2)


@functools.lru_cache(maxsize=64)
def _noise_gain(measure: str, sigmas: tuple[float, float] | None) -> float:
    """Sum of squared coefficients of the measure's filter (output energy per noise variance).

    Computed from the filter's impulse response, exact whatever the kernel.
    """
    if measure == "normalized_variance":
        return 1.0  # the mean's removal takes one of the frame's many degrees of freedom
    size = 9 if sigmas is None else 2 * math.ceil(5 * sigmas[1]) + 9
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    out = _filtered(delta, measure, sigmas, centre=False)
    return float(sum(np.sum(o**2) for o in out))


def _filtered(
    g: np.ndarray, measure: str, sigmas: tuple[float, float] | None, *, centre: bool = True
) -> list[np.ndarray]:
    """Filter outputs whose summed squares are the measure's energy (zero mean for noise)."""
    from scipy import ndimage

    if measure == "normalized_variance":
        return [g - g.mean()]
    if measure == "brenner":
        return [g[:, 2:] - g[:, :-2]]
    if measure == "tenengrad":
        return [ndimage.sobel(g, axis=0), ndimage.sobel(g, axis=1)]
    if measure == "laplacian":
        lap = ndimage.laplace(g)
        return [lap - lap.mean() if centre else lap]
    assert sigmas is not None
    s1, s2 = sigmas
    return [ndimage.gaussian_filter(g, s1) - ndimage.gaussian_filter(g, s2)]


@functools.lru_cache(maxsize=64)
def noise_threshold(
    measure: str,
    sigmas: tuple[float, float] | None,
    n_pixels: int,
    *,
    false_alarm: float = 1e-6,
) -> float:
    """Score that noise alone exceeds with probability ``false_alarm`` (per tile or frame).

    For white Gaussian noise the score of a region of ``n_pixels`` is a mean of squared,
    correlated filter outputs: approximately ``chi2(k) / k`` with ``k = n_pixels / c``
    degrees of freedom, where ``c = sum(|H|^4) M / (sum |H|^2)^2`` (``H`` the filter's
    frequency response on an ``M``-point grid) is the number of pixels per independent
    sample (1 for white output, many for a low band-pass). The threshold is that
    distribution's ``1 - false_alarm`` quantile, times 1.15 for the noise estimate, which
    reads a few per cent low.

    References
    ----------
    .. [1] A. Papoulis, *Probability, Random Variables and Stochastic Processes*, 3rd ed.,
       McGraw-Hill (1991), sec. 9-5 (variance of the sample mean of a correlated process).
    """
    from scipy import stats

    if measure == "normalized_variance":
        c = 1.0
    else:
        size = 9 if sigmas is None else 2 * math.ceil(5 * sigmas[1]) + 9
        size = max(size, 64)
        delta = np.zeros((size, size))
        delta[size // 2, size // 2] = 1.0
        p2 = np.zeros((size, size))
        for h in _filtered(delta, measure, sigmas, centre=False):
            hp = np.zeros((size, size))
            hp[: h.shape[0], : h.shape[1]] = h
            p2 += np.abs(np.fft.fft2(hp)) ** 2
        c = float(np.sum(p2**2) * p2.size / np.sum(p2) ** 2)
    k = max(n_pixels / max(c, 1.0), 0.5)
    return 1.15 * float(stats.chi2.isf(false_alarm, k) / k)


def _check_measure(measure: Any, band: Any) -> tuple[float, float] | None:
    check_choice(measure, "measure", MEASURES)
    if measure != "bandpass":
        return None
    if not isinstance(band, FocusBand):
        raise TypeError(f"the bandpass measure needs band=FocusBand (see focus_band), got {band!r}")
    return band.sigmas_px


def _energy_maps(
    g: np.ndarray, measure: str, sigmas: tuple[float, float] | None
) -> tuple[np.ndarray, float]:
    """Per-pixel squared filter output (padded to g's shape) and the white-noise gain."""
    out = _filtered(g, measure, sigmas)
    e = np.zeros(g.shape, dtype=np.float64)
    for o in out:
        if o.shape == g.shape:
            e += o**2
        else:  # brenner: valid part only, placed at the left
            e[:, : o.shape[1]] += o**2
    gain = _noise_gain(measure, sigmas)
    return e, gain


def focus_score(
    frame: np.ndarray,
    *,
    measure: str = "laplacian",
    band: FocusBand | None = None,
    noise_dn: float | None = None,
) -> float:
    """Focus measure of a whole frame, in units of its noise energy (noise alone scores 1).

    Parameters
    ----------
    frame : numpy.ndarray
        2-D grey or ``(rows, cols, channels)`` colour frame, integer (any bit depth) or
        float dtype.
    measure : str, keyword-only
        One of :data:`MEASURES` (see the module table); default ``"laplacian"``.
    band : FocusBand, keyword-only
        The band of ``"bandpass"`` (:func:`focus_band`).
    noise_dn : float, keyword-only
        Noise standard deviation of the channel mean (> 0); default :func:`frame_noise`.

    Returns
    -------
    float
        ``energy / (gain x noise_dn^2)``, with ``gain`` the filter's white-noise gain.

    References
    ----------
    See the module's references, one per measure.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(100.0, 5.0, (256, 256))
    >>> round(focus_score(noise, noise_dn=5.0), 1)
    1.0
    """
    sigmas = _check_measure(measure, band)
    f3 = _as_frame(frame)
    sigma = frame_noise(frame) if noise_dn is None else check_positive(noise_dn, "noise_dn")
    e, gain = _energy_maps(_grey(f3), measure, sigmas)
    n = e.size if measure != "brenner" else e.shape[0] * (e.shape[1] - 2)
    return float(e.sum() / n / (gain * sigma**2))


def tile_scores(
    frame: np.ndarray,
    *,
    tile_px: int = 32,
    measure: str = "laplacian",
    band: FocusBand | None = None,
    noise_dn: float | None = None,
) -> np.ndarray:
    """Focus measure of every tile of a grid over ``frame`` (units of noise energy).

    The frame is filtered whole (no tile edges in the filter) and the per-pixel energies
    averaged over tiles of ``tile_px x tile_px`` pixels; the last row and column of tiles
    take the remainders when the frame is not a multiple of the tile size.

    Parameters
    ----------
    frame : numpy.ndarray
        As :func:`focus_score`.
    tile_px : int, keyword-only
        Tile size (>= 4 px; a frame smaller than a tile is one tile).
    measure, band, noise_dn
        As :func:`focus_score`.

    Returns
    -------
    numpy.ndarray
        float64 ``(tile_rows, tile_cols)``.

    Examples
    --------
    >>> frame = np.zeros((64, 64)); frame[:32, :32] = np.indices((32, 32)).sum(0) % 2 * 50
    >>> s = tile_scores(frame, tile_px=32, noise_dn=1.0)
    >>> s.shape, bool(s[0, 0] > 100 * s[1, 1])
    ((2, 2), True)
    """
    t = check_int(tile_px, "tile_px", 4)
    sigmas = _check_measure(measure, band)
    f3 = _as_frame(frame)
    sigma = frame_noise(frame) if noise_dn is None else check_positive(noise_dn, "noise_dn")
    e, gain = _energy_maps(_grey(f3), measure, sigmas)
    if measure == "brenner":
        e = e[:, :-2]
    return _tile_means(e, t) / (gain * sigma**2)


def _tile_edges(n: int, t: int) -> np.ndarray:
    k = max(1, n // t)
    edges = np.arange(k + 1) * t
    edges[-1] = n
    return edges


def _tile_means(e: np.ndarray, t: int) -> np.ndarray:
    """Mean of ``e`` over the tiles of the grid (summed-area table, no Python loops)."""
    ry, rx = _tile_edges(e.shape[0], t), _tile_edges(e.shape[1], t)
    sat = np.zeros((e.shape[0] + 1, e.shape[1] + 1))
    sat[1:, 1:] = e.cumsum(0).cumsum(1)
    s = sat[np.ix_(ry, rx)]
    sums = s[1:, 1:] - s[:-1, 1:] - s[1:, :-1] + s[:-1, :-1]
    areas = np.diff(ry)[:, None] * np.diff(rx)[None, :]
    return sums / areas
