"""Sub-pixel image shift by band-limited phase correlation.

:func:`measure_shift` is the measuring instrument of beam-tilt autofocus: every defocus and
astigmatism estimate in this package is a ratio of a measured shift to a tilt. The pipeline is

1. mean removal and a separable Tukey (cosine-edge) taper, so the image edges of a
   non-periodic crop do not correlate with themselves at zero shift (the false lock of
   plain implementations, see [3]_);
2. ``scipy.fft.rfft2`` in float32 on a fast FFT size, cross power spectrum
   ``conj(F_ref) F_mov`` divided by ``|.|**whitening`` (1 = phase correlation,
   0 = cross-correlation);
3. a Gaussian low-pass in Fourier space (band-limiting suppresses the white shot noise that
   whitening would otherwise amplify [3]_; SerialEM band-passes before correlating [4]_).
   The spectrum is cropped to the pass band before the inverse transform, so the coarse
   correlation map is small;
4. the coarse peak, found on a wrapped map whose origin is the top-left corner (peaks near
   any corner are small shifts, as in Leginon [2]_), optionally excluding a fixed-pattern
   peak at zero shift;
5. refinement by the matrix-multiply (upsampled) DFT of Guizar-Sicairos et al. [1]_ over a
   small grid around the peak, ending with a parabola through the finest grid (the
   band-limited peak is several pixels wide, so a parabola over +-0.04 px is exact to
   ~1e-4 px);
6. by default a second pass with windows that follow the content (see ``comoving_window``).

Sign convention: if ``moving = scipy.ndimage.shift(reference, (dy, dx))`` the result is
``(dy, dx)``: the position of the content of ``moving`` minus its position in ``reference``
(rows first). This is the opposite sign of ``skimage.registration.phase_cross_correlation``,
which returns the shift that registers ``moving`` onto ``reference``.

References
----------
.. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
   registration algorithms", Opt. Lett. 33, 156-158 (2008), doi:10.1364/OL.33.000156
.. [2] A. Cheng, "Optimizing Autofocus", Leginon documentation (correlation map with origin
   at the top-left corner and wrap-around; fit residual and fit limit).
.. [3] C. D. Kuglin and D. C. Hines, "The phase correlation image alignment method",
   Proc. IEEE Int. Conf. Cybernetics and Society, 163-165 (1975); band-limited variant:
   H. Foroosh, J. B. Zerubia and M. Berthod, "Extension of phase correlation to subpixel
   registration", IEEE Trans. Image Process. 11, 188-200 (2002), doi:10.1109/83.988953
.. [4] D. N. Mastronarde, SerialEM documentation, "Autofocus", band-pass filtering before
   correlation (the tilt -, +, - triple shot is in :mod:`.triple_shot`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from .._validation import check_finite_real, check_int, check_range

__all__ = ["ShiftResult", "measure_shift"]

#: Smallest image side accepted by :func:`measure_shift` (px).
MIN_SIDE_PX = 16
#: Peaks are trusted when their height exceeds the largest expected noise maximum of the
#: coarse map, ``sqrt(2 ln n_eff)`` standard deviations, by this many standard deviations.
PEAK_SNR_MARGIN = 3.0
#: A peak whose runner-up (outside its own neighbourhood) reaches this fraction of its height
#: is ambiguous (periodic specimen, two competing features) and flagged unreliable.
MAX_PEAK_RATIO = 0.8

#: Per-thread work buffers of the full-size tapered images (see ``_tapered``).
_WORK = threading.local()

_STAGES = ((0.04, 11),)  # (step px, points per axis) of the final refinement grid


@dataclass(frozen=True)
class ShiftResult:
    """Outcome of :func:`measure_shift`.

    Attributes
    ----------
    shift_px : tuple of float
        ``(dy, dx)`` in pixels: where the content of ``moving`` sits relative to
        ``reference`` (rows first, +y down the rows, +x along the columns).
    peak_snr : float
        Height of the correlation peak above the median of the coarse map, in units of the
        map's standard deviation outside the peak's neighbourhood. Pure noise gives about
        ``sqrt(2 ln n_eff)`` (4-6 for typical maps).
    peak_ratio : float
        Height of the best competing peak (outside the main peak's neighbourhood) divided by
        the main peak's height, both above the median; near 1 means ambiguous.
    reliable : bool
        True when ``peak_snr >= min_peak_snr`` and ``peak_ratio <= MAX_PEAK_RATIO`` and the
        peak is not on the edge of the search region.
    reason : str
        Empty when reliable, otherwise why not.
    """

    shift_px: tuple[float, float]
    peak_snr: float
    peak_ratio: float
    reliable: bool
    reason: str = ""

    @property
    def dy_px(self) -> float:
        """Row component of the shift (px)."""
        return self.shift_px[0]

    @property
    def dx_px(self) -> float:
        """Column component of the shift (px)."""
        return self.shift_px[1]


def _check_image(image: Any, name: str) -> np.ndarray:
    if isinstance(image, (bool, np.bool_)):
        raise TypeError(f"{name} must be a 2-D real image, got bool {image!r}")
    try:
        arr = np.asarray(image)
    except ValueError as exc:  # ragged nested sequences
        raise TypeError(f"{name} must be a 2-D array of real numbers: {exc}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must be a 2-D array of real numbers, got dtype {arr.dtype} (shape {arr.shape})"
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image, got an array with {arr.ndim} dimensions")
    if min(arr.shape) < MIN_SIDE_PX:
        raise ValueError(
            f"{name} must be at least {MIN_SIDE_PX} x {MIN_SIDE_PX} px, got shape {arr.shape}"
        )
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def _check_content(small: np.ndarray, arr: np.ndarray, name: str) -> float | None:
    """Refuse non-finite pixels; return the mean of ``small``, None when it is constant.

    ``small`` is ``arr`` or its binned copy: non-finite pixels propagate through binning, so
    the binned copy is checked and the original is searched only to name the bad pixel.
    """
    total = float(np.sum(small, dtype=np.float64))
    if not math.isfinite(total):
        bad = np.argwhere(~np.isfinite(arr)) if arr.dtype.kind == "f" else np.empty((0, 2))
        if bad.size == 0:
            where = "values too large to sum"
        else:
            where = f"{float(arr[tuple(bad[0])])!r} at index {tuple(int(i) for i in bad[0])}"
        raise ValueError(f"{name} must contain only finite pixels, got {where}")
    if not np.any(small != small.flat[0]):
        return None
    return total / small.size


def _refuse_constant(arr: np.ndarray, name: str) -> None:
    if not np.any(arr != arr.flat[0]):
        raise ValueError(
            f"{name} is constant (every pixel {float(arr.flat[0])!r}): there is no correlation peak"
        )


def _tukey(n: int, taper: float, shift: float = 0.0, inset: float = 0.0) -> np.ndarray:
    """Tukey (tapered cosine) window sampled at pixel centres, float32.

    The window's support is ``[inset, n - inset]`` moved by ``shift`` px; ``taper`` of the
    support length on each side is a raised cosine.
    """
    x = np.arange(n) + 0.5 - shift
    lo, hi = inset, n - inset
    k = taper * (hi - lo)
    if k <= 0:
        return ((x >= lo) & (x <= hi)).astype(np.float32)
    r = np.clip(np.minimum(x - lo, hi - x) / k, 0.0, 1.0)
    return (0.5 * (1.0 - np.cos(np.pi * r))).astype(np.float32)


def _tapered(
    arr: np.ndarray, offset: float, wy: np.ndarray, wx: np.ndarray, *, slot: int | None = None
) -> np.ndarray:
    """``(arr - offset) * window`` as float32 (separable window).

    ``offset`` is any estimate of the mean (it keeps float32 FFT rounding small); the exact
    window-weighted mean is removed later in Fourier space (:func:`_cross_spectrum`).
    With ``slot`` (0 or 1) the result goes into a per-thread work buffer that is reused by
    the next call of the same shape: first-touch page faults of a fresh 4096^2 array cost
    more than the arithmetic (measured 45 ms against 12 ms).
    """
    from . import _kernels

    if slot is None:
        out = np.empty(arr.shape, dtype=np.float32)
    else:
        bufs = getattr(_WORK, "buffers", None)
        if bufs is None or bufs[0].shape != arr.shape:
            bufs = (np.empty(arr.shape, np.float32), np.empty(arr.shape, np.float32))
            _WORK.buffers = bufs
        out = bufs[slot]
    return np.asarray(_kernels.taper(arr, offset, wy, wx, out))


def _pass1_binning(ny: int, nx: int) -> int:
    """Binning of the locating pass: it only needs ~0.2 px, so bin big images."""
    side = min(ny, nx)
    if side < 128:
        return 1
    return 2 if side < 512 else 4


@lru_cache(maxsize=16)
def _band(
    ny: int, nx: int, lowpass: float, highpass: float, band: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of the rfft2 spectrum kept, the band-pass filter on the kept block, kept width.

    Rows are the non-negative then the negative frequencies up to ``band`` cycles/px;
    columns ``0 .. kx``.
    """
    ky = min(ny // 2, max(2, math.ceil(band * ny)))
    kx = min(nx // 2, max(2, math.ceil(band * nx)))
    rows = np.r_[0 : ky + 1, ny - ky : ny] if 2 * ky + 1 < ny else np.arange(ny)
    fy = np.fft.fftfreq(ny)[rows][:, None]
    fx = np.fft.rfftfreq(nx)[: kx + 1][None, :]
    f2 = fy * fy + fx * fx
    filt = np.exp(-math.log(2.0) * f2 / lowpass**2)
    if highpass > 0:
        filt *= 1.0 - np.exp(-math.log(2.0) * f2 / highpass**2)
    filt = filt.astype(np.float32)
    rows.setflags(write=False)
    filt.setflags(write=False)
    return rows, filt, kx


@dataclass
class _Spectrum:
    """Band-limited, whitened cross power spectrum of one pair (a block of the rfft2)."""

    cross: np.ndarray  # complex64 (len(rows), kx + 1)
    rows: np.ndarray
    kx: int
    shape: tuple[int, int]  # FFT shape

    @property
    def ky_int(self) -> np.ndarray:
        return np.fft.fftfreq(self.shape[0])[self.rows] * self.shape[0]

    @property
    def weights(self) -> np.ndarray:
        """Hermitian weights of the half-spectrum columns."""
        w = np.full(self.kx + 1, 2.0)
        w[0] = 1.0
        if 2 * self.kx == self.shape[1]:
            w[-1] = 1.0
        return w


def _cross_spectrum(
    a: np.ndarray,
    b: np.ndarray,
    win_a: tuple[np.ndarray, np.ndarray],
    win_b: tuple[np.ndarray, np.ndarray],
    fc: float,
    fh: float,
    p: float,
    workers: int,
) -> _Spectrum:
    """Whitened, band-limited cross spectrum of two tapered images.

    The weighted mean of each tapered image ``t = (x - offset) w`` is ``T(0) / sum(w)``;
    subtracting it times the window's spectrum ``W`` (an outer product of two 1-D spectra)
    from ``T`` gives the spectrum of ``(x - weighted mean) w`` without another image pass.
    """
    import scipy.fft as sfft

    from . import _kernels

    ny, nx = a.shape
    # zero padding to a fast size is harmless: the taper already brought the edges to zero
    shape = (sfft.next_fast_len(ny, real=True), sfft.next_fast_len(nx, real=True))
    # keep only the pass band: beyond ~2.6 fc the Gaussian is below 1%, and the cropped
    # filter is still real and symmetric, so the peak position is unbiased
    rows, filt, kx = _band(shape[0], shape[1], fc, fh, min(0.5, 2.6 * fc))

    fa = sfft.rfft2(a, s=shape, workers=workers)
    fb = sfft.rfft2(b, s=shape, workers=workers)

    def window_terms(f: np.ndarray, win: tuple[np.ndarray, np.ndarray]) -> tuple[Any, ...]:
        wy, wx = win
        total = float(wy.sum(dtype=np.float64)) * float(wx.sum(dtype=np.float64))
        mean = float(f[0, 0].real) / total if total > 0 else 0.0
        sy = np.fft.fft(wy.astype(np.float64), n=shape[0])[rows].astype(np.complex64)
        sx = np.fft.rfft(wx.astype(np.float64), n=shape[1])[: kx + 1].astype(np.complex64)
        return sy, sx, np.float32(mean)

    cross, top = _kernels.cross_block(
        fa, fb, rows, kx + 1, filt, float(p), *window_terms(fa, win_a), *window_terms(fb, win_b)
    )
    del fa, fb
    if not top > 0:
        raise ValueError("reference and moving share no spatial frequency in the pass band")
    return _Spectrum(cross=cross, rows=rows, kx=kx, shape=shape)


def _coarse_map(spec: _Spectrum, workers: int) -> tuple[np.ndarray, float, float]:
    """Inverse transform of the band block (zero-padded to a fast size): the wrapped map."""
    import scipy.fft as sfft

    ny = spec.shape[0]
    nrow = len(spec.rows)
    npos = int(np.count_nonzero(spec.ky_int >= 0))
    ky = max(npos - 1, nrow - npos)
    my = sfft.next_fast_len(max(2 * ky + 2, 16), real=False) if nrow < ny else ny
    mx = sfft.next_fast_len(max(2 * spec.kx + 2, 16), real=True)
    block = np.zeros((my, mx // 2 + 1), dtype=np.complex64)
    block[:npos, : spec.kx + 1] = spec.cross[:npos]
    if nrow > npos:
        block[my - (nrow - npos) :, : spec.kx + 1] = spec.cross[npos:]
    cmap = sfft.irfft2(block, s=(my, mx), workers=workers)
    return cmap, spec.shape[0] / my, spec.shape[1] / mx


def _upsampled_dft(
    spec: _Spectrum, centre: tuple[float, float], step: float, npts: int, double: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlation ``c(y, x)`` on a ``npts x npts`` grid around ``centre`` by matrix DFT [1]_.

    The real correlation is ``Re(E_y S E_x)`` with ``S`` the half-spectrum block and the
    Hermitian column weights folded into ``E_x``.
    """
    ny, nx = spec.shape
    offs = step * (np.arange(npts) - (npts - 1) / 2)
    ys = centre[0] + offs
    xs = centre[1] + offs
    dtype = np.complex128 if double else np.complex64
    s = spec.cross.astype(dtype) if double else spec.cross
    ey = np.exp((2j * np.pi / ny) * np.outer(ys, spec.ky_int)).astype(dtype)
    kx_int = np.arange(spec.kx + 1, dtype=np.float64)
    ex = (spec.weights[:, None] * np.exp((2j * np.pi / nx) * np.outer(kx_int, xs))).astype(dtype)
    c = (ey @ s @ ex).real
    return c, ys, xs


def _parabola(cm: float, c0: float, cp: float) -> float:
    d = cm - 2.0 * c0 + cp
    if d >= 0:  # not a maximum: keep the grid point
        return 0.0
    return float(np.clip(0.5 * (cm - cp) / d, -0.5, 0.5))


def _refine(
    spec: _Spectrum, centre: tuple[float, float], stages: tuple[tuple[float, int], ...]
) -> tuple[float, float]:
    """Upsampled-DFT refinement on successively finer grids, then a parabola on the last.

    A grid whose maximum lands on its border is moved there and evaluated again (at most
    three times), so the result never sticks to the edge of a grid.
    """
    for step, npts in stages:
        for _ in range(4):
            c, gy, gx = _upsampled_dft(spec, centre, step, npts, double=False)
            jj = np.unravel_index(int(np.argmax(c)), c.shape)
            jy, jx = int(jj[0]), int(jj[1])
            centre = (float(gy[jy]), float(gx[jx]))
            if 0 < jy < npts - 1 and 0 < jx < npts - 1:
                break
    dy = dx = 0.0
    if 0 < jy < c.shape[0] - 1:
        dy = _parabola(c[jy - 1, jx], c[jy, jx], c[jy + 1, jx])
    if 0 < jx < c.shape[1] - 1:
        dx = _parabola(c[jy, jx - 1], c[jy, jx], c[jy, jx + 1])
    last = stages[-1][0]
    return (centre[0] + dy * last, centre[1] + dx * last)


def measure_shift(
    reference: npt.ArrayLike,
    moving: npt.ArrayLike,
    *,
    whitening: float = 1.0,
    lowpass_cycles_per_px: float = 0.125,
    highpass_cycles_per_px: float = 0.0,
    taper: float = 0.15,
    max_shift_px: float | None = None,
    reject_zero_shift: bool = False,
    min_peak_snr: float | None = None,
    comoving_window: bool = True,
    workers: int = -1,
) -> ShiftResult:
    """Measure the shift of ``moving`` relative to ``reference`` to a small fraction of a pixel.

    Parameters
    ----------
    reference, moving : array_like
        Two real 2-D images of the same shape (at least 16 x 16 px), finite pixels.
    whitening : float, optional
        Exponent ``p`` in ``R / |R|**p`` of the cross power spectrum ``R``: 1 (default) is
        phase correlation, 0 is plain cross-correlation; values between partially whiten.
    lowpass_cycles_per_px : float, optional
        Frequency (cycles/px) at which the Gaussian low-pass ``exp(-ln2 (f/fc)^2)`` falls to
        1/2. Lower values resist noise better but broaden the peak. Default 0.125.
    highpass_cycles_per_px : float, optional
        Frequency at which the complementary Gaussian high-pass reaches 1/2 (0 = none).
        Useful against slow illumination gradients.
    taper : float, optional
        Fraction of each side covered by the cosine edge of the Tukey window, in
        ``[0, 0.5]``. Default 0.15.
    max_shift_px : float, optional
        Search only ``|dy|, |dx| <= max_shift_px``. Default: the whole wrapped map
        (up to half the image). A peak found on the edge of the search region is flagged.
    reject_zero_shift : bool, optional
        Ignore correlation within the peak width of zero shift (a fixed-pattern peak from
        the camera, e.g. a residual gain-reference pattern, as Leginon removes the
        zero-shift pixel [2]_). True shifts smaller than about ``0.6 / lowpass`` px then
        cannot be measured.
    min_peak_snr : float, optional
        Peak SNR below which the result is flagged unreliable. Default
        ``sqrt(2 ln n_eff) + 3`` where ``n_eff`` is the number of samples in the coarse map
        (the expected noise maximum plus a margin, :data:`PEAK_SNR_MARGIN`).
    comoving_window : bool, optional
        Two passes (default): a first estimate (on 2x2-binned images from 128 px, 4x4 from
        512 px; it needs only ~0.2 px), then the images are re-windowed with windows that
        follow the content (each moved by half the estimate) and the peak refined at full
        resolution. This removes the window's pull toward zero shift, which otherwise
        reaches several hundredths of a pixel for coarse textures and small images. False:
        one full-resolution pass with a fixed window.
    workers : int, optional
        Threads for ``scipy.fft`` (-1 = all cores).

    Returns
    -------
    ShiftResult
        ``shift_px = (dy, dx)``, the peak SNR and ratio, and a reliability flag.

    Raises
    ------
    TypeError
        Non-real or non-numeric images.
    ValueError
        Shapes differ, not 2-D, smaller than 16 px, non-finite pixels, a constant image
        (no contrast, hence no peak), or an option out of range.

    Notes
    -----
    A fixed taper multiplies both images by the same window, which biases the shift toward
    zero in proportion to the shift and to the square of the peak width; the co-moving
    second pass removes this to first order. The peak statistics (``peak_snr``,
    ``peak_ratio``) come from the first pass's coarse map.

    References
    ----------
    See the module references: Guizar-Sicairos et al. 2008 (doi:10.1364/OL.33.000156) for
    the upsampled DFT, Foroosh et al. 2002 (doi:10.1109/83.988953) for band-limited phase
    correlation, the Leginon "Optimizing Autofocus" page for the wrapped map.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> ref = ndimage.gaussian_filter(rng.standard_normal((128, 128)), 2.0)
    >>> mov = ndimage.shift(ref, (3.25, -5.5), mode="wrap")
    >>> res = measure_shift(ref, mov)
    >>> [round(v, 1) for v in res.shift_px], res.reliable
    ([3.2, -5.5], True)
    """
    ref = _check_image(reference, "reference")
    mov = _check_image(moving, "moving")
    if ref.shape != mov.shape:
        raise ValueError(
            f"reference and moving must have the same shape, got {ref.shape} and {mov.shape}"
        )
    p = check_range(whitening, "whitening", 0.0, 1.0)
    fc = check_range(lowpass_cycles_per_px, "lowpass_cycles_per_px", 0.0, 0.5, lo_inclusive=False)
    fh = check_range(highpass_cycles_per_px, "highpass_cycles_per_px", 0.0)
    if fh >= fc:
        raise ValueError(
            f"highpass_cycles_per_px must be < lowpass_cycles_per_px={fc!r}, got {fh!r}"
        )
    tap = check_range(taper, "taper", 0.0, 0.5)
    # (tiny positive cut-offs and tapers divided by ~0: NaN results and overflows)
    side = float(max(ref.shape))
    if fc < 1.0 / side:
        raise ValueError(
            f"lowpass_cycles_per_px must be >= 1 / {side:g} (one cycle over the image), got {fc!r}"
        )
    if 0.0 < fh < 0.25 / side:
        raise ValueError(f"highpass_cycles_per_px must be 0 or >= 0.25 / {side:g}, got {fh!r}")
    if 0.0 < tap < 1.0 / side:
        raise ValueError(f"taper must be 0 or >= 1 / {side:g} (one pixel), got {tap!r}")
    wk = check_int(workers, "workers")
    if wk == 0:
        raise ValueError("workers must be a positive thread count or negative, got 0")
    ny, nx = ref.shape
    if max_shift_px is None:
        lim_y, lim_x = ny / 2.0, nx / 2.0
        limited = False
    else:
        lim = check_range(max_shift_px, "max_shift_px", 0.0, None, lo_inclusive=False)
        lim_y, lim_x = min(lim, ny / 2.0), min(lim, nx / 2.0)
        limited = lim < max(ny, nx) / 2.0
    if not isinstance(reject_zero_shift, (bool, np.bool_)):
        raise TypeError(f"reject_zero_shift must be a bool, got {reject_zero_shift!r}")
    if not isinstance(comoving_window, (bool, np.bool_)):
        raise TypeError(f"comoving_window must be a bool, got {comoving_window!r}")
    snr_floor = None if min_peak_snr is None else check_finite_real(min_peak_snr, "min_peak_snr")
    # pass 1 finds the peak, on binned images when they are big (it needs only ~0.2 px)
    scale = _pass1_binning(ny, nx) if comoving_window else 1
    mean_a = mean_b = None
    if scale > 1:
        from . import _kernels

        a1 = _kernels.bin_mean(ref, scale)
        b1 = _kernels.bin_mean(mov, scale)
        mean_a = _check_content(a1, ref, "reference")
        mean_b = _check_content(b1, mov, "moving")
        if mean_a is None or mean_b is None:
            scale = 1  # flat after binning (pixel-level pattern only): locate at full size
    if scale == 1:
        a1, b1 = ref, mov
        mean_a = _check_content(ref, ref, "reference")
        if mean_a is None:
            _refuse_constant(ref, "reference")
        mean_b = _check_content(mov, mov, "moving")
        if mean_b is None:
            _refuse_constant(mov, "moving")
    assert mean_a is not None and mean_b is not None
    # the locating pass keeps the requested band, capped below the binned Nyquist
    fc1 = min(fc * scale, 0.4)
    fh1 = min(fh * scale, 0.5 * fc1)
    win1 = (_tukey(a1.shape[0], tap), _tukey(a1.shape[1], tap))
    spec1 = _cross_spectrum(
        _tapered(a1, mean_a, *win1), _tapered(b1, mean_b, *win1), win1, win1, fc1, fh1, p, wk
    )
    del a1, b1
    cmap, sy, sx = _coarse_map(spec1, wk)
    sy, sx = sy * scale, sx * scale  # coarse sample (px of the input)
    my, mx = cmap.shape

    # signed shift (px) of every coarse sample: origin at the top-left corner, wrapped
    iy = np.arange(my)
    ix = np.arange(mx)
    ys = np.where(iy <= my // 2, iy, iy - my) * sy
    xs = np.where(ix <= mx // 2, ix, ix - mx) * sx
    allowed = (np.abs(ys)[:, None] <= lim_y) & (np.abs(xs)[None, :] <= lim_x)
    width_px = 0.6 * scale / fc1  # ~FWHM of the band-limited peak of pass 1 (px)
    if reject_zero_shift:
        r0 = max(1.5, width_px)
        allowed &= (ys[:, None] ** 2 + xs[None, :] ** 2) > r0 * r0
    search = np.where(allowed, cmap, -np.inf)
    py, px = divmod(int(np.argmax(search)), mx)
    # peak against the map's own statistics outside the peak's neighbourhood (a wrapped box
    # of twice the peak width); the map's mean is ~0 (no DC term)
    med = float(np.mean(cmap))
    ry = min(my // 2, math.ceil(2.0 * width_px / sy))
    rx = min(mx // 2, math.ceil(2.0 * width_px / sx))
    box = np.ix_(np.arange(py - ry, py + ry + 1) % my, np.arange(px - rx, px + rx + 1) % mx)
    peak = float(cmap[py, px]) - med
    inner = cmap[box]
    n_out = cmap.size - inner.size
    noise = 0.0
    if n_out > 0:
        sum_out = float(cmap.sum(dtype=np.float64)) - float(inner.sum(dtype=np.float64))
        sq_out = float(np.vdot(cmap, cmap)) - float(np.vdot(inner, inner))
        mean_out = sum_out / n_out
        noise = math.sqrt(max(sq_out / n_out - mean_out * mean_out, 0.0))
    search[box] = -np.inf
    runner = float(search.max()) - med
    if not math.isfinite(runner):
        runner = 0.0
    peak_snr = peak / noise if noise > 0 else math.inf
    peak_ratio = max(0.0, runner) / peak if peak > 0 else math.inf
    n_eff = max(2.0, float(np.count_nonzero(allowed)))
    del search, cmap

    # pass-1 estimate: a quarter of a coarse sample, then 0.025 binned px (input pixels out)
    centre = (float(ys[py]) / scale, float(xs[px]) / scale)
    d0 = _refine(spec1, centre, ((max(sy, sx) / scale / 4.0, 9), (0.025, 9)))
    d0 = (d0[0] * scale, d0[1] * scale)

    if comoving_window:
        # pass 2: windows that follow the content (each moved by half the estimate, inset so
        # they stay inside the frame); windowed images are then exact shifted copies and the
        # window no longer pulls the peak toward zero
        iny, inx = abs(d0[0]) / 2.0 + 0.5, abs(d0[1]) / 2.0 + 0.5
        if ny - 2 * iny >= MIN_SIDE_PX // 2 and nx - 2 * inx >= MIN_SIDE_PX // 2:
            wr = (_tukey(ny, tap, -d0[0] / 2, iny), _tukey(nx, tap, -d0[1] / 2, inx))
            wm = (_tukey(ny, tap, d0[0] / 2, iny), _tukey(nx, tap, d0[1] / 2, inx))
            spec2 = _cross_spectrum(
                _tapered(ref, mean_a, *wr, slot=0),
                _tapered(mov, mean_b, *wm, slot=1),
                wr,
                wm,
                fc,
                fh,
                p,
                wk,
            )
            shift = _refine(spec2, d0, _STAGES)
        else:
            shift = _refine(spec1, (d0[0] / scale, d0[1] / scale), _STAGES)
            shift = (shift[0] * scale, shift[1] * scale)
    else:
        shift = _refine(spec1, d0, _STAGES)

    floor = math.sqrt(2.0 * math.log(n_eff)) + PEAK_SNR_MARGIN if snr_floor is None else snr_floor
    reasons = []
    if not peak_snr >= floor:
        reasons.append(f"peak SNR {peak_snr:.2f} below {floor:.2f}")
    if peak_ratio > MAX_PEAK_RATIO:
        reasons.append(f"competing peak at {peak_ratio:.2f} of the main peak")
    edge_y = lim_y - (sy if limited else 1.0)
    edge_x = lim_x - (sx if limited else 1.0)
    if abs(shift[0]) >= edge_y or abs(shift[1]) >= edge_x:
        reasons.append("peak on the edge of the search region")
    return ShiftResult(
        shift_px=(float(shift[0]), float(shift[1])),
        peak_snr=float(peak_snr),
        peak_ratio=float(peak_ratio),
        reliable=not reasons,
        reason="; ".join(reasons),
    )
