"""Halo correction next to occluding edges: :func:`correct_halo`.

Next to a sharp, near occluder, no frame of a focus stack holds the background: where the
background is in focus, the defocused occluder spreads a glow over it and hides part of
each background point's light cone; where the occluder is in focus, the background is
blurred. A rule that picks among the frames (the pyramid fusion of :mod:`.stack`) leaves a
halo of about the blur radius there. The frame focused on the background obeys the
layered image model of a thin occluder [1]_ [2]_

    I_k = h_k * (F a) + (1 - h_k * a) B,

with ``F`` and ``a`` the occluder's colour and matte (both sharp in the frame focused on
it), ``h_k`` the defocus point-spread function of the occluder in frame ``k`` and ``B`` the
background. The correction inverts it in a band of about the blur radius on the
background side of each occluding edge, ``B = (I_k - h_k * (F a)) / (1 - h_k * a)``, with
Wiener-style damping where ``1 - h_k * a`` is small, and composites ``F a + (1 - a) B``.

What is estimated, all from the stack (the optics are not used: the PSF family is fitted
to the data), per tile of :data:`TILE_PX` px around an edge:

* the edges: steps of at least :data:`MIN_STEP_FRAMES` frames between confident depths
  (confidence >= :data:`MIN_CONFIDENCE`) of the fuser's depth map, on a grid of
  :data:`EDGE_STRIDE_PX` px (cheap for a whole frame; a stack without occluding edges
  costs only this);
* the two layers' frames: the most common frame on either side of the step, or the frame
  beyond it when that shows more detail there (the focus measure mixes a thin layer with
  what lies behind it, and its mode falls short);
* the matte, to a fraction of a pixel, from the frame focused on the occluder
  (:func:`~nanoro_optics.fusion._halo_matte.front_matte`): near the depth map's step, the
  mixing fraction between the occluder's colour (extended from inside) and the blurred
  background (extended from outside), least squares over the channels; then passes with
  both extended from just outside and inside the occluder found so far, over the whole
  window (the depth map spreads a fibre of 1 to 3 px over many times its width, or
  misses it), keeping only what a sharp step of the matte bounds (the occluder is in
  focus in that frame, a swell of the blurred background is not), and neither patches of
  background between fibres (more detail in the background's frame) nor holes (a colour
  that is not their outline's);
* the point-spread function of the occluder in the frame focused on the background: a
  pillbox of radius ``R`` convolved with a Gaussian of ``sigma``, two parameters started
  from the frame's glow (the background's level a third, linear, unknown) and refined on
  a frame between the layers' (re-rendered from the layers, with PSFs scaled linearly with
  the distance in frames from each layer's focus; the back layer's own shape and scale
  fitted there too: with a depth-dependent aberration the two layers' PSFs differ);
* a third layer between the nearest and the farthest (a share of the window's depths
  between them, in focus in its own frame): each of those with it is solved too, and
  corrects what the main pair's check leaves;
* which side is in front: both are fitted, the one that re-renders that frame better is
  kept;
* the consistency check: two further frames between the layers', not used above, are
  re-rendered and compared with the recorded ones. The correction is kept only where the
  local RMS residual (over :data:`CHECK_WINDOW_PX` px) is within :data:`CHECK_SIGMAS`
  noise standard deviations, and lower by :data:`MIN_GLOW_GAIN` noise variances than that
  of no correction (the same layers with the recorded background: where the two fit the
  frames alike, nothing is verified), and within the glow's reach of an outline that the
  front layer's frame shows sharp (:meth:`_Layers.sharp_rim`; the depth map also draws
  boundaries through featureless areas); elsewhere the pyramid fusion stays. The noise:
  the fuser's estimate (:mod:`.noise`, the flattest quarter of a frame's), or more where
  the window's own frames show it growing with the signal (photon noise, measured in their
  flattest blocks per level of signal). The background under the front layer's rim, which
  those frames see past its blurred edge, is the inversion's too (where frame kb holds none
  of it, the damping's extension from outside).

The range rule
--------------
The fused image never leaves the per-pixel range ``[min_k, max_k]`` of the frames, except
on the pixels of :attr:`HaloReport.corrected`: there the true background lies below every
recorded frame (each holds some of the occluder's glow), and the corrected value, whose
check re-rendered the unused frames to within the noise, is kept, clipped only to the
dtype's (or camera's) limits. Outside that map every pixel is the pyramid fusion's,
exactly, and so within the range.

References
----------
.. [1] J. Gu, R. Ramamoorthi, P. Belhumeur and S. Nayar, "Removing image artifacts due to
   dirty camera lenses and thin occluders", ACM Trans. Graph. 28(5), 144 (SIGGRAPH Asia
   2009). https://doi.org/10.1145/1661412.1618490
.. [2] S. McCloskey, "Masking light fields to remove partial occlusion", Proc. 22nd
   International Conference on Pattern Recognition (ICPR 2014).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._halo_matte import extend as _extend
from ._halo_matte import front_matte as _matte
from .options import HALO_MODES, FusionOptions
from .result import FusionResult

__all__ = [
    "HALO_MODES",
    "HaloReport",
    "aligned_frames",
    "apply_halo",
    "correct_halo",
    "depth_in_frames",
    "may_have_edges",
]

#: side of the tiles the correction works in (px); each is read with a margin of the blur
TILE_PX = 128
#: grid (px) on which the depth map is searched for steps
EDGE_STRIDE_PX = 4
#: grid steps (odd) within which two confident depths make a step
EDGE_REACH = 5
#: depth confidence from which a depth counts for the edge search
MIN_CONFIDENCE = 0.5
#: smallest depth step (frames) that counts as an occluding edge
MIN_STEP_FRAMES = 3.0
#: the pyramid level of the coarse depth map on which the file pipeline looks for occluding
#: edges before it tracks the full one (:func:`may_have_edges`): a quarter of the
#: resolution of the full map's level 1, a sixteenth of its memory
COARSE_LEVEL = 2
#: the coarse map's step (frames) and confidence from which the full map is tracked (which
#: must reach :data:`MIN_STEP_FRAMES` at confidence :data:`MIN_CONFIDENCE`). The coarse
#: steps are smoothed, and thin occluders less confident there: on 75 stacks with edges
#: (the benchmark's occlusion scenes at 256 and 512 px, seeds 3 and 5, a board and a
#: keyboard) the coarse map's largest step was 0.76 times the full map's or more and at
#: least 4.9 frames (fibres: 1 frame at confidence 0.5, 8.8 at 0.1); on the benchmark's
#: scenes without occlusion (smooth surfaces) at most 1.8
COARSE_STEP_FRAMES = 2.0
COARSE_CONFIDENCE = 0.1
#: largest blur radius (px) the correction handles (the tiles' margin follows from it)
MAX_BLUR_PX = 48.0
#: noise standard deviations the check's local RMS residual may reach
CHECK_SIGMAS = 2.0
#: mean residual (noise variances) over the band of the better way round, before the PSF
#: is refined, above which a tile is given up (refining gains a few noise variances)
HOPELESS_SCORE = 50.0
#: detail the back layer must show (variance of its high-pass over the noise variance;
#: about 0.5 for noise alone): without it the check cannot tell occlusion from light that
#: adds up
MIN_BACK_TEXTURE = 4.0
#: noise variances by which the check's local residual must be smaller with the correction
#: than without it: where the occluder's glow is too faint for the check's frames to tell
#: the two apart (an occluder of the background's own colour, a glow under the noise), the
#: correction is not verified (only amplified errors of the fit would be added) and the
#: pyramid fusion stays
MIN_GLOW_GAIN = 1.0
#: the front layer's outline counts as an edge where its frame's gradient is this many
#: times the background frame's there, and this many times its own noise
RIM_SHARPER = 1.5
RIM_SIGMAS = 5.0
#: smallest connected area (px, 8-connected) of corrected pixels kept (an 8 x 8 px patch):
#: a speck of fewer is no band along an occluding edge
MIN_CORRECTED_PX = 64
#: side (px) of the window the check's residual is averaged over
CHECK_WINDOW_PX = 9
#: memory for the tiles' frame windows read at once (bytes per pixel of the image): at
#: 12 MP about 48 MB; more windows are read in further batches (frames read again)
CROP_BUDGET_BYTES_PER_PX = 4
#: Wiener damping of the division by ``1 - h * a`` (a squared transmission)
DAMPING = 0.02
#: relative excess of detail that makes the frame beyond a layer's the layer's focus
SHARPER_BY = 0.1
#: share of a window's side (the depth map's) in holes of the other side (parts that do
#: not reach the window's border) from which the window is read as a plate with holes:
#: there the focus measure mixes the holes' background with the plate's glow and puts
#: their depth frames short of the background's, and shows few of them (plates with holes
#: at 512^2 x 11, seed 5: 0.59 in the one tile whose back frame came out 6 frames short,
#: at most 0.42 in the others; of the back layer the matte leaves, 0.52 to 0.74 where no
#: back pixel lies beyond the widest glow, against at most 0.06 in the fibres scene's
#: tiles of that kind, where a space between fibres is no hole)
HOLES_SHARE = 0.5
#: px from the front layer beyond which a hole's pixels measure the back layer's detail,
#: where the front layer leaves none of it beyond the widest glow (:meth:`_Layers.back_texture`)
HOLE_RIM_PX = 2.0
#: sizes of the back layer's PSF (relative to the front layer's at the same distance in
#: frames) tried in the frames between the layers'
BACK_SCALES = (0.9, 1.1)
#: share of a window's depths between its nearest and farthest layer's that makes a third
#: layer (each pair of layers is then corrected)
THIRD_LAYER_SHARE = 0.05
#: with the optics' prior on the defocus blur (``FusionOptions.halo_blur_px``), the factor
#: within which the PSF's size is searched about it
PRIOR_FACTOR = 2.0
#: sigma (px) of the smallest Gaussian of the fitted point-spread functions (diffraction)
SIGMA0_PX = 0.5
#: side (px) of the blocks, and number of signal-level bins, in which the check measures
#: the noise against the signal (the flattest quarter of the blocks per bin counts)
NOISE_BLOCK_PX = 16
NOISE_LEVEL_BINS = 6

FrameSource = np.ndarray | Callable[[int], np.ndarray] | Sequence[np.ndarray]


@dataclass(frozen=True)
class HaloReport:
    """Where the halo correction acted and how well its check held.

    Attributes
    ----------
    corrected : numpy.ndarray
        bool ``(H, W)``: the pixels the correction replaced (outside them the image is the
        pyramid fusion's, inside the frames' per-pixel range).
    corrected_fraction : float
        Fraction of the image's pixels in ``corrected``.
    candidate_fraction : float
        Fraction of the pixels in the bands around occluding edges that were examined.
    residual_dn : float
        RMS residual (DN) of the check's re-rendered frames over the corrected pixels (NaN
        when none was corrected).
    noise_dn : float
        Noise standard deviation (DN) the check compared against (mean over channels).
    n_tiles : int
        Tiles with an occluding edge that were examined.
    note : str
        Why the correction did not run, when it did not ("" when it ran).
    """

    corrected: np.ndarray
    corrected_fraction: float
    candidate_fraction: float
    residual_dn: float
    noise_dn: float
    n_tiles: int
    note: str = ""

    @classmethod
    def skipped(cls, shape: tuple[int, int], note: str) -> HaloReport:
        """Return the report of a correction that did not run (an empty map), saying why."""
        return cls(np.zeros(shape, bool), 0.0, 0.0, float("nan"), float("nan"), 0, note)

    def cropped(self, bbox: tuple[int, int, int, int]) -> HaloReport:
        """Return the report with its map cut to ``bbox = (y0, y1, x0, x1)``."""
        y0, y1, x0, x1 = (int(v) for v in bbox)
        return dataclasses.replace(
            self, corrected=np.ascontiguousarray(self.corrected[y0:y1, x0:x1])
        )

    def summary(self) -> dict[str, float | int | str]:
        """Return the numbers of the report (no map), e.g. for a JSON record."""
        return {
            "corrected_fraction": self.corrected_fraction,
            "candidate_fraction": self.candidate_fraction,
            "residual_dn": self.residual_dn,
            "noise_dn": self.noise_dn,
            "n_tiles": self.n_tiles,
            "note": self.note,
        }


# --------------------------------------------------------------------------------------------
# point-spread functions


def psf_otf(shape: tuple[int, int], radius_px: float, sigma_px: float) -> np.ndarray:
    """Real-FFT transfer function of a pillbox of ``radius_px`` convolved with a Gaussian.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the (padded) image (``numpy.fft.rfft2`` layout).
    radius_px, sigma_px : float
        The pillbox's radius and the Gaussian's standard deviation (px), >= 0.

    Returns
    -------
    numpy.ndarray
        float64 ``(H, W // 2 + 1)``, 1 at zero frequency: ``2 J1(2 pi R f) / (2 pi R f)
        exp(-2 pi^2 sigma^2 f^2)``.

    Examples
    --------
    >>> otf = psf_otf((32, 32), 2.0, 0.5)
    >>> otf.shape, float(otf[0, 0])
    ((32, 17), 1.0)
    """
    from scipy import special

    # a function of |f| alone: evaluated on a fine radial grid, then spread over the 2-D
    # layout by linear interpolation (with the grid below, 2e-5 at most off for R <= 48 px)
    i0, wgt = _radial_index(int(shape[0]), int(shape[1]))
    fr = _RADIAL_F
    prof = np.exp(-2.0 * np.pi**2 * float(sigma_px) ** 2 * fr**2)
    if radius_px > 0:
        x = 2.0 * np.pi * float(radius_px) * fr
        safe = np.where(x > 1e-8, x, 1.0)
        prof *= np.where(x > 1e-8, 2.0 * special.j1(safe) / safe, 1.0)
    return prof[i0] * (1.0 - wgt) + prof[i0 + 1] * wgt


#: the radial frequencies (cycles per px, up to the corner's sqrt(1/2)) the OTFs are
#: evaluated at before interpolation
_RADIAL_F = np.linspace(0.0, np.sqrt(0.5) + 1e-9, 2**14)


@functools.lru_cache(maxsize=8)
def _radial_index(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid index and weight of every ``rfft2`` frequency of an ``(h, w)`` image."""
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    pos = f / _RADIAL_F[-1] * (_RADIAL_F.size - 1)
    i0 = np.minimum(pos.astype(np.intp), _RADIAL_F.size - 2)
    wgt = pos - i0
    i0.flags.writeable = False
    wgt.flags.writeable = False
    return i0, wgt


def _family(size_px: float, shape_t: float) -> tuple[float, float]:
    """``(radius, sigma)`` of the PSF of geometric std ``size_px`` (per axis), shape ``t``.

    ``t = 1`` is a pillbox (std ``R / 2``), ``t = 0`` a Gaussian; the diffraction Gaussian
    :data:`SIGMA0_PX` is added to every one.
    """
    radius = 2.0 * np.sqrt(shape_t) * size_px
    sigma = float(np.sqrt((1.0 - shape_t) * size_px**2 + SIGMA0_PX**2))
    return float(radius), sigma


class _Blurrer:
    """Convolve a few fixed images (planes of one window) with many PSFs, by FFT."""

    def __init__(self, planes: np.ndarray, pad: int) -> None:
        _, h, w = planes.shape
        self.pad = pad
        self.shape = (h, w)
        from scipy import fft

        ph, pw = fft.next_fast_len(h + 2 * pad, real=True), fft.next_fast_len(w + 2 * pad, True)
        padded = np.pad(planes, ((0, 0), (pad, ph - h - pad), (pad, pw - w - pad)), mode="edge")
        self.full = (ph, pw)
        # single precision: the data hold at most 16 bits, the fits far less
        self.spec = fft.rfft2(padded.astype(np.float32), axes=(-2, -1), workers=1)

    def blur(self, radius: float, sigma: float) -> np.ndarray:
        """Return the planes convolved with the PSF (float64, the window's shape)."""
        from scipy import fft

        otf = psf_otf(self.full, radius, sigma).astype(np.float32)
        out = fft.irfft2(self.spec * otf, s=self.full, axes=(-2, -1), workers=1)
        p = self.pad
        return out[:, p : p + self.shape[0], p : p + self.shape[1]].astype(np.float64)


# --------------------------------------------------------------------------------------------
# helpers


def _edge_tiles(
    depth: np.ndarray, confidence: np.ndarray | None, min_step: float
) -> list[tuple[int, int]]:
    """Tiles ``(ty, tx)`` of :data:`TILE_PX` near a depth step of ``min_step`` frames.

    On a grid of :data:`EDGE_STRIDE_PX` px, between confident depths (confidence >=
    :data:`MIN_CONFIDENCE`) within :data:`EDGE_REACH` grid steps: a step where the depth is
    a guess (textureless areas) is no edge. The neighbours of such a tile are taken too
    (the band reaches past the tile holding the step).
    """
    from scipy import ndimage

    s = EDGE_STRIDE_PX
    ys, xs = np.nonzero(_steps(depth, confidence, min_step, MIN_CONFIDENCE))
    per = TILE_PX // s
    ny, nx = -(-depth.shape[0] // TILE_PX), -(-depth.shape[1] // TILE_PX)
    hit = np.zeros((ny, nx), bool)
    hit[ys // per, xs // per] = True
    hit = ndimage.binary_dilation(hit, np.ones((3, 3), bool))
    return [(int(y), int(x)) for y, x in zip(*np.nonzero(hit), strict=True)]


def _steps(
    depth: np.ndarray, confidence: np.ndarray | None, min_step: float, min_confidence: float
) -> np.ndarray:
    """Grid points (every :data:`EDGE_STRIDE_PX` px) with a depth step of ``min_step`` frames.

    Between depths of confidence >= ``min_confidence`` within :data:`EDGE_REACH` grid steps.
    """
    from scipy import ndimage

    s = EDGE_STRIDE_PX
    d = np.asarray(depth[::s, ::s], np.float64)
    ok = np.isfinite(d)
    if confidence is not None:
        ok &= np.asarray(confidence[::s, ::s]) >= min_confidence
    hi = ndimage.maximum_filter(np.where(ok, d, -np.inf), size=EDGE_REACH, mode="nearest")
    lo = ndimage.minimum_filter(np.where(ok, d, np.inf), size=EDGE_REACH, mode="nearest")
    return np.asarray(np.isfinite(hi) & np.isfinite(lo) & (hi - lo >= min_step))


def may_have_edges(result: FusionResult, options: FusionOptions) -> bool:
    """Whether a coarse depth map shows a step the full one may make an occluding edge.

    ``result`` comes from a fuser that tracked the depth on level :data:`COARSE_LEVEL`
    (``StackFuser._track_level``): its steps of :data:`COARSE_STEP_FRAMES` between depths of
    confidence :data:`COARSE_CONFIDENCE` count, a margin below what the full map needs (its
    steps are smoothed). Where none is, the full map has no edge either, and the correction
    has nothing to do: the file pipeline then reads the frames once. False when the depth is
    not in frames (corrected for an index mismatch): the correction does not run on such a
    map (:func:`apply_halo` says why), so the full one is not needed either.
    """
    depth = depth_in_frames(result, options)
    if depth is None:
        return False
    return bool(_steps(depth, result.confidence, COARSE_STEP_FRAMES, COARSE_CONFIDENCE).any())


@dataclass
class _TilePlan:
    ty: int
    tx: int
    win: tuple[int, int, int, int]  # window y0, y1, x0, x1 (with margin)
    core: tuple[int, int, int, int]  # the tile, in window coordinates
    d_front: float
    d_back: float
    frames: tuple[int, ...]  # the two layers', then every other frame to read
    fit_frames: tuple[int, ...]
    check_frames: tuple[int, ...]
    shape: tuple[int, int]  # the image's
    outer: tuple[int | None, int | None] = (None, None)  # the frames beyond the layers'
    main: tuple[int, int] | None = None  # a third layer's pair: the tile's main pair
    #: a side in holes of the other (:data:`HOLES_SHARE`): every frame beyond its layer's
    #: (low side, high side), each a candidate for its focus
    deeper: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())


def _frame_getter(frames: Any, n_frames: int) -> Callable[[int], np.ndarray]:
    if isinstance(frames, np.ndarray):
        return lambda k: frames[k]
    if callable(frames):
        return frames
    return lambda k: np.asarray(frames[k])


# --------------------------------------------------------------------------------------------
# the fuser's finishing step


def depth_in_frames(result: FusionResult, options: FusionOptions) -> np.ndarray | None:
    """Return the depth map of ``result`` in frames (0 = first frame), or None.

    A depth map in um (z positions given) is mapped back through the frames' positions; a
    depth corrected for an index mismatch (``depth_kind == "actual"``) is not.
    """
    if result.depth_kind != "nominal":
        return None
    if result.depth_unit == "frame":
        return result.depth
    n = result.n_frames
    z = [options.z_of_frame(k) for k in range(n)]
    if any(v is None for v in z):
        return None
    zz = np.asarray(z, np.float64)
    order = np.argsort(zz)
    return np.interp(result.depth, zz[order], np.arange(n, dtype=np.float64)[order]).astype(
        np.float32
    )


def apply_halo(
    result: FusionResult,
    frames: FrameSource | None,
    options: FusionOptions,
    *,
    noise_dn: Any,
    white_level: float | None,
    note: str = "",
) -> FusionResult:
    """Return ``result`` with the halo correction applied as ``options.halo`` says.

    The finishing step of :func:`~nanoro_optics.fusion.fuse_stack` and the file pipeline:
    with ``halo="off"`` the result as it is (``halo`` None); with ``"auto"`` the image
    corrected by :func:`correct_halo` and its :class:`HaloReport` in ``result.halo``. When
    the correction cannot run (``frames`` None, a depth map not in frames),
    the image is left as it is and the report's ``note`` says why (``note`` given here).

    Parameters
    ----------
    result : FusionResult
        The pyramid fusion's result (uncropped).
    frames : array, sequence or callable, or None
        The frames again (see :func:`correct_halo`), on the result's pixel grid (aligned
        frames warped again: :func:`aligned_frames`); None when they cannot be read again.
    options : FusionOptions
    noise_dn : float or array_like
        The fuser's noise estimate (DN, per channel).
    white_level : float or None
        Largest value of the data (integers), None for float frames.
    note : str, optional
        Why ``frames`` is None.

    Returns
    -------
    FusionResult
    """
    if options.halo == "off":
        return result
    shape = result.depth.shape
    depth = depth_in_frames(result, options)
    why = note
    if frames is None and not why:
        why = "no frames to read again"
    if depth is None:
        why = "the depth map is corrected for an index mismatch (not in frames)"
    if why or frames is None or depth is None:
        return dataclasses.replace(result, halo=HaloReport.skipped(shape, why))
    image, report = correct_halo(
        result.image,
        depth,
        frames,
        n_frames=result.n_frames,
        noise_dn=noise_dn,
        white_level=white_level,
        confidence=result.confidence,
        blur_px=options.halo_blur_px,
    )
    return dataclasses.replace(result, image=image, halo=report)


def finish_halo(
    fuser: Any, result: FusionResult, frames: FrameSource | None, *, note: str = ""
) -> FusionResult:
    """Apply the halo step to the result of a finished :class:`~nanoro_optics.fusion.StackFuser`.

    The one place where :func:`~nanoro_optics.fusion.fuse_stack` (frames in memory) and the
    file pipeline (frames read again) hand a fusion over to :func:`apply_halo`: aligned
    frames are warped again with the fuser's own transforms, and the data's white level
    and noise are the fuser's.

    Parameters
    ----------
    fuser : StackFuser
        The fuser, closed, that made ``result``.
    result : FusionResult
        Its result (uncropped).
    frames : array, sequence or callable, or None
        The frames as recorded; None when they cannot be read again.
    note : str, optional
        Why ``frames`` is None (the report's note; :func:`apply_halo`).

    Returns
    -------
    FusionResult
        ``result`` itself with ``halo="off"``.

    Raises
    ------
    ValueError
        ``frames`` of another length than the frames fused.
    """
    options = fuser.options
    if options.halo == "off":
        return result
    if frames is not None and not callable(frames) and len(frames) != result.n_frames:
        raise ValueError(
            f"frames has {len(frames)} frames but {result.n_frames} were fused: the halo "
            "correction reads the same frames again"
        )
    if frames is not None and fuser._aligner is not None:
        frames = aligned_frames(frames, fuser._aligner)
    dtype = np.dtype(result.image.dtype)
    return apply_halo(
        result,
        frames,
        options,
        noise_dn=fuser.noise_dn,
        white_level=None if dtype.kind == "f" else fuser._white,
        note=note,
    )


def aligned_frames(frames: FrameSource, aligner: Any) -> Callable[[int], np.ndarray]:
    """Frame ``k`` of ``frames`` warped onto the fused image's grid as the fuser warped it.

    Parameters
    ----------
    frames : array, sequence or callable
        The frames as recorded (see :func:`correct_halo`).
    aligner : FrameAligner
        The fuser's aligner (its ``transforms``: each frame's matrix to the output grid).

    Returns
    -------
    callable
        ``source(k)``: the warped frame ``k``.
    """
    from .align import warp_frame

    get = _frame_getter(frames, len(aligner.transforms))

    def source(k: int) -> np.ndarray:
        frame = np.asarray(get(k))
        matrix = aligner.transforms[k]
        if np.array_equal(matrix, np.eye(3)[:2]):  # on the grid already (as the fuser does)
            return frame
        return warp_frame(frame, matrix, order=aligner.order)

    return source


# --------------------------------------------------------------------------------------------
# the correction


def correct_halo(
    image: np.ndarray,
    depth: np.ndarray,
    frames: FrameSource,
    *,
    n_frames: int,
    noise_dn: Any,
    white_level: float | None = None,
    confidence: np.ndarray | None = None,
    blur_px: float | None = None,
) -> tuple[np.ndarray, HaloReport]:
    """Correct the halos of a fused image next to occluding edges (see the module).

    Parameters
    ----------
    image : numpy.ndarray
        The fused image ``(H, W)`` or ``(H, W, C)`` (the pyramid fusion's, within the frames'
        per-pixel range).
    depth : numpy.ndarray
        float ``(H, W)`` depth map in frames (0 = first frame; NaN: unknown).
    frames : array or callable
        The frames again: an array ``(N, H, W[, C])``, a sequence of frames, or a callable
        ``frames(k)`` returning frame ``k``. Only the frames the correction needs are read
        (the two layers' and the check's, per edge), each once.
    n_frames : int
        Number of frames of the stack (>= 2).
    noise_dn : float or array_like
        Noise standard deviation (DN), one or one per channel, > 0.
    white_level : float, optional
        Largest value of the data (default: the dtype's largest; float images are not
        clipped above).
    confidence : numpy.ndarray, optional
        The depth map's confidence ``(H, W)`` (:class:`FusionResult`): only steps between
        confident depths count as edges.
    blur_px : float, optional
        The optics' prior on the defocus PSF (``FusionOptions.halo_blur_px``): the radius
        (px) of a point's geometric blur disc one frame from its focus. The PSF's size is
        then searched within :data:`PRIOR_FACTOR` of it; a pair of layers whose blur it
        puts beyond :data:`MAX_BLUR_PX` is not corrected. Default: from the stack alone.

    Returns
    -------
    (numpy.ndarray, HaloReport)
        The corrected image (a new array, same dtype and shape; bit-identical to ``image``
        outside ``report.corrected``) and the report.

    Raises
    ------
    ValueError
        Shapes that do not match, fewer than 2 frames, a noise that is not positive.
    TypeError
        An image that is not numeric.

    References
    ----------
    .. [1] Gu, Ramamoorthi, Belhumeur & Nayar (2009), https://doi.org/10.1145/1661412.1618490
    .. [2] McCloskey, ICPR 2014 (masking light fields to remove partial occlusion).

    Examples
    --------
    >>> import numpy as np
    >>> flat = np.full((5, 32, 32), 100, np.uint8)
    >>> out, rep = correct_halo(flat[0], np.zeros((32, 32), np.float32), flat, n_frames=5,
    ...                         noise_dn=1.0)
    >>> bool(np.array_equal(out, flat[0])), rep.corrected_fraction
    (True, 0.0)
    """
    img = np.asarray(image)
    if img.dtype.kind not in "uif":
        raise TypeError(f"image must be an integer or float array, got dtype {img.dtype}")
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    dep = np.asarray(depth)
    if dep.shape != img.shape[:2]:
        raise ValueError(f"depth has shape {dep.shape}, expected {img.shape[:2]} (the image's)")
    if dep.dtype.kind != "f":
        raise TypeError(f"depth must be a float array, got dtype {dep.dtype}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)):
        raise TypeError(f"n_frames must be an int, got {type(n_frames).__name__}")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    c = 1 if img.ndim == 2 else img.shape[2]
    sigma = np.broadcast_to(np.asarray(noise_dn, np.float64).ravel(), (c,)).copy()
    if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
        raise ValueError(f"noise_dn must be finite and > 0, got {noise_dn!r}")
    if isinstance(frames, np.ndarray) and (
        frames.shape[0] != n_frames or frames.shape[1:] != img.shape
    ):
        raise ValueError(
            f"frames has shape {frames.shape}, expected ({n_frames}, *{img.shape}) (n_frames "
            "frames of the image's shape)"
        )
    if img.dtype.kind in "ui":
        top = float(np.iinfo(img.dtype).max) if white_level is None else float(white_level)
        bottom = float(np.iinfo(img.dtype).min)
    else:
        top = np.inf if white_level is None else float(white_level)
        bottom = -np.inf
    h, w = img.shape[:2]
    out = img.copy()
    corrected = np.zeros((h, w), bool)
    get = _frame_getter(frames, n_frames)
    conf = None if confidence is None else np.asarray(confidence)
    if conf is not None and conf.shape != dep.shape:
        raise ValueError(f"confidence has shape {conf.shape}, expected {dep.shape} (the depth's)")
    if blur_px is not None:
        blur_px = FusionOptions(halo_blur_px=blur_px).halo_blur_px  # (its checks and message)
    tiles = _edge_tiles(dep, conf, MIN_STEP_FRAMES)
    plans = [p for t in tiles for p in _plan(dep, t, n_frames)]
    n_tiles = len({(p.ty, p.tx) for p in plans})
    empty = HaloReport(corrected, 0.0, 0.0, float("nan"), float(sigma.mean()), n_tiles)
    if not plans:
        return out, empty
    # the tiles in batches whose windows (in the frames' dtype) fit the memory budget; each
    # frame a batch needs is read once for it, keeping only those windows
    itemsize = np.dtype(img.dtype).itemsize
    budget = CROP_BUDGET_BYTES_PER_PX * h * w
    batches: list[list[int]] = [[]]
    used = 0
    for i, p in enumerate(plans):
        y0, y1, x0, x1 = p.win
        cost = (y1 - y0) * (x1 - x0) * c * itemsize * len(p.frames)
        if batches[-1] and used + cost > budget:
            batches.append([])
            used = 0
        batches[-1].append(i)
        used += cost
    examined = np.zeros((h, w), bool)
    cache: dict[tuple[int, int], tuple[float, float]] = {}
    # per pixel, the check's residual^2 (DN^2) of the value written there; a tile's first
    # pair of layers (nearest and farthest) is written first, the others only elsewhere
    res_map = np.zeros((h, w), np.float32)
    for batch in batches:
        crops = _read_windows(get, [plans[i] for i in batch], img.shape)
        for i, crop in zip(batch, crops, strict=True):
            p = plans[i]
            sol = _solve_tile(p, crop, dep, sigma, cache, blur_px)
            if sol is None:
                continue
            value, accept, band, res2 = sol
            cy0, cy1, cx0, cx1 = p.core
            y0, _, x0, _ = p.win
            sl = (slice(y0 + cy0, y0 + cy1), slice(x0 + cx0, x0 + cx1))
            examined[sl] |= band[cy0:cy1, cx0:cx1]
            acc = accept[cy0:cy1, cx0:cx1] & ~corrected[sl]
            if not acc.any():
                continue
            res_map[sl][acc] = res2[cy0:cy1, cx0:cx1][acc]
            ys, xs = np.nonzero(acc)
            vals = value[:, cy0:cy1, cx0:cx1][:, ys, xs].T  # (n, C)
            vals = np.clip(vals, bottom, top)
            if img.dtype.kind in "ui":
                vals = np.rint(vals)
            gy, gx = ys + y0 + cy0, xs + x0 + cx0
            if img.ndim == 2:
                out[gy, gx] = vals[:, 0].astype(img.dtype)
            else:
                out[gy, gx] = vals.astype(img.dtype)
            corrected[gy, gx] = True
        del crops
    # a corrected area smaller than a band along any edge is a speck the check let through
    # (a dust grain over its own surface): the pyramid's pixels there
    from scipy import ndimage

    lab, n_lab = ndimage.label(corrected, np.ones((3, 3), bool))
    if n_lab:
        small = (np.bincount(lab.ravel()) < MIN_CORRECTED_PX)[lab] & corrected
        out[small] = img[small]
        corrected &= ~small
    n_px = h * w
    n_cor = int(corrected.sum())
    report = HaloReport(
        corrected=corrected,
        corrected_fraction=n_cor / n_px,
        candidate_fraction=float(examined.sum()) / n_px,
        residual_dn=(
            float(np.sqrt(res_map[corrected].astype(np.float64).mean())) if n_cor else float("nan")
        ),
        noise_dn=float(sigma.mean()),
        n_tiles=n_tiles,
    )
    return out, report


def _read_windows(
    get: Callable[[int], np.ndarray], plans: list[_TilePlan], shape: tuple[int, ...]
) -> list[_Windows]:
    """Read every frame the ``plans`` need once; keep their windows (the frames' dtype)."""
    need: dict[int, list[int]] = {}
    for i, p in enumerate(plans):
        for k in p.frames:
            need.setdefault(k, []).append(i)
    crops: list[dict[int, np.ndarray]] = [{} for _ in plans]
    for k in sorted(need):
        frame = np.asarray(get(k))
        if frame.shape != shape:
            raise ValueError(f"frame {k} has shape {frame.shape}, expected {shape}")
        f3 = frame if frame.ndim == 3 else frame[:, :, None]
        for i in need[k]:
            y0, y1, x0, x1 = plans[i].win
            crops[i][k] = np.array(np.moveaxis(f3[y0:y1, x0:x1], -1, 0))
        del frame, f3
    return [_Windows(c) for c in crops]


class _Windows:
    """A tile's frame windows, handed out as float64 ``(C, h, w)`` (converted once each)."""

    def __init__(self, raw: dict[int, np.ndarray]) -> None:
        self._raw = raw
        self._f64: dict[int, np.ndarray] = {}

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self._f64:
            self._f64[k] = self._raw[k].astype(np.float64)
        return self._f64[k]


def _plan(depth: np.ndarray, tile: tuple[int, int], n: int) -> list[_TilePlan]:
    """Plan one edge tile: its window, pairs of layers' depths and the frames to read.

    The nearest and the farthest layer; with a third layer between them (at least
    :data:`THIRD_LAYER_SHARE` of the window's depths :data:`MIN_STEP_FRAMES` frames from
    both: its most common frame), also each of them with it. The nearest and farthest
    pair comes first: the others only correct what its check leaves; its PSF is then
    fitted on a frame that does not have the third layer in focus.
    """
    ty, tx = tile
    h, w = depth.shape
    t0y, t0x = ty * TILE_PX, tx * TILE_PX
    t1y, t1x = min(t0y + TILE_PX, h), min(t0x + TILE_PX, w)
    m = int(np.ceil(MAX_BLUR_PX)) + 8
    y0, y1, x0, x1 = max(t0y - m, 0), min(t1y + m, h), max(t0x - m, 0), min(t1x + m, w)
    d = depth[y0:y1, x0:x1]
    fin = d[np.isfinite(d)]
    if fin.size < 16:
        return []
    lo, hi = (float(v) for v in np.percentile(fin, [0.5, 99.5]))
    if hi - lo < MIN_STEP_FRAMES:
        return []
    mid = 0.5 * (lo + hi)
    lo, k_lo = _layer_depth(fin[fin < mid], n)
    hi, k_hi = _layer_depth(fin[fin >= mid], n)
    if k_hi - k_lo < MIN_STEP_FRAMES - 0.5:
        return []
    pairs = [(lo, k_lo, hi, k_hi)]
    between = fin[(fin > k_lo + MIN_STEP_FRAMES - 0.5) & (fin < k_hi - MIN_STEP_FRAMES + 0.5)]
    if between.size >= THIRD_LAYER_SHARE * fin.size:
        d_mid, k_mid = _layer_depth(between, n)
        pairs += [(lo, k_lo, d_mid, k_mid), (d_mid, k_mid, hi, k_hi)]
    win = (y0, y1, x0, x1)
    core = (t0y - y0, t1y - y0, t0x - x0, t1x - x0)
    plans = [_pair_plan(ty, tx, win, core, pair, n, (h, w)) for pair in pairs]
    if len(pairs) == 1:
        # a plate with holes: where one side lies mostly in holes of the other, the focus
        # measure mixes the holes' background with the plate's glow and its mode may fall
        # several frames short of the background's focus; every frame beyond is a candidate
        # (and every frame between is read: the check's frames follow the layers found)
        fin2 = np.isfinite(d)
        low = fin2 & (d < 0.5 * (lo + hi))
        main = plans[0]
        deeper: list[tuple[int, ...]] = [(), ()]
        read = set(main.frames)
        if k_lo >= 2 and _in_holes(low) >= HOLES_SHARE:
            deeper[0] = tuple(range(k_lo - 1))
            read |= set(range(k_hi))
        if k_hi <= n - 3 and _in_holes(fin2 & ~low) >= HOLES_SHARE:
            deeper[1] = tuple(range(k_hi + 2, n))
            read |= set(range(k_lo + 1, n))
        if deeper[0] or deeper[1]:
            main.deeper = (deeper[0], deeper[1])
            main.frames = (*main.frames[:2], *sorted(read - set(main.frames[:2])))
    if len(pairs) > 1:
        # the main pair's model takes the third layer for the back layer, blurred as that:
        # the frame that has it in focus fits the PSF worst; the one nearest the middle at
        # least half a step from it instead
        main = plans[0]
        k_mid, centre = pairs[1][3], 0.5 * (k_lo + k_hi)
        away = [
            k
            for k in range(k_lo + 1, k_hi)
            if k not in main.check_frames and abs(k - k_mid) >= MIN_STEP_FRAMES / 2
        ]
        if main.fit_frames and away:
            fit = min(away, key=lambda k: (abs(k - centre), k))
            read = (set(main.frames[2:]) - set(main.fit_frames)) | {fit}
            main.fit_frames = (fit,)
            main.frames = (*main.frames[:2], *sorted(read))
    for p in plans[1:]:  # beyond each layer of a third layer's pair: the main pair's layer
        k_a, k_b = p.frames[0], p.frames[1]
        p.outer = (k_lo if k_a != k_lo else p.outer[0], k_hi if k_b != k_hi else p.outer[1])
        p.frames = (*p.frames, *(k for k in p.outer if k is not None and k not in p.frames))
        p.main = (k_lo, k_hi)
    return plans


def _pair_plan(
    ty: int,
    tx: int,
    win: tuple[int, int, int, int],
    core: tuple[int, int, int, int],
    pair: tuple[float, int, float, int],
    n: int,
    shape: tuple[int, int],
) -> _TilePlan:
    """Return the plan of one pair of layers (low depth and frame, high depth and frame)."""
    lo, k_lo, hi, k_hi = pair
    fit, checks = _check_frames(k_lo, k_hi)
    # the focus measure mixes a thin layer with what lies behind it: its mode may fall a
    # frame short of its focus; the frame beyond each is read too and the sharper kept
    below = k_lo - 1 if k_lo > 0 else None
    above = k_hi + 1 if k_hi < n - 1 else None
    extra = [k for k in (below, above) if k is not None]
    return _TilePlan(
        ty,
        tx,
        win,
        core,
        hi,
        lo,
        (k_lo, k_hi, *sorted(set(fit) | set(checks) | set(extra))),
        fit,
        checks,
        shape,
        (below, above),
    )


def _sharper(
    crop: _Windows, k: int, other: int | None, region: np.ndarray, more: Sequence[int] = ()
) -> int:
    """``other`` when its detail over ``region`` exceeds frame ``k``'s, else ``k``.

    The detail: the energy of the frame less its Gaussian blur of 1 px, summed over the
    channels; ``other`` must exceed by :data:`SHARPER_BY` (relative). With ``more`` (the
    frames further beyond, :attr:`_TilePlan.deeper`) the one of most detail among those
    and ``other``, by the same margin.
    """
    from scipy import ndimage

    cands = [j for j in (other, *more) if j is not None]
    if not cands or region.sum() < 16:
        return k

    def detail(j: int) -> float:
        img = crop[j]
        hp = img - ndimage.gaussian_filter(img, (0, 1.0, 1.0), mode="nearest")
        return float((hp[:, region] ** 2).sum())

    details = {j: detail(j) for j in cands}
    best = max(cands, key=details.__getitem__)  # (the first of equals: the nearest beyond)
    return best if details[best] > (1.0 + SHARPER_BY) * detail(k) else k


def _holes(side: np.ndarray) -> np.ndarray:
    """Return ``side``'s parts (8-connected) that do not reach the window's border."""
    from scipy import ndimage

    lab, _ = ndimage.label(side, np.ones((3, 3), bool))
    rim = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return np.asarray(side & ~np.isin(lab, rim))


def _in_holes(side: np.ndarray) -> float:
    """Share of ``side``'s pixels in :func:`_holes` (0 for an empty side)."""
    n_px = int(side.sum())
    return float(_holes(side).sum()) / n_px if n_px else 0.0


def _layer_depth(values: np.ndarray, n: int) -> tuple[float, int]:
    """Return a layer's depth and frame from the depth map's values on its side.

    The most common frame (the focus measure spreads a layer's depth next to its edges, the
    mode stays), refined by the mean of the depths that round to it.
    """
    k = np.clip(np.rint(values), 0, n - 1).astype(np.intp)
    mode = int(np.argmax(np.bincount(k, minlength=n)))
    return float(values[k == mode].mean()), mode


def _check_frames(ka: int, kb: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Frames between the two layers' (not theirs): the PSF fit's and the check's."""
    lo, hi = min(ka, kb), max(ka, kb)
    inner = list(range(lo + 1, hi))
    if not inner:
        return (), ()
    n = len(inner)
    checks = tuple(sorted({inner[n // 4], inner[(3 * n) // 4]}))
    fit = (inner[n // 2],)
    return fit, checks


def _solve_tile(
    p: _TilePlan,
    crop: _Windows,
    depth: np.ndarray,
    sigma: np.ndarray,
    cache: dict[tuple[int, int], tuple[float, float]],
    blur_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Fit the layers in one window, both ways round; keep the one the fit frame prefers.

    ``cache`` holds the PSF fitted for each pair of layer frames so far (a start for the
    next tile's fit); ``blur_px`` is the optics' prior (:func:`correct_halo`). Returns
    (value, accept, band, residual^2 in DN^2) maps of the window, or None.
    """
    from scipy import ndimage

    y0, y1, x0, x1 = p.win
    d = depth[y0:y1, x0:x1]
    lo, hi = p.d_back, p.d_front  # (as planned: the low and the high layer)
    fin = np.isfinite(d)
    low_side = fin & (d < 0.5 * (lo + hi))
    k_lo, k_hi = p.frames[0], p.frames[1]
    fit_frames = p.fit_frames or p.check_frames
    if not p.check_frames:
        return None
    # the sides' pixels the frames are compared on; a third layer's: its own depths'
    lo_region, hi_region = low_side, fin & ~low_side
    if p.main is not None:
        mid = lo if k_lo not in p.main else hi
        own = fin & (np.abs(np.where(fin, d, 0.0) - mid) < MIN_STEP_FRAMES / 2)
        if k_lo not in p.main:
            lo_region = lo_region & own
        else:
            hi_region = hi_region & own
    k = _sharper(crop, k_lo, p.outer[0], lo_region, p.deeper[0])
    if k != k_lo:
        k_lo, lo = k, float(k)
    k = _sharper(crop, k_hi, p.outer[1], hi_region, p.deeper[1])
    if k != k_hi:
        k_hi, hi = k, float(k)
    if (p.deeper[0] or p.deeper[1]) and (k_lo, k_hi) != (p.frames[0], p.frames[1]):
        # a plate with holes whose layer lay further beyond: the frames between those
        # (all read) fit and check the model
        fit_frames, checks = _check_frames(k_lo, k_hi)
        fit_frames = fit_frames or checks
        p = dataclasses.replace(p, check_frames=checks)
    if p.main is not None and (k_lo, k_hi) == p.main:
        return None  # the third layer's frame is not the sharpest on its side: no layer
    tried = []
    for front, kf, kb, d_f, d_b in (
        (low_side, k_lo, k_hi, lo, hi),
        (fin & ~low_side, k_hi, k_lo, hi, lo),
    ):
        layers = _Layers.build(crop, front, fin, kf, kb, d_f, d_b, sigma)
        if layers is None or layers.back_texture() < MIN_BACK_TEXTURE:
            # a background without detail (in its own frame) cannot tell occlusion (light
            # attenuated) from light that adds up (fluorescence, a translucent glow): the
            # check would pass either way
            continue
        if not layers.sharp_rim().any():
            continue  # no outline of the front layer is an edge in its frame: nothing to fit
        prior = None if blur_px is None else 0.5 * blur_px * layers.span  # (a pillbox's std)
        start = cache.get((kf, kb))
        got = start if start is not None else layers.coarse_fit(prior)
        if got is None:
            continue  # the optics put this blur beyond what the correction handles
        size, t = got
        cache.setdefault((kf, kb), (size, t))  # the next tile's start, whatever comes of this
        out = layers.render(size, t, fit_frames)
        if start is not None and (out is None or out[3] > HOPELESS_SCORE):
            # another tile's PSF does not fit here (an aberration that changes over the
            # field, a misjudged layer): this tile's own fit
            start = None
            got = layers.coarse_fit(prior)
            if got is None:
                continue
            size, t = got
            out = layers.render(size, t, fit_frames)
        if out is not None:
            tried.append((out[3], start is not None, size, t, layers))
    if not tried:
        return None
    score, cached, size, t, layers = min(tried, key=lambda v: v[0])
    if score > HOPELESS_SCORE:
        return None  # far from the noise either way round: not refined, not corrected

    size, t = layers.refine(size, t, fit_frames, narrow=cached)
    # --- the check: the frames between the two layers' (not used above), re-rendered, their
    # residual against the noise at each pixel's level (photon noise grows with the signal:
    # the fuser's estimate is the flattest, usually darkest, quarter's)
    layers.noise_line = _noise_line(crop, p.check_frames, sigma)
    done = layers.check(size, t, p.check_frames)
    if done is None:
        return None
    cache[(layers.kf, layers.kb)] = (size, t)
    value, band, res2, null2, dn2 = done
    # --- the check: the frames between the two layers' (not used above), re-rendered; the
    # correction must fit them to the noise, and better than no correction does
    local = ndimage.uniform_filter(res2, CHECK_WINDOW_PX, mode="nearest")
    local0 = ndimage.uniform_filter(null2, CHECK_WINDOW_PX, mode="nearest")
    accept = band & (local <= CHECK_SIGMAS**2) & (local0 - local >= MIN_GLOW_GAIN)
    # and only within the glow's reach of an outline the front layer's own frame shows
    # sharp: a boundary the depth map drew through a featureless area is no edge
    reach = ndimage.distance_transform_edt(~layers.sharp_rim()) <= layers.radius(size)
    accept &= reach
    return value, accept, band, dn2


def _noise_line(crop: _Windows, frames: Sequence[int], sigma: np.ndarray) -> np.ndarray:
    """Noise variance against the signal in a window: ``(C, 3)``, ``min(a + b x, top)``.

    Measured in ``frames`` (between the layers': both blurred, little detail): in blocks of
    :data:`NOISE_BLOCK_PX` px, the mean square of the second difference along rows (``1.5
    sigma^2`` for white noise, as :func:`~nanoro_optics.fusion.noise.estimate_noise`) and
    the mean level; in :data:`NOISE_LEVEL_BINS` bins of level, the lower quartile of the
    blocks' variances (detail raises some blocks, the flattest hold the noise alone); a
    line through those, by least squares, not falling with the signal, and never above the
    largest of those variances (``top``: no extrapolation beyond what was measured, so that
    a slope the levels hardly determine cannot make the check pass anything). Where the
    data do not tell (a window too small), the fuser's ``sigma^2``, level.
    """
    nc = sigma.size
    out = np.zeros((nc, 3))
    out[:, 0] = out[:, 2] = sigma**2
    b = NOISE_BLOCK_PX
    for c in range(nc):
        var_l, lev_l = [], []
        for k in frames:
            x = crop[k][c]
            d = x[:, 1:-1] - 0.5 * (x[:, :-2] + x[:, 2:])
            ny, nx = d.shape[0] // b, d.shape[1] // b
            if ny * nx == 0:
                continue
            d = d[: ny * b, : nx * b].reshape(ny, b, nx, b)
            var_l.append((d**2).mean((1, 3)).ravel() / 1.5)
            lev_l.append(x[: ny * b, 1 : nx * b + 1].reshape(ny, b, nx, b).mean((1, 3)).ravel())
        if not var_l:
            continue
        var, lev = np.concatenate(var_l), np.concatenate(lev_l)
        if var.size < 4 * NOISE_LEVEL_BINS:
            continue
        order = np.argsort(lev)
        parts = np.array_split(order, NOISE_LEVEL_BINS)
        v = np.array([np.quantile(var[i], 0.25) for i in parts])
        m = np.array([np.median(lev[i]) for i in parts])
        slope = 0.0
        dm = m - m.mean()
        if float((dm * dm).sum()) > 0:  # least squares, in closed form
            slope = max(float((dm * (v - v.mean())).sum() / (dm * dm).sum()), 0.0)
        out[c] = (float(np.mean(v - slope * m)), slope, float(v.max()))
    return out


@dataclass
class _Layers:
    """The two layers of one window, one way round: matte, colour, and their rendering."""

    crop: _Windows
    kf: int
    kb: int
    d_f: float
    d_b: float
    span: float
    sigma: np.ndarray
    fin: np.ndarray
    front: np.ndarray
    inner: np.ndarray
    alpha: np.ndarray
    prem: np.ndarray
    dist_out: np.ndarray
    dist_edge: np.ndarray
    pad: int
    nc: int
    blurrer: _Blurrer
    #: the back layer's PSF in the frames between the layers': its size relative to the
    #: front layer's at the same distance in frames, and its shape (None: the front's)
    back_scale: float = 1.0
    back_t: float | None = None
    _rim: np.ndarray | None = None  # (sharp_rim, once)
    #: the check's noise variance against the signal (:func:`_noise_line`; None: the
    #: fuser's, level)
    noise_line: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        crop: _Windows,
        front_depth: np.ndarray,
        fin: np.ndarray,
        kf: int,
        kb: int,
        d_f: float,
        d_b: float,
        sigma: np.ndarray,
    ) -> _Layers | None:
        """Matte and colour of the front layer (the depth map's ``front_depth`` side)."""
        from scipy import ndimage

        span = abs(kb - d_f)
        if span < 1e-6:
            return None
        i_f = crop[kf]
        holes = _in_holes(fin & ~front_depth) >= HOLES_SHARE
        got = _matte(i_f, crop[kb], front_depth, fin, sigma, holes=holes)
        if got is None:
            return None
        front, alpha, prem = got
        dist_out = ndimage.distance_transform_edt(~front)  # px from the front layer
        dist_in = ndimage.distance_transform_edt(front)
        pad = int(np.ceil(MAX_BLUR_PX)) + 4
        return cls(
            crop=crop,
            kf=kf,
            kb=kb,
            d_f=d_f,
            d_b=d_b,
            span=span,
            sigma=sigma,
            fin=fin,
            front=front,
            inner=ndimage.binary_erosion(front, iterations=2),
            alpha=alpha,
            prem=prem,
            dist_out=dist_out,
            dist_edge=np.minimum(dist_out, dist_in),
            pad=pad,
            nc=i_f.shape[0],
            blurrer=_Blurrer(np.concatenate([prem, alpha[None]], axis=0), pad),
        )

    def back_texture(self) -> float:
        """Detail of the back layer where it is visible and in focus, in noise variances.

        The local variance (9 px windows) of frame kb less its 2-px Gaussian blur, its
        median over the back layer's pixels beyond the widest glow (a few bright objects do
        not make a dark background detailed), per channel over its noise variance, the
        largest channel's. Where the front layer leaves none of those and the back layer
        lies mostly in its holes (:data:`HOLES_SHARE` of its pixels in parts that do not
        reach the window's border: a plate with holes fills the window), over those holes
        beyond :data:`HOLE_RIM_PX`: the glow over them is smooth, it adds little to the
        high-pass.
        """
        from scipy import ndimage

        back = ~self.front & self.fin
        seen = back & (self.dist_out > MAX_BLUR_PX / 2)
        if seen.sum() < 64:
            holes = _holes(back)  # (labelled once: the share and the pixels)
            if holes.sum() >= HOLES_SHARE * back.sum() and back.any():
                seen = holes & (self.dist_out > HOLE_RIM_PX)
        if seen.sum() < 64:
            return 0.0
        i_b = self.crop[self.kb]
        out = 0.0
        for c in range(self.nc):
            hp = i_b[c] - ndimage.gaussian_filter(i_b[c], 2.0, mode="nearest")
            local = ndimage.uniform_filter(hp**2, 9, mode="nearest")
            out = max(out, float(np.median(local[seen])) / float(self.sigma[c] ** 2))
        return out

    def _cost(
        self, blurrer: _Blurrer, i_b: np.ndarray, size: float, t: float, sel: np.ndarray
    ) -> float:
        """Misfit of frame kb by glow + attenuated background of one level per channel."""
        bl = blurrer.blur(*_family(size, t))
        y = (i_b - bl[: self.nc])[:, sel]
        x = (1.0 - bl[self.nc])[sel]
        mu = (y * x).sum(1) / max(float((x * x).sum()), 1e-12)
        return float(((y - mu[:, None] * x[None]) ** 2).mean())

    def coarse_fit(self, prior: float | None = None) -> tuple[float, float] | None:
        """Fit the PSF (size, shape) to frame kb's glow over a level background.

        On the window at half resolution (2 x 2 means; sizes in half-resolution px, the
        diffraction Gaussian's share neglected): a start for :meth:`refine`. With the
        optics' ``prior`` (the geometric std of the blur disc, px), the sizes within
        :data:`PRIOR_FACTOR` of it only; None when none of those is in the handled range.
        """

        def half(a: np.ndarray) -> np.ndarray:
            h2, w2 = a.shape[-2] // 2, a.shape[-1] // 2
            a = a[..., : 2 * h2, : 2 * w2]
            return a.reshape(*a.shape[:-2], h2, 2, w2, 2).mean((-3, -1))

        planes = np.concatenate([self.prem, self.alpha[None]], axis=0)
        blurrer = _Blurrer(half(planes), self.pad // 2 + 2)
        i_b = half(self.crop[self.kb])
        dist = half(self.dist_edge) / 2.0
        sel = dist <= MAX_BLUR_PX / 2
        lo, hi = 0.5, MAX_BLUR_PX / 2.5
        if prior is not None:
            lo, hi = max(lo, prior / PRIOR_FACTOR), min(hi, prior * PRIOR_FACTOR)
            if lo > hi:
                return None
        sizes = np.geomspace(lo, hi, 16)
        costs = [self._cost(blurrer, i_b, float(sz) / 2, 1.0, sel) for sz in sizes]
        size = float(sizes[int(np.argmin(costs))])
        sel = dist <= min(2.5 * size + 4, MAX_BLUR_PX) / 2
        best = (np.inf, size, 1.0)
        for t in (0.0, 0.5, 1.0):
            for sz in size * np.geomspace(0.8, 1.25, 5):
                c = self._cost(blurrer, i_b, float(sz) / 2, t, sel)
                if c < best[0]:
                    best = (c, float(sz), t)
        return best[1], best[2]

    def refine(
        self, size: float, t: float, frames: Sequence[int], *, narrow: bool
    ) -> tuple[float, float]:
        """Refine the PSF on re-rendered ``frames`` (not the inverted frame kb)."""
        shapes = [t] if narrow else sorted({t, 0.0, 1.0})
        factors = (0.96, 1.0, 1.04) if narrow else (0.92, 1.0, 1.08)
        scored = []
        for tt in shapes:
            for f in factors:
                out = self.render(size * f, tt, frames)
                if out is not None:
                    scored.append((out[3], size * f, tt))
        if not scored:
            return size, t
        best = min(scored)
        for f in (0.96, 0.98, 1.02, 1.04):
            out = self.render(best[1] * f, best[2], frames)
            if out is not None and out[3] < best[0]:
                best = (out[3], best[1] * f, best[2])
        self.refine_back(best[1], best[2], frames, best[0])
        return best[1], best[2]

    def refine_back(self, size: float, t: float, frames: Sequence[int], score: float) -> None:
        """Fit the back layer's own PSF (shape, then size) on the re-rendered ``frames``.

        The two layers lie at different depths: with a depth-dependent aberration (an
        index mismatch) their PSFs at the same distance in frames differ. Kept in
        :attr:`back_scale` and :attr:`back_t` when they re-render ``frames`` better.
        """
        best = (score, self.back_scale, self.back_t)

        def trial(scale: float, shape: float | None) -> None:
            nonlocal best
            self.back_scale, self.back_t = scale, shape
            out = self.render(size, t, frames)
            if out is not None and out[3] < best[0]:
                best = (out[3], scale, shape)

        for shape in sorted({0.0, 1.0} - {t}):
            trial(1.0, shape)
        for scale in BACK_SCALES:
            trial(scale, best[2])
        self.back_scale, self.back_t = best[1], best[2]

    @staticmethod
    def radius(size: float) -> float:
        """Reach (px) of the PSF of geometric std ``size``: the band's width."""
        return 2.5 * size + 2

    def sharp_rim(self) -> np.ndarray:
        """Return the front layer's outline where its own frame shows an edge sharper than kb's.

        Along the outline (inside and out), the gradient magnitude (Gaussian derivative of
        1 px, over the channels) of frame kf, averaged over the outline's pixels within
        :data:`CHECK_WINDOW_PX` (a speck of noise or a compression block is no edge), must
        reach :data:`RIM_SHARPER` times frame kb's and :data:`RIM_SIGMAS` times its own
        noise: in focus there, and blurred in the background's frame.
        """
        if self._rim is not None:
            return self._rim
        from scipy import ndimage

        # (the window's border is no edge of the front layer)
        outline = self.front ^ ndimage.binary_erosion(self.front, border_value=1)
        outline |= ndimage.binary_dilation(self.front) & ~self.front
        on = outline.astype(np.float64)
        n_on = np.maximum(ndimage.uniform_filter(on, CHECK_WINDOW_PX, mode="constant"), 1e-12)

        def along(img: np.ndarray) -> np.ndarray:  # its gradient, mean over the outline nearby
            g2 = sum(ndimage.gaussian_gradient_magnitude(c, 1.0, mode="nearest") ** 2 for c in img)
            return ndimage.uniform_filter(np.sqrt(g2) * on, CHECK_WINDOW_PX, mode="constant") / n_on

        g_f, g_b = along(self.crop[self.kf]), along(self.crop[self.kb])
        # a Gaussian derivative of 1 px passes 1 / (2 sqrt(2 pi)) of white noise per axis
        noise = float(np.sqrt(2.0 * (self.sigma**2).sum())) / (2.0 * np.sqrt(2.0 * np.pi))
        self._rim = outline & (g_f >= RIM_SHARPER * g_b) & (g_f >= RIM_SIGMAS * noise)
        return self._rim

    def render(
        self, size: float, t: float, frames: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
        """Invert frame kb with the PSF (size, t), re-render ``frames``.

        Returns the corrected values, the band, the residual^2 (noise variances, mean over
        the frames and channels) and its mean over the band.
        """
        out = self._render(size, t, frames, null=False)
        if out is None:
            return None
        value, band, res2, _, _ = out
        score = float(np.mean(res2[band])) if band.any() else np.inf
        return value, band, res2, score

    def check(
        self, size: float, t: float, frames: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """:meth:`render` for the check, beside the same frames rendered with no correction.

        Returns the corrected values, the band, the residual^2 (noise variances) of the
        correction and of no correction (the same layers, with frame kb's own values as
        the background in the band: what the check must tell the correction from), and
        the correction's residual^2 in DN^2.
        """
        out = self._render(size, t, frames, null=True)
        if out is None:
            return None
        value, band, res2, null2, dn2 = out
        assert null2 is not None
        return value, band, res2, null2, dn2

    def _render(
        self, size: float, t: float, frames: Sequence[int], *, null: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray] | None:
        """Invert frame kb and re-render ``frames``: :meth:`render` and :meth:`check`.

        Returns the values, the band, the residual^2 (noise variances), that of no
        correction (``null``; else None) and the residual^2 in DN^2, means over the frames
        and channels.
        """
        radius = self.radius(size)
        if radius > MAX_BLUR_PX:
            return None
        nc, pad = self.nc, self.pad
        i_b = self.crop[self.kb]
        bl = self.blurrer.blur(*_family(size, t))
        hp, tr = bl[:nc], 1.0 - bl[nc]
        # invert with damping, toward the local background level where the glow hides it:
        # the undamped inversion averaged with its reliability (the transmission squared)
        raw = (i_b - hp) / np.maximum(tr, 0.1)[None]
        reliable = np.clip(tr, 0.0, 1.0) ** 2 * (~self.front & self.fin)
        # (near the front layer only: the band and what the check frames see of it)
        prior = _extend(raw, reliable, max(radius / 2, 2.0), fill=False)
        back = ((i_b - hp) * tr[None] + DAMPING * prior) / (tr**2 + DAMPING)[None]
        value = self.prem + (1.0 - self.alpha)[None] * back
        band = (self.dist_out <= radius) & ~self.inner
        # what the frames between the layers' see of the background: the inversion in the
        # band and under the front layer's rim too (frame kb holds some of the background
        # there, through the blurred front layer's partial cover; where it holds none, the
        # damping leaves the extension from outside), the frame itself further out; with no
        # correction the frame itself in the band too
        inverted = [band | self.inner, self.inner] if null else [band | self.inner]
        back_blurs = [_Blurrer(np.where(m[None], back, i_b), pad) for m in inverted]
        res2 = [np.zeros(band.shape) for _ in back_blurs]
        dn2 = np.zeros(band.shape)
        sig2 = (self.sigma**2)[:, None, None]
        line = self.noise_line
        for k in frames:
            blf = self.blurrer.blur(*_family(size * abs(k - self.d_f) / self.span, t))
            size_b = self.back_scale * size * abs(k - self.d_b) / self.span
            shape_b = t if self.back_t is None else self.back_t
            for j, back_blur in enumerate(back_blurs):
                bb = back_blur.blur(*_family(size_b, shape_b))
                pred = blf[:nc] + (1.0 - blf[nc])[None] * bb
                err2 = (self.crop[k] - pred) ** 2
                if line is None:
                    var = sig2
                else:  # never below the fuser's
                    top = line[:, 2:, None]
                    var = np.maximum(
                        sig2, np.minimum(line[:, :1, None] + line[:, 1:2, None] * pred, top)
                    )
                res2[j] += (err2 / var).mean(0)
                if j == 0:
                    dn2 += err2.mean(0)
        n = max(len(frames), 1)
        return value, band, res2[0] / n, res2[1] / n if null else None, dn2 / n
