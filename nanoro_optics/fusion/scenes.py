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

:func:`occlusion_stack` makes layered occlusion stacks that do not share a halo
correction's assumptions: the defocus PSF a pillbox, a Gaussian or the library's own
vectorial PSF with index mismatch (:func:`nanoro_optics.psf.vectorial_psf`), photon and read
noise, 8 to 16 bits, thin fibres, holes, dim or translucent occluders, a third depth, focus
breathing; with the halo band (the background next to the occluders, where the defocused
occluder's glow falls), the sharp layers and the kernels.

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
from nanoro_optics.optics import defocus_blur_radius

__all__ = [
    "OCCLUSION_VARIANTS",
    "PSF_FAMILIES",
    "RENDERS",
    "SCENES",
    "SceneLayer",
    "SceneStack",
    "VectorialOptics",
    "occlusion_stack",
    "scene_stack",
]

#: the scenes :func:`scene_stack` can make
SCENES = ("fluorescence", "occlusion", "thick")
#: sigma (px) of the Gaussian standing for diffraction in every scene's PSF
DIFFRACTION_PX = 0.6
#: defocus PSF families of :func:`occlusion_stack`
PSF_FAMILIES = ("pillbox", "gaussian", "vectorial")
#: variants of :func:`occlusion_stack`
OCCLUSION_VARIANTS = ("opaque", "fibres", "holes", "dim", "translucent", "layers3")
#: image formations of :func:`occlusion_stack`
RENDERS = ("layered", "rays")
#: largest defocus radius (px) of the vectorial PSFs and of the ray rendering (their cost
#: grows with its square)
MAX_VECTORIAL_BLUR_PX = 64.0
MAX_RAYS_BLUR_PX = 40.0
#: share of a kernel's energy inside the radius that sets the halo band's width
BAND_ENERGY = 0.95


@dataclass(frozen=True)
class SceneLayer:
    """One sharp layer of a layered occlusion scene.

    Attributes
    ----------
    depth : float
        Depth of the layer in frames (the frame that has it in focus).
    colour : numpy.ndarray
        float64 ``(H, W, 3)`` colour in DN, unpremultiplied (only meaningful where
        ``matte > 0``).
    matte : numpy.ndarray
        float64 ``(H, W)`` coverage in [0, 1] (1 everywhere for the background).
    """

    depth: float
    colour: np.ndarray
    matte: np.ndarray


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
    band : numpy.ndarray or None
        bool ``(H, W)`` (:func:`occlusion_stack` only): the halo band, the pixels within
        ``band_px`` of an occluding edge on the side of the layer behind it, where the
        defocused occluder's glow (or shadow) falls on the sharp background.
    band_px : float
        Width of ``band`` (px): the 95 % encircled-energy radius of the largest occluder
        blur at a layer behind it in focus (0 without a band).
    psf : str
        Defocus PSF family the frames were rendered with (:data:`PSF_FAMILIES`).
    variant : str
        The occlusion scene's variant (:data:`OCCLUSION_VARIANTS`), ``""`` for the others.
    layers : tuple of SceneLayer
        The sharp layers, back (index 0, the background) to front (:func:`occlusion_stack`).
    kernels : tuple of tuple of numpy.ndarray
        ``kernels[layer][frame]``: the normalised 2-D defocus PSF (odd sides, centred) that
        blurred that layer in that frame; ``kernels[layer][round(layer.depth)]`` is the
        in-focus one the truth is seen through.
    magnification : numpy.ndarray or None
        float64 ``(N,)`` magnification of every frame about the image centre (focus
        breathing; the truth has magnification 1), None without breathing.
    noise_e : tuple of float
        ``(full_well_e, read_noise_e)``: electrons at the white level and the read noise
        (electrons rms), ``(0, 0)`` for a noise-free stack.
    render : str
        Image formation of the occlusion scene (:data:`RENDERS`).
    """

    kind: str
    frames: np.ndarray
    truth: np.ndarray
    depth: np.ndarray
    edges: np.ndarray
    white_level: int
    blur_px_per_frame: float
    band: np.ndarray | None = None
    band_px: float = 0.0
    psf: str = "pillbox"
    variant: str = ""
    layers: tuple[SceneLayer, ...] = ()
    kernels: tuple[tuple[np.ndarray, ...], ...] = ()
    magnification: np.ndarray | None = None
    noise_e: tuple[float, float] = (0.0, 0.0)
    render: str = "layered"

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


# --- layered occlusion scenes with a choice of defocus PSF -------------------------------


@dataclass(frozen=True)
class VectorialOptics:
    """Optics of the ``"vectorial"`` PSF family of :func:`occlusion_stack`.

    A dry objective focusing through a planar interface into water by default: the index
    mismatch adds depth-dependent spherical aberration, so the defocused PSF is neither a
    disc nor symmetric about focus (:func:`nanoro_optics.psf.vectorial_psf`).

    Attributes
    ----------
    na : float
        Numerical aperture, ``0 < na < n_immersion``.
    n_immersion, n_sample : float
        Refractive indices of the immersion (design) medium and of the sample (1 to 3).
    wavelength_um : float
        Vacuum wavelength (um), 0.2 to 2.
    pixel_um : float
        Pixel size in the sample (um), 0.01 to 10.
    nfp_um : float
        Nominal focal position (depth below the interface, um) of the last frame, the one
        focused nearest the interface; the others lie deeper by the z step.
    """

    na: float = 0.5
    n_immersion: float = 1.0
    n_sample: float = 1.33
    wavelength_um: float = 0.55
    pixel_um: float = 0.5
    nfp_um: float = 20.0

    def __post_init__(self) -> None:
        from nanoro_optics._validation import check_range

        n1 = check_range(self.n_immersion, "n_immersion", 1.0, 3.0)
        check_range(self.n_sample, "n_sample", 1.0, 3.0)
        check_range(self.na, "na", 0.0, n1, lo_inclusive=False, hi_inclusive=False)
        check_range(self.wavelength_um, "wavelength_um", 0.2, 2.0)
        check_range(self.pixel_um, "pixel_um", 0.01, 10.0)
        check_range(self.nfp_um, "nfp_um", 0.0, 1000.0)


def _fold(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Place a centred odd-sided ``kernel`` at the origin of a periodic ``shape`` array."""
    kh, kw = kernel.shape
    iy = (np.arange(kh) - kh // 2) % shape[0]
    ix = (np.arange(kw) - kw // 2) % shape[1]
    out = np.zeros(shape)
    np.add.at(out, (iy[:, None], ix[None, :]), kernel)
    return out


def _geometric_kernel(family: str, radius_px: float) -> np.ndarray:
    """Return the pillbox or Gaussian kernel of ``radius_px``, normalised to sum 1.

    The pillbox is the area-sampled disc, the Gaussian has the disc's second moment (sigma
    = radius / 2); both pass through the diffraction Gaussian.
    """
    from scipy import ndimage, special

    if family == "pillbox":
        half = int(np.ceil(radius_px + 4 * DIFFRACTION_PX)) + 1
        sub = 8  # area sampling of the disc: sub x sub points per pixel
        u = (np.arange((2 * half + 1) * sub) + 0.5) / sub - half - 0.5
        inside = (np.hypot(u[:, None], u[None, :]) <= radius_px).astype(np.float64)
        disc = inside.reshape(2 * half + 1, sub, 2 * half + 1, sub).mean(axis=(1, 3))
        if disc.sum() == 0.0:  # a disc smaller than the sampling: a point
            disc[half, half] = 1.0
        k = ndimage.gaussian_filter(disc, DIFFRACTION_PX, mode="constant", truncate=6.0)
    else:
        sigma = float(np.hypot(radius_px / 2.0, DIFFRACTION_PX))
        half = int(np.ceil(4.0 * sigma)) + 1
        edges = (np.arange(2 * half + 2) - half - 0.5) / (np.sqrt(2.0) * sigma)
        p = np.diff(special.erf(edges))  # pixel-integrated Gaussian
        k = p[:, None] * p[None, :]
    return k / k.sum()


def _energy_radius(kernel: np.ndarray, share: float = BAND_ENERGY) -> float:
    """Radius (px) of the centred disc holding ``share`` of the kernel's energy."""
    h, w = kernel.shape
    r = np.hypot(*np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij"))
    order = np.argsort(r, axis=None)
    cum = np.cumsum(kernel.ravel()[order]) / kernel.sum()
    return float(r.ravel()[order][min(int(np.searchsorted(cum, share)), cum.size - 1)])


class _VectorialKernels:
    """Defocus kernels of :func:`nanoro_optics.psf.vectorial_psf` for a stack's geometry."""

    def __init__(self, optics: VectorialOptics, n: int, blur: float) -> None:
        from nanoro_optics.psf import apparent_focal_position

        self.o = optics
        self.n = n
        kw: dict[str, Any] = dict(
            na=optics.na,
            n_immersion=optics.n_immersion,
            n_sample=optics.n_sample,
            wavelength_um=optics.wavelength_um,
        )
        self.kw = kw
        # z step (nominal) giving ``blur`` px of geometric blur per frame in the sample
        a0, a1 = apparent_focal_position(np.array([optics.nfp_um, optics.nfp_um + 10.0]), **kw)[0]
        slope = max((a1 - a0) / 10.0, 1e-3)  # actual um per nominal um
        # the geometric blur disc per um of (actual) defocus in the sample
        na_eff = min(optics.na, 0.999 * optics.n_sample)
        tan_t = float(defocus_blur_radius(1.0, na=na_eff, n=optics.n_sample))
        self.z_step_um = blur * optics.pixel_um / (tan_t * slope)
        self.px_per_um = tan_t * slope / optics.pixel_um  # geometric blur px per nominal um
        self.airy_px = 0.61 * optics.wavelength_um / optics.na / optics.pixel_um

    def nfp(self, z_frames: float) -> float:
        return float(self.o.nfp_um + (self.n - 1 - z_frames) * self.z_step_um)

    def depth_um(self, z_frames: float) -> float:
        """Actual depth of a layer that frame ``z_frames`` (nominally) has in focus."""
        from nanoro_optics.psf import apparent_focal_position

        return float(apparent_focal_position(self.nfp(z_frames), **self.kw)[0])

    def kernel(self, depth_um: float, k: int) -> np.ndarray:
        from nanoro_optics.psf import vectorial_psf

        nfp = self.nfp(k)
        reach = abs(depth_um - nfp) * self.px_per_um
        half = int(np.ceil(1.4 * reach + 3.0 * self.airy_px + 3.0))
        sub = 3  # pixel-integrated: 3 x 3 samples per pixel
        side = (2 * half + 1) * sub
        h = vectorial_psf(
            (1, side, side),
            spacing_um=(1.0, self.o.pixel_um / sub),
            nfp_um=nfp,
            z_center_um=depth_um - nfp,
            **self.kw,
        )[0]
        k2 = h.reshape(2 * half + 1, sub, 2 * half + 1, sub).sum(axis=(1, 3))
        return k2 / k2.sum()


def _smooth_matte(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of the region ``signed_distance <= 0`` (1 px ramp)."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def _shapes(
    h: int, w: int, rng: np.random.Generator, count: int, r_lo: float, r_hi: float
) -> list[np.ndarray]:
    """Discs and bars (anti-aliased mattes), one per object."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(r_lo, r_hi)
        if rng.uniform() < 0.5:
            sd = np.hypot(yy - cy, xx - cx) - r
        else:
            ang = rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(ang) + (xx - cx) * np.sin(ang)
            v = -(yy - cy) * np.sin(ang) + (xx - cx) * np.cos(ang)
            sd = np.maximum(np.abs(u) - r, np.abs(v) - r / 3)
        out.append(_smooth_matte(sd))
    return out


def _fibres(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Thin fibres 1 to 3 px wide: arcs of large circles crossing the image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    size = float(max(h, w))
    matte = np.zeros((h, w))
    for _ in range(max(3, (h + w) // 80)):
        rc = rng.uniform(0.7, 3.0) * size
        ang = rng.uniform(0, 2 * np.pi)
        py, px = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w  # a point on the arc
        cy, cx = py + rc * np.sin(ang), px + rc * np.cos(ang)
        width = rng.uniform(1.0, 3.0)
        d = np.abs(np.hypot(yy - cy, xx - cx) - rc)
        matte = np.maximum(matte, _smooth_matte(d - width / 2.0))
    return matte


def _occlusion_layers(
    variant: str, h: int, w: int, n: int, rng: np.random.Generator, white: float, reach: float
) -> list[SceneLayer]:
    """Make the sharp layers of a variant, back to front (colours in DN)."""
    tint = np.array([1.0, 0.93, 0.8])
    side = float(min(h, w))
    count = max(3, h * w // 12000)
    r_lo, r_hi = min(12.0, side / 8), min(40.0, side / 4)
    bright = (0.62 + 0.25 * _texture((h, w), rng, 0.9))[..., None] * tint
    if variant == "dim":
        bg = 0.3 + 0.6 * _ihc((h, w))
        fg = (0.04 + 0.08 * _texture((h, w), rng, 0.9))[..., None] * tint
    else:
        bg = 0.1 + 0.5 * _ihc((h, w))
        fg = bright
    layers = [SceneLayer(0.0, bg * white, np.ones((h, w)))]
    if variant in ("opaque", "dim", "layers3"):
        matte = np.max(_shapes(h, w, rng, count, r_lo, r_hi), axis=0)
    elif variant == "translucent":
        parts = _shapes(h, w, rng, count, r_lo, r_hi)
        matte = np.max([p * rng.uniform(0.55, 0.85) for p in parts], axis=0)
    elif variant == "holes":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        matte = np.zeros((h, w))
        for _ in range(max(2, h * w // 40000)):  # broad plates: rotated rectangles
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            r, ang = rng.uniform(side / 6, side / 3.5), rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(ang) + (xx - cx) * np.sin(ang)
            v = -(yy - cy) * np.sin(ang) + (xx - cx) * np.cos(ang)
            sd = np.maximum(np.abs(u) - r, np.abs(v) - 0.7 * r)
            matte = np.maximum(matte, _smooth_matte(sd))
        holes = np.zeros((h, w))
        solid = np.flatnonzero(matte >= 1.0)  # hole centres on the plates
        for _ in range(max(3, solid.size // 500) if solid.size else 0):
            cy, cx = np.unravel_index(solid[rng.integers(solid.size)], (h, w))
            r = rng.uniform(1.5, max(2.0, 0.8 * reach))
            holes = np.maximum(holes, _smooth_matte(np.hypot(yy - cy, xx - cx) - r))
        matte = matte * (1.0 - holes)
    else:  # fibres
        matte = _fibres(h, w, rng)
    if variant == "layers3":  # a third depth: smaller green objects half way
        mid = np.max(_shapes(h, w, rng, count + 1, r_lo / 2, r_hi / 2), axis=0)
        green = (0.5 + 0.3 * _texture((h, w), rng, 1.2))[..., None] * np.array([0.55, 1.0, 0.6])
        layers.append(SceneLayer(float((n - 1) // 2), green * white, mid))
    layers.append(SceneLayer(float(n - 1), fg * white, matte))
    return layers


def _aperture(family: str, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample the aperture scaled to ``radius_px``: integer offsets ``(M, 2)``, weights.

    The weights (sum 1) are the disc's area per pixel, or the pixel-integrated Gaussian of
    sigma ``radius_px / 2`` to 3 sigma.
    """
    from scipy import special

    if family == "pillbox":
        m = int(np.ceil(radius_px))
        sub = 8
        u = (np.arange((2 * m + 1) * sub) + 0.5) / sub - m - 0.5
        inside = (np.hypot(u[:, None], u[None, :]) <= radius_px).astype(np.float64)
        wts = inside.reshape(2 * m + 1, sub, 2 * m + 1, sub).mean(axis=(1, 3))
    else:
        sigma = radius_px / 2.0
        m = int(np.ceil(3.0 * sigma))
        edges = (np.arange(2 * m + 2) - m - 0.5) / (np.sqrt(2.0) * sigma)
        p = np.diff(special.erf(edges))
        wts = p[:, None] * p[None, :]
    yy, xx = np.nonzero(wts > 0)
    w = wts[yy, xx]
    return np.stack([yy - m, xx - m], axis=1), w / w.sum()


def _rays(
    layers: list[SceneLayer], family: str, radii: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Render one frame ray by ray, and each layer's kernel in it.

    Every aperture sample ``u`` sees each layer shifted by its parallax ``u r`` (``r``
    the layer's signed defocus radius) and composites them front over back along that ray;
    the frame is the weighted mean over the aperture, through the diffraction Gaussian.
    Unlike blurring each layer and compositing the blurs, this keeps which part of the
    background each ray sees past the occluders [1]_ (module references).
    """
    from scipy import ndimage

    big = float(np.max(np.abs(radii)))
    offsets, weights = _aperture(family, big)
    h, w = layers[0].matte.shape
    stacks = [
        np.concatenate([lay.colour * lay.matte[..., None], lay.matte[..., None]], axis=-1).astype(
            np.float32
        )
        for lay in layers
    ]
    shifts = [np.rint(offsets * (r / big)).astype(int) for r in radii]
    out = np.zeros((h, w, 3))
    for j, wt in enumerate(weights):
        acc: np.ndarray | None = None
        for st, sh in zip(stacks, shifts, strict=True):
            sy, sx = int(sh[j, 0]), int(sh[j, 1])
            moved = np.roll(st, (sy, sx), axis=(0, 1)) if (sy or sx) else st
            if acc is None:  # the background: matte 1
                acc = moved[..., :3].copy()
            else:
                acc = moved[..., :3] + (1.0 - moved[..., 3:]) * acc
        assert acc is not None
        out += wt * acc
    out = ndimage.gaussian_filter(out, (DIFFRACTION_PX, DIFFRACTION_PX, 0), mode="wrap")
    kernels = []
    half = int(np.abs(np.concatenate(shifts)).max()) + int(np.ceil(4 * DIFFRACTION_PX)) + 1
    for sh in shifts:
        k = np.zeros((2 * half + 1, 2 * half + 1))
        np.add.at(k, (sh[:, 0] + half, sh[:, 1] + half), weights)
        k = ndimage.gaussian_filter(k, DIFFRACTION_PX, mode="constant", truncate=6.0)
        kernels.append(k / k.sum())
    return out, kernels


def _composite(layers: list[SceneLayer], spectra: list[tuple[Any, Any]], otfs: list[Any]):
    """Front-over-back composite of the layers, each through its OTF (periodic)."""
    shape = layers[0].matte.shape
    acc = None
    for (ca, a), otf in zip(spectra, otfs, strict=True):
        col = np.fft.irfft2(ca * otf[..., None], s=shape, axes=(0, 1))
        if acc is None:  # the background: matte 1
            acc = col
            continue
        a_b = np.fft.irfft2(a * otf, s=shape)
        acc = col + (1.0 - a_b)[..., None] * acc
    assert acc is not None
    return acc


def occlusion_stack(
    shape: tuple[int, int],
    n_frames: int,
    *,
    variant: str = "opaque",
    psf: str = "pillbox",
    bit_depth: int = 8,
    seed: int = 0,
    blur_px_per_frame: float = 1.5,
    breathing: float = 0.0,
    noise: bool = True,
    full_well_e: float = 20000.0,
    read_noise_e: float = 5.0,
    optics: VectorialOptics | None = None,
    render: str = "layered",
) -> SceneStack:
    """Make a layered occlusion focus stack with a choice of defocus PSF, noise and variant.

    A textured background (depth 0, the first frame's focus) lies behind one or two layers
    of occluders (the front one at the last frame's focus), each a sharp colour ``F`` and
    matte ``a``. Frame ``k`` composites the layers front over back, each blurred by its
    defocus PSF ``h`` at that frame: ``I = h*(F a) + (1 - h*a) I_behind`` [1]_ [2]_ (exact in
    geometric optics in the frames where the layer behind is in focus). The PSF family:

    * ``"pillbox"``: the geometric disc of radius ``blur_px_per_frame * |z - k|`` px;
    * ``"gaussian"``: a Gaussian of the disc's second moment (sigma = radius / 2);
    * ``"vectorial"``: the widefield intensity of :func:`nanoro_optics.psf.vectorial_psf`
      for ``optics`` (index mismatch: spherical aberration, asymmetric about focus), with
      the frames ``z_step`` apart nominally (set so that the geometric blur is
      ``blur_px_per_frame`` px per frame) and every layer at the apparent focus of its
      frame, pixel-integrated (3 x 3 samples per pixel);

    the first two through the diffraction Gaussian (sigma ``DIFFRACTION_PX``), each kernel
    normalised to sum 1 (one per distinct defocus; the vectorial one per layer and frame,
    its aberration changing with depth). Variants: ``"opaque"`` bright discs
    and bars; ``"fibres"`` arcs 1 to 3 px wide; ``"holes"`` plates with holes up to the
    blur's size; ``"dim"`` dark occluders over a brighter background (the glow is a
    shadow); ``"translucent"`` occluders of matte 0.55 to 0.85 inside; ``"layers3"`` a
    further layer of smaller objects half way. Then focus breathing (magnification
    ``1 + breathing (2 k / (N - 1) - 1)`` about the centre, the middle frame at 1), photon
    noise (``full_well_e`` electrons at the white level, Poisson) and Gaussian read noise
    (``read_noise_e``), quantised to ``bit_depth`` bits.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``, each 16 to 8192 px.
    n_frames : int
        Number of frames, 2 to 200 (3 or more for ``"layers3"``).
    variant : str, optional
        One of :data:`OCCLUSION_VARIANTS`.
    psf : str, optional
        One of :data:`PSF_FAMILIES`.
    bit_depth : int, optional
        8 (uint8 frames) to 16 (uint16 frames); 12 is a 12-bit camera.
    seed : int, optional
        Seed of the objects, textures and noise (>= 0): same seed, same stack.
    blur_px_per_frame : float, optional
        Geometric defocus radius per frame of defocus (px), 0.1 to 10; the largest radius,
        ``blur_px_per_frame * (n_frames - 1)``, at most ``MAX_VECTORIAL_BLUR_PX`` (64) with
        ``psf="vectorial"`` and ``MAX_RAYS_BLUR_PX`` (40) with ``render="rays"``.
    breathing : float, optional
        Relative magnification change from the middle frame to either end, 0 to 0.2.
    noise : bool, optional
        Add photon and read noise (else the frames are the rounded expectation).
    full_well_e : float, optional
        Electrons at the white level, 10 to 1e7.
    read_noise_e : float, optional
        Read noise (electrons rms), 0 to 1000.
    optics : VectorialOptics, optional
        Optics of the ``"vectorial"`` family (default :class:`VectorialOptics()`); warned
        about and ignored with the other families.
    render : {"layered", "rays"}, optional
        Image formation: ``"layered"`` blurs each layer and composites the blurs (above);
        ``"rays"`` (``"pillbox"`` and ``"gaussian"`` only) composites along every ray of
        the aperture, each layer shifted by its parallax, and averages over the aperture
        (integer shifts, aperture sampled per pixel of the largest blur): geometric optics
        of a layered scene, which the layered formula only approximates in the frames where
        two layers are out of focus (up to about 12 DN at 8 bits next to the occluders).
        Slower: about 0.1 s per frame and aperture sample count / 100 at 512^2.

    Returns
    -------
    SceneStack
        ``kind="occlusion"``, ``frames`` ``(N, H, W, 3)``; ``truth`` every layer at its own
        focus through its in-focus kernel, composited (float64 DN, noise-free, magnification
        1); ``depth`` the depth (frames) of the layer seen in the truth (matte > 0.5);
        ``edges`` the occluders' boundaries; ``band`` and ``band_px`` the halo band;
        ``layers``, ``kernels``, ``magnification`` and ``noise_e`` the ingredients.

    Raises
    ------
    ValueError
        An argument outside its range, an unknown variant or PSF family.
    TypeError
        An argument of the wrong type.

    References
    ----------
    .. [1] S. W. Hasinoff and K. N. Kutulakos, "A layer-based restoration framework for
       variable-aperture photography", Proc. ICCV 2007.
       https://doi.org/10.1109/ICCV.2007.4408964
    .. [2] J. Gu, R. Ramamoorthi, P. Belhumeur and S. Nayar, "Removing image artifacts due
       to dirty camera lenses and thin occluders", ACM Trans. Graph. 28(5), 144 (2009).
       https://doi.org/10.1145/1618452.1618490

    Examples
    --------
    >>> s = occlusion_stack((64, 64), 4, variant="holes", psf="gaussian", bit_depth=12)
    >>> s.frames.shape, s.frames.dtype, s.white_level, bool(s.band.any())
    ((4, 64, 64, 3), dtype('uint16'), 4095, True)
    """
    import warnings

    from scipy import ndimage

    from nanoro_optics._validation import check_bool, check_choice, check_range

    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise ValueError(f"shape must be (rows, cols), got {shape!r}")
    h = check_int(shape[0], "shape[0]", 16, 8192)
    w = check_int(shape[1], "shape[1]", 16, 8192)
    variant = check_choice(variant, "variant", OCCLUSION_VARIANTS)
    family = check_choice(psf, "psf", PSF_FAMILIES)
    n = check_int(n_frames, "n_frames", 3 if variant == "layers3" else 2, 200)
    bits = check_int(bit_depth, "bit_depth", 8, 16)
    seed = check_int(seed, "seed", 0)
    blur = check_range(blur_px_per_frame, "blur_px_per_frame", 0.1, 10.0)
    breath = check_range(breathing, "breathing", 0.0, 0.2)
    noisy = check_bool(noise, "noise")
    well = check_range(full_well_e, "full_well_e", 10.0, 1e7)
    how = check_choice(render, "render", RENDERS)
    if how == "rays" and family == "vectorial":
        raise ValueError(
            "render='rays' needs a geometric PSF family ('pillbox' or 'gaussian'), got "
            "psf='vectorial'"
        )
    reach = blur * (n - 1)  # the largest defocus radius (px)
    for name, limit, applies in (
        ("psf='vectorial'", MAX_VECTORIAL_BLUR_PX, family == "vectorial"),
        ("render='rays'", MAX_RAYS_BLUR_PX, how == "rays"),
    ):
        if applies and reach > limit:
            raise ValueError(
                f"blur_px_per_frame * (n_frames - 1) must be <= {limit:g} px with {name} "
                f"(its cost grows with the square), got {reach:g}"
            )
    read = check_range(read_noise_e, "read_noise_e", 0.0, 1000.0)
    if optics is not None and not isinstance(optics, VectorialOptics):
        raise TypeError(f"optics must be a VectorialOptics, got {type(optics).__name__}")
    if optics is not None and family != "vectorial":
        warnings.warn(f"optics is ignored with psf={family!r}", UserWarning, stacklevel=2)
    white = float(2**bits - 1)
    rng = np.random.default_rng(seed)
    layers = _occlusion_layers(variant, h, w, n, rng, white, reach)

    # one kernel per (layer, frame); geometric families share them by defocus
    kernels: list[tuple[np.ndarray, ...]] = []
    if family == "vectorial":
        vk = _VectorialKernels(optics or VectorialOptics(), n, blur)
        for layer in layers:
            d_um = vk.depth_um(layer.depth)
            kernels.append(tuple(vk.kernel(d_um, k) for k in range(n)))
    else:
        cache: dict[float, np.ndarray] = {}
        for layer in layers:
            row = []
            for k in range(n):
                r = round(blur * abs(layer.depth - k), 9)
                if r not in cache:
                    cache[r] = _geometric_kernel(family, r)
                row.append(cache[r])
            kernels.append(tuple(row))

    spectra = [
        (np.fft.rfft2(lay.colour * lay.matte[..., None], axes=(0, 1)), np.fft.rfft2(lay.matte))
        for lay in layers
    ]

    def otf(kernel: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(_fold(kernel, (h, w)))

    truth = _composite(
        layers, spectra, [otf(kernels[i][int(lay.depth)]) for i, lay in enumerate(layers)]
    )
    mags = 1.0 + breath * (2.0 * np.arange(n) / (n - 1) - 1.0)
    dtype = np.uint8 if bits == 8 else np.uint16
    frames = np.empty((n, h, w, 3), dtype)
    gain = well / white  # electrons per DN
    rows = [list(kr) for kr in kernels]
    for k in range(n):
        radii = np.array([blur * (lay.depth - k) for lay in layers])
        if how == "rays" and np.count_nonzero(radii) >= 2:
            img, ray_kernels = _rays(layers, family, radii)
            for i, kk in enumerate(ray_kernels):
                rows[i][k] = kk
        else:  # with at most one layer out of focus, both formations agree
            img = _composite(layers, spectra, [otf(kr[k]) for kr in kernels])
        if breath:
            from .synthetic import _magnify

            img = _magnify(img, float(mags[k]), order=3)
        if noisy:
            img = rng.poisson(np.maximum(img, 0.0) * gain) + rng.normal(0.0, read, img.shape)
            img = img / gain
        frames[k] = _quantise(img, int(white), dtype)

    # what the truth shows: the front-most layer of matte > 0.5
    depth = np.zeros((h, w))
    for lay in layers[1:]:
        depth = np.where(lay.matte > 0.5, lay.depth, depth)
    # the halo band: behind each occluder, within its largest blur at a layer behind it
    band = np.zeros((h, w), bool)
    band_px = 0.0
    occluded = np.zeros((h, w), bool)
    for i, lay in enumerate(layers[1:], start=1):
        mask = lay.matte > 0.5
        occluded |= mask
        reach = max(_energy_radius(kernels[i][int(b.depth)]) for b in layers[:i])
        band_px = max(band_px, reach)
        if mask.any():
            near = ndimage.distance_transform_edt(~mask) <= reach
            band |= near & ~mask & (depth < lay.depth)
    return SceneStack(
        kind="occlusion",
        frames=frames,
        truth=truth,
        depth=depth.astype(np.float32),
        edges=_edges(occluded),
        white_level=int(white),
        blur_px_per_frame=float(blur),
        band=band,
        band_px=float(band_px),
        psf=family,
        variant=variant,
        layers=tuple(layers),
        kernels=tuple(tuple(r) for r in rows),
        magnification=mags if breath else None,
        noise_e=(well, read) if noisy else (0.0, 0.0),
        render=how,
    )
