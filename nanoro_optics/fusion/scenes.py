"""Hard synthetic focus stacks: fluorescence, occlusion and thick samples, with ground truth.

:func:`synthetic_stack` blurs one texture with a Gaussian; the scenes here model the cases
focus stacking fails on in practice, with geometric-optics defocus:

* the point-spread function of a defocused thin lens is a uniform disc (pillbox) of radius
  ``blur_px_per_frame * |z - z_focus|`` px (frames as the unit of z), convolved with a small
  Gaussian for diffraction (sigma ``DIFFRACTION_PX``), applied through its optical transfer
  function ``2 J1(2 pi R f) / (2 pi R f) * exp(-2 pi^2 sigma^2 f^2)`` [1]_;
* ``"fluorescence"``: dim nuclei (blue), filaments (green) and puncta (red) at random depths
  through the whole stack over a dark background, emitting light that adds up (no
  occlusion), counted as photons (Poisson noise) plus a camera offset and Gaussian read
  noise, quantised to ``bit_depth`` bits in a uint16 container;
* ``"occlusion"``: bright, finely textured objects at the last frame's depth in front of a
  textured background at the first frame's, composited layer by layer (the blurred
  foreground's light spreads over the background and hides part of it: the glow halos
  come from) [2]_; an 8-bit RGB photograph-like scene;
* ``"thick"``: a textured surface whose height spans the whole stack (a dome on a ramp),
  grey, photon and read noise, ``bit_depth`` bits; each pixel blurred by its own defocus.

Each returns a :class:`SceneStack` with the all-in-focus truth (noise-free: every part of the
sample at its own focus, seen through the diffraction Gaussian as the frames are), the true depth
(frames; NaN where it is undefined, e.g. the fluorescence background), and the mask of object
edges used to score halos.

References
----------
.. [1] M. Born and E. Wolf, *Principles of Optics*, 7th ed., Cambridge University Press
   (1999), sec. 8.8 (geometrical-optics defocus; the disc's transform is the Airy function).
.. [2] S. W. Hasinoff and K. N. Kutulakos, "A layer-based restoration framework for
   variable-aperture photography", Proc. ICCV 2007 (layered defocus with occlusion).
   https://doi.org/10.1109/ICCV.2007.4408964
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nanoro_optics._validation import check_int, check_positive

__all__ = ["SCENES", "SceneStack", "scene_stack"]

#: the scenes :func:`scene_stack` can make
SCENES = ("fluorescence", "occlusion", "thick")
#: sigma (px) of the Gaussian standing for diffraction in every scene's PSF
DIFFRACTION_PX = 0.6


@dataclass(frozen=True)
class SceneStack:
    """A hard synthetic focus stack and its ground truth.

    Attributes
    ----------
    kind : str
        One of :data:`SCENES`.
    frames : numpy.ndarray
        ``(N, H, W)`` grey or ``(N, H, W, C)`` colour, uint8 or uint16.
    truth : numpy.ndarray
        float64 all-in-focus image (noise-free, same shape as a frame, in DN).
    depth : numpy.ndarray
        float32 ``(H, W)`` true depth in frames (0 = first frame); NaN where undefined.
    edges : numpy.ndarray
        bool ``(H, W)``: object boundaries (the halo band is measured around them).
    white_level : int
        Largest value the camera can record (``2**bit_depth - 1``).
    blur_px_per_frame : float
        Radius of the defocus disc (px) per frame of defocus.
    """

    kind: str
    frames: np.ndarray
    truth: np.ndarray
    depth: np.ndarray
    edges: np.ndarray
    white_level: int
    blur_px_per_frame: float

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])


def defocus_otf(shape: tuple[int, int], radius_px: float) -> np.ndarray:
    """Real-FFT transfer function of a pillbox of ``radius_px`` and the diffraction Gaussian.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image the OTF multiplies (``numpy.fft.rfft2`` layout).
    radius_px : float
        Radius of the geometric defocus disc in px (0: in focus, diffraction only).

    Returns
    -------
    numpy.ndarray
        float64 ``(H, W // 2 + 1)``, 1 at zero frequency.

    Examples
    --------
    >>> otf = defocus_otf((64, 64), 3.0)
    >>> otf.shape, float(otf[0, 0])
    ((64, 33), 1.0)
    """
    from scipy import special

    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    otf = np.exp(-2.0 * np.pi**2 * DIFFRACTION_PX**2 * f**2)
    if radius_px > 0:
        x = 2.0 * np.pi * radius_px * f
        with np.errstate(invalid="ignore", divide="ignore"):
            disc = np.where(x > 1e-8, 2.0 * special.j1(x) / x, 1.0)
        otf = otf * disc
    return otf


def _blur(img: np.ndarray, radius_px: float) -> np.ndarray:
    """Defocus ``img`` (H, W) by a pillbox of ``radius_px`` (periodic boundary)."""
    spec = np.fft.rfft2(img)
    return np.fft.irfft2(spec * defocus_otf(img.shape, radius_px), s=img.shape)


def _texture(shape: tuple[int, int], rng: np.random.Generator, scale_px: float) -> np.ndarray:
    """Band-limited random texture in [0, 1] with features of about ``scale_px``."""
    from scipy import ndimage

    noise = rng.standard_normal(shape)
    t = ndimage.gaussian_filter(noise, scale_px, mode="wrap")
    t -= ndimage.gaussian_filter(t, 4 * scale_px, mode="wrap")
    t /= 3 * t.std() + 1e-12
    return np.clip(0.5 + t, 0.0, 1.0)


def _ihc(shape: tuple[int, int]) -> np.ndarray:
    from .synthetic import _tiled_texture

    return _tiled_texture(shape, 3) / 255.0


def _edges(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask) | (~mask & ndimage.binary_dilation(mask))


def _quantise(img: np.ndarray, white: int, dtype: Any) -> np.ndarray:
    return np.clip(np.rint(img), 0, white).astype(dtype)


def _fluorescence(h: int, w: int, n: int, rng: np.random.Generator, blur: float, white: int):
    from scipy import ndimage

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # emitters per channel (photons at focus): (channel, depth, image)
    layers: list[tuple[int, float, np.ndarray]] = []
    area = h * w
    for _ in range(max(2, area // 9000)):  # nuclei, blue: textured ellipses
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(8, 22), rng.uniform(8, 22)
        r = np.hypot((yy - cy) / ry, (xx - cx) / rx)
        body = 1.0 / (1.0 + np.exp(np.minimum((r - 1.0) * 12.0, 50.0)))
        sl = body > 1e-3
        img = np.zeros((h, w))
        tex = 0.55 + 0.45 * _texture((h, w), rng, 1.2)
        img[sl] = body[sl] * tex[sl] * rng.uniform(150, 700)
        layers.append((2, rng.uniform(0, n - 1), img))
    for _ in range(max(2, area // 20000)):  # filaments, green: thin smooth curves
        img = np.zeros((h, w))
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        ang = rng.uniform(0, 2 * np.pi)
        for _step in range(int(rng.uniform(60, 200))):
            ang += rng.normal(0, 0.15)
            y, x = y + np.sin(ang), x + np.cos(ang)
            if 0 <= y < h and 0 <= x < w:
                img[int(y), int(x)] = 1.0
        img = ndimage.gaussian_filter(img, 0.8) * rng.uniform(600, 1600)
        layers.append((1, rng.uniform(0, n - 1), img))
    for _ in range(max(2, area // 30000)):  # puncta, red: clusters of diffraction spots
        img = np.zeros((h, w))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        for _p in range(30):
            y = int(np.clip(cy + rng.normal(0, 25), 0, h - 1))
            x = int(np.clip(cx + rng.normal(0, 25), 0, w - 1))
            img[y, x] += rng.uniform(300, 1200)
        layers.append((0, rng.uniform(0, n - 1), img))
    offset, background, read = 100.0, 6.0, 2.0
    # depth quantised to half frames: one blurred copy per (layer group, frame)
    groups: dict[tuple[int, float], np.ndarray] = {}
    for c, z, img in layers:
        key = (c, round(z * 2) / 2)
        groups[key] = groups.get(key, 0) + img
    truth = np.full((h, w, 3), offset + background)
    expected = np.full((n, h, w, 3), background)
    top = np.zeros((h, w, 3))
    depth_c = np.full((h, w, 3), np.nan)
    for (c, z), img in groups.items():
        spec = np.fft.rfft2(img)
        focus = np.fft.irfft2(spec * defocus_otf((h, w), 0.0), s=(h, w))
        truth[..., c] += focus
        stronger = focus > top[..., c]
        top[..., c] = np.where(stronger, focus, top[..., c])
        depth_c[..., c] = np.where(stronger, z, depth_c[..., c])
        for k in range(n):
            otf = defocus_otf((h, w), blur * abs(z - k))
            expected[k, ..., c] += np.fft.irfft2(spec * otf, s=(h, w))
    frames = rng.poisson(np.maximum(expected, 0.0)).astype(np.float64) + offset
    frames += rng.normal(0.0, read, frames.shape)
    frames = _quantise(frames, white, np.uint16)
    # depth where an object stands clearly above the background, from the brightest channel
    best = np.argmax(top, axis=-1)
    depth = np.take_along_axis(depth_c, best[..., None], axis=-1)[..., 0]
    obj = top.max(-1) > 25.0
    depth = np.where(obj, depth, np.nan)
    return frames, truth, depth.astype(np.float32), _edges(obj)


def _occlusion(h: int, w: int, n: int, rng: np.random.Generator, blur: float):
    from scipy import ndimage

    bg = 0.15 + 0.5 * _ihc((h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    alpha = np.zeros((h, w))
    for _ in range(max(2, h * w // 25000)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(12, 40)
        if rng.uniform() < 0.5:  # discs and bars
            alpha = np.maximum(alpha, np.hypot(yy - cy, xx - cx) <= r)
        else:
            ang = rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(ang) + (xx - cx) * np.sin(ang)
            v = -(yy - cy) * np.sin(ang) + (xx - cx) * np.cos(ang)
            alpha = np.maximum(alpha, (np.abs(u) <= r) & (np.abs(v) <= r / 4))
    alpha = ndimage.gaussian_filter(alpha.astype(np.float64), 0.5)
    tint = np.array([1.0, 0.93, 0.8])
    fg = (0.72 + 0.25 * _texture((h, w), rng, 0.9))[..., None] * tint
    white = 255

    def composite(rb: float, rf: float) -> np.ndarray:
        """Both layers through their defocus (diffraction included), front over back."""
        a_b = _blur(alpha, rf)
        out = np.empty((h, w, 3))
        for c in range(3):
            out[..., c] = _blur(alpha * fg[..., c], rf) + (1 - a_b) * _blur(bg[..., c], rb)
        return out * white

    # the truth: every layer at its own focus, through the same diffraction as the frames
    # (as in the other scenes), so that an in-focus frame matches it away from the edges
    truth = composite(0.0, 0.0)
    frames = np.empty((n, h, w, 3))
    z_bg, z_fg = 0.0, float(n - 1)
    for k in range(n):
        frames[k] = composite(blur * abs(z_bg - k), blur * abs(z_fg - k))
    frames = frames + rng.normal(0.0, 1.0, frames.shape)
    depth = np.where(alpha > 0.5, z_fg, z_bg).astype(np.float32)
    return _quantise(frames, white, np.uint8), truth, depth, _edges(alpha > 0.5)


def _thick(h: int, w: int, n: int, rng: np.random.Generator, blur: float, white: int):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = yy / h, xx / w
    d = 0.55 * x + 0.2 * y + 0.7 * np.exp(-(((y - 0.5) / 0.22) ** 2 + ((x - 0.45) / 0.25) ** 2))
    d = (d - d.min()) / (d.max() - d.min()) * (n - 1)
    lum = _ihc((h, w)) @ np.array([0.2126, 0.7152, 0.0722])
    photons = 60.0 + 1400.0 * lum
    truth = np.fft.irfft2(np.fft.rfft2(photons) * defocus_otf((h, w), 0.0), s=(h, w))
    radii = np.unique(np.concatenate([np.arange(0, 3, 0.25), np.arange(3, 12, 0.5)]))
    radii = np.concatenate([radii, 12 * 1.15 ** np.arange(1, 30)])
    radii = radii[: int(np.searchsorted(radii, blur * (n - 1))) + 2]
    spec = np.fft.rfft2(photons)
    blurred = [np.fft.irfft2(spec * defocus_otf((h, w), r), s=(h, w)) for r in radii]
    frames = np.empty((n, h, w))
    for k in range(n):
        pos = np.interp(blur * np.abs(d - k), radii, np.arange(radii.size))
        lo = np.minimum(np.floor(pos).astype(int), radii.size - 2)
        t = pos - lo
        img = np.zeros((h, w))
        for i in np.unique(lo):
            sel = lo == i
            img[sel] = blurred[i][sel] * (1 - t[sel]) + blurred[i + 1][sel] * t[sel]
        frames[k] = img
    offset = 100.0
    frames = rng.poisson(np.maximum(frames, 0.0)) + offset + rng.normal(0.0, 2.0, frames.shape)
    edges = np.zeros((h, w), bool)
    return _quantise(frames, white, np.uint16), truth + offset, d.astype(np.float32), edges


def scene_stack(
    kind: str,
    shape: tuple[int, int],
    n_frames: int,
    *,
    seed: int = 0,
    blur_px_per_frame: float | None = None,
    bit_depth: int = 12,
) -> SceneStack:
    """Make one of the hard synthetic focus stacks (see the module docstring).

    Parameters
    ----------
    kind : {"fluorescence", "occlusion", "thick"}
        The scene.
    shape : tuple of int
        ``(H, W)``, each 16 to 8192 px.
    n_frames : int
        Number of frames, 2 to 200.
    seed : int, optional
        Seed of the scene's objects and of the noise.
    blur_px_per_frame : float, optional
        Defocus disc radius per frame of defocus (px); default 2.5 (fluorescence),
        1.5 (occlusion), 1.0 (thick).
    bit_depth : int, optional
        Camera bits of the fluorescence and thick scenes (8 to 16; the occlusion scene is
        8-bit).

    Returns
    -------
    SceneStack

    Examples
    --------
    >>> s = scene_stack("thick", (64, 64), 5, seed=0)
    >>> s.frames.shape, s.frames.dtype, s.white_level
    ((5, 64, 64), dtype('uint16'), 4095)
    """
    if kind not in SCENES:
        raise ValueError(f"kind must be one of {SCENES}, got {kind!r}")
    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (rows, cols), got {shape!r}")
    h = check_int(shape[0], "shape[0]", 16, 8192)
    w = check_int(shape[1], "shape[1]", 16, 8192)
    n = check_int(n_frames, "n_frames", 2, 200)
    seed = check_int(seed, "seed", 0)
    bits = check_int(bit_depth, "bit_depth", 8, 16)
    default = {"fluorescence": 2.5, "occlusion": 1.5, "thick": 1.0}[kind]
    blur = default if blur_px_per_frame is None else check_positive(blur_px_per_frame, "blur")
    rng = np.random.default_rng(seed)
    white = 2**bits - 1
    if kind == "fluorescence":
        frames, truth, depth, edges = _fluorescence(h, w, n, rng, blur, white)
    elif kind == "occlusion":
        frames, truth, depth, edges = _occlusion(h, w, n, rng, blur)
        white = 255
    else:
        frames, truth, depth, edges = _thick(h, w, n, rng, blur, white)
    return SceneStack(
        kind=kind,
        frames=frames,
        truth=truth,
        depth=depth,
        edges=edges,
        white_level=int(white),
        blur_px_per_frame=float(blur),
    )
