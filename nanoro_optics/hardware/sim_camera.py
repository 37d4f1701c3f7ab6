"""A simulated camera that images a synthetic specimen at the stage's current Z.

The specimen is a texture on a height map (optionally with a second, semi-transparent
layer). At each :meth:`SimulatedCamera.snap` the camera reads the stage position and
renders every pixel with the defocus blur of its own distance from focus, then adds shot
and read noise. It knows its ground truth: the all-in-focus image and the height at which
each pixel is in focus, so fusion results can be scored (PSNR, depth error).

Imaging model
-------------
*Defocus.* The incoherent optical transfer function (OTF) of an aberration-free circular
pupil of radius ``NA / lambda0`` with the exact (non-paraxial) scalar defocus phase
``2 pi dz (sqrt((n/lambda0)^2 - f^2) - n/lambda0)`` [1]_ [2]_ is computed for a ladder of
defocus values ``|dz|`` spaced evenly in ``asinh(|dz| / z0)`` (``z0`` half the
wave-optical depth of field ``lambda0 n / NA^2``, so the ladder is fine near focus and
coarse far from it). Each rung is the texture filtered by that OTF; a frame blends, per
pixel, the two rungs that bracket the pixel's ``|z_stage - h(x, y)|`` (linear in the
asinh coordinate). This is the usual layered approximation of a thick specimen: exact
for a flat one, and good where the height varies slowly on the scale of the blur.

*Focus.* A point at height ``h`` is in focus when the stage reads ``h``: stage and height
map share one axis (um, up is positive). With ``n_sample`` set the specimen lies below an
interface at ``interface_um`` in a medium of that index, and a point at depth ``d`` below
the interface is in focus at stage ``interface - d / r``, with ``r`` the focal-shift ratio
``AFP / NFP``: the geometric near-interface ratio
(:func:`nanoro_optics.optics.focal_shift_ratio`) or, with ``focal_shift="psf"``, the wave-
optical apparent focal position (:func:`nanoro_optics.psf.apparent_focal_position`),
inverted by interpolation.

*Focus breathing.* Magnification changes linearly with the stage position,
``m(z) = 1 + breathing_per_um (z - breathing_ref_um)``, applied as a zoom about the image
centre (bilinear).

*Noise.* Expected photo-electrons are ``reflectance x signal_e_per_ms x exposure_ms``;
the camera draws Poisson shot noise and Gaussian read noise (electrons), converts with
``gain_e_per_dn`` and ``offset_dn`` and quantises to ``bit_depth`` bits (values beyond the
ADC range saturate, as a real sensor does).

References
----------
.. [1] J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed., Roberts (2005), ch. 6
   (incoherent OTF as the autocorrelation of the pupil).
.. [2] M. Born and E. Wolf, *Principles of Optics*, 7th ed., Cambridge (1999), sec. 8.8
   (defocused pupil function).
.. [3] I. N. Loginov et al., "Depth-dependent scaling of axial distances in light
   microscopy", Optica 11, 553-568 (2024), doi:10.1364/OPTICA.520595
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optics
from .._validation import (
    INDEX_RANGE,
    WAVELENGTH_RANGE_UM,
    as_float_array,
    check_choice,
    check_finite_real,
    check_int,
    check_positive,
    check_range,
)
from .errors import CameraError
from .mock_stage import SimulatedClock
from .specimen import Specimen

__all__ = ["GroundTruth", "SimulatedCamera", "Specimen", "defocus_otf"]

#: Spacing of the defocus ladder in ``asinh(|dz| / z0)`` (about z0/4 near focus).
LADDER_STEP = 0.25
#: Default camera pixel pitch (um) on the sensor, a common sCMOS value.
DEFAULT_CAMERA_PIXEL_UM = 6.5
#: Object-space pixel sizes (um) the simulation accepts: 0.1 nm to 1 mm.
PIXEL_UM_RANGE = (1e-4, 1e3)
#: Vacuum wavelengths (um) the simulation accepts: 10 nm (soft X-ray) to 100 um (far IR),
#: the optical arguments' range (``_validation.WAVELENGTH_RANGE_UM``).
WAVELENGTH_UM_RANGE = WAVELENGTH_RANGE_UM
#: Largest refractive index accepted (of the medium, or the sample).
MAX_INDEX = INDEX_RANGE[1]
#: Largest defocus (um) :func:`defocus_otf` computes (1 m); beyond it the phase is noise.
MAX_DEFOCUS_UM = 1e6
#: Largest exposure (ms) accepted: about 2.8 hours.
MAX_EXPOSURE_MS = 1e7
#: Largest expected photo-electron count of a pixel (``signal_e_per_ms x exposure_ms``):
#: the Poisson draw and the conversion to DN stay exact in float64 below it.
MAX_ELECTRONS = 1e15
#: Gains (electrons per DN) accepted.
GAIN_E_PER_DN_RANGE = (1e-6, 1e6)
#: Largest read noise (electrons) accepted.
MAX_READ_NOISE_E = 1e6
#: Largest relative magnification change per um of stage travel accepted (10 % per um).
MAX_BREATHING_PER_UM = 0.1
#: Largest grid (pixels) of the supersampled PSF behind one OTF (256 MiB of complex128).
MAX_OTF_PIXELS = 1 << 24


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the simulated camera knows about its specimen.

    Attributes
    ----------
    image : numpy.ndarray
        The expected (noise-free) all-in-focus frame in camera units (DN, float64): every
        pixel rendered at its own focus, at the reference magnification.
    reflectance : numpy.ndarray
        The same in reflectance units, ``(image - offset_dn) / white_dn``.
    white_dn : float
        Expected DN of a reflectance-1 pixel above the offset (the scale for PSNR).
    focus_height_um : numpy.ndarray
        Stage position at which each pixel is sharpest (um); equals ``height_um`` without
        an index mismatch.
    height_um : numpy.ndarray
        Physical height of the surface (um).
    """

    image: np.ndarray
    reflectance: np.ndarray
    white_dn: float
    focus_height_um: np.ndarray
    height_um: np.ndarray


# ------------------------------------------------------------------------------ optics


def defocus_otf(
    shape: tuple[int, int],
    *,
    pixel_um: float,
    na: float,
    n: float,
    wavelength_um: float,
    dz_um: float,
) -> np.ndarray:
    """Incoherent OTF (rfft layout) of a circular pupil defocused by ``dz_um``.

    The pupil ``P(f) = circ(|f| <= NA/lambda0) exp(i 2 pi dz (sqrt((n/lambda0)^2 - |f|^2) -
    n/lambda0))`` is sampled on the image's frequency grid; the PSF is ``|IFFT(P)|^2``,
    normalised to unit sum, and the OTF its FFT, so ``OTF(0) = 1``. When the intensity
    bandwidth ``2 NA / lambda0`` exceeds the pixel Nyquist frequency the PSF is computed on
    a finer grid first, so the OTF is free of aliasing.

    Parameters
    ----------
    shape : (int, int)
        Image rows and columns.
    pixel_um : float, keyword-only
        Object-space pixel size (um).
    na, n : float, keyword-only
        Numerical aperture and refractive index of the medium (``na <= n``).
    wavelength_um : float, keyword-only
        Vacuum wavelength (um).
    dz_um : float, keyword-only
        Defocus (um).

    Returns
    -------
    numpy.ndarray
        Complex array of shape ``(rows, cols // 2 + 1)``.

    Raises
    ------
    ValueError
        An argument outside its range (:data:`PIXEL_UM_RANGE`,
        :data:`WAVELENGTH_UM_RANGE`, :data:`MAX_INDEX`, :data:`MAX_DEFOCUS_UM`), ``na > n``,
        or a pixel so coarse for the bandwidth that the supersampled PSF would exceed
        :data:`MAX_OTF_PIXELS`.

    References
    ----------
    .. [1] J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed. (2005), sec. 6.3-6.4.
    """
    rows, cols = shape
    p = check_range(pixel_um, "pixel_um", *PIXEL_UM_RANGE)
    lam = check_range(wavelength_um, "wavelength_um", *WAVELENGTH_UM_RANGE)
    na_ = check_positive(na, "na")
    n_ = check_range(n, "n", 0.0, MAX_INDEX, lo_inclusive=False)
    if na_ > n_:
        raise ValueError(f"na must be <= n, got na={na_!r} > n={n_!r}")
    dz = check_range(dz_um, "dz_um", -MAX_DEFOCUS_UM, MAX_DEFOCUS_UM)
    up = _psf_supersampling((rows, cols), pixel_um=p, na=na_, wavelength_um=lam)
    R, C = rows * up, cols * up
    fy = np.fft.fftfreq(R, d=p / up)[:, None]
    fx = np.fft.fftfreq(C, d=p / up)[None, :]
    f2 = fy**2 + fx**2
    inside = f2 <= (na_ / lam) ** 2
    kz = np.sqrt(np.maximum((n_ / lam) ** 2 - f2, 0.0)) - n_ / lam
    pupil = np.where(inside, np.exp(2j * np.pi * dz * kz), 0.0)
    amp = np.fft.ifft2(pupil)
    psf = amp.real**2 + amp.imag**2
    otf = np.fft.rfft2(psf)
    otf /= otf[0, 0]
    if up == 1:
        return otf
    # keep the frequencies of the original grid (indices k mod R along rows)
    ky = np.fft.fftfreq(rows, d=1.0 / rows).astype(int) % R
    kx = np.arange(cols // 2 + 1)
    return otf[np.ix_(ky, kx)]


def _psf_supersampling(
    shape: tuple[int, int], *, pixel_um: float, na: float, wavelength_um: float
) -> int:
    """Return the PSF grid's supersampling factor; ValueError when the grid is too large."""
    nyquist = 0.5 / pixel_um
    up = max(1, math.ceil(2.0 * na / wavelength_um / nyquist))
    if shape[0] * shape[1] * up * up > MAX_OTF_PIXELS:
        raise ValueError(
            f"pixel_um={pixel_um!r} samples the intensity bandwidth 2 na / wavelength_um = "
            f"{2.0 * na / wavelength_um:.4g} /um {up} times too coarsely: the supersampled "
            f"PSF of a {shape[0]} x {shape[1]} image would exceed {MAX_OTF_PIXELS} pixels; "
            "use a finer pixel_um or a smaller image"
        )
    return up


# ------------------------------------------------------------------------------ camera


class SimulatedCamera:
    """A camera imaging a :class:`Specimen` at the Z of a stage (the ``Camera`` protocol).

    Parameters
    ----------
    stage : object with ``get_position_um()``
        The focus drive; its position (noise and drift included) is read at each snap.
    specimen : Specimen, optional
        What to image; default ``Specimen.synthetic()`` (256 x 256, 15 um relief).
    objective : Objective or str, keyword-only
        The objective (or a key of :data:`nanoro_optics.optics.OBJECTIVES`); default the
        40x/0.65 "Nikon MRP70401".
    pixel_um : float, keyword-only
        Object-space pixel size (um); default ``6.5 um / magnification``.
    wavelength_um : float, keyword-only
        Vacuum wavelength (um); default 0.70, as the depth-of-field defaults.
    exposure_ms : float, keyword-only
        Initial exposure (> 0).
    signal_e_per_ms : float, keyword-only
        Photo-electrons per ms for a reflectance-1 pixel.
    read_noise_e : float, keyword-only
        Read-noise standard deviation (electrons, >= 0).
    gain_e_per_dn : float, keyword-only
        Electrons per digital number (> 0).
    offset_dn : float, keyword-only
        Black level (DN, >= 0).
    bit_depth : int, keyword-only
        ADC bits, 8..16; frames are ``uint8`` for 8 bits, else ``uint16``.
    noise : bool, keyword-only
        Add shot and read noise (default True).
    n_sample : float, keyword-only
        Refractive index of a medium covering the specimen below ``interface_um``; None
        (default) means no index mismatch.
    interface_um : float, keyword-only
        Height of the interface; default the specimen's top.
    focal_shift : {"ratio", "psf"}, keyword-only
        Focal-shift model with ``n_sample``: the geometric ratio or the vectorial PSF.
    breathing_per_um : float, keyword-only
        Relative magnification change per um of stage travel (focus breathing).
    breathing_ref_um : float, keyword-only
        Stage position of the reference magnification; default the specimen's bottom.
    fail_on_snap : int, keyword-only
        The k-th snap (1-based) raises :class:`~nanoro_optics.hardware.errors.CameraError`.
    seed : int, keyword-only
        Seed of the noise; the same snaps at the same positions give the same frames.
    clock : SimulatedClock, keyword-only
        Advanced by each exposure; default the stage's ``clock`` if it has one.

    Raises
    ------
    ValueError
        An argument outside the range the simulation computes exactly (named with its
        limit): :data:`PIXEL_UM_RANGE`, :data:`WAVELENGTH_UM_RANGE`,
        :data:`MAX_EXPOSURE_MS`, :data:`MAX_ELECTRONS` (``signal_e_per_ms x
        exposure_ms``), :data:`GAIN_E_PER_DN_RANGE`, :data:`MAX_READ_NOISE_E`, an offset
        above the ADC's full scale, ``n_sample`` outside ``[1, MAX_INDEX]``,
        :data:`MAX_BREATHING_PER_UM`, or a pixel too coarse for the objective's bandwidth
        (:data:`MAX_OTF_PIXELS`).

    Examples
    --------
    >>> from nanoro_optics.hardware import MockZStage
    >>> spec = Specimen.synthetic((32, 32), relief_um=4.0)
    >>> cam = SimulatedCamera(MockZStage(position_um=2.0), spec)
    >>> frame = cam.snap()
    >>> frame.shape, frame.dtype.name
    ((32, 32), 'uint16')
    """

    def __init__(
        self,
        stage: Any,
        specimen: Specimen | None = None,
        *,
        objective: optics.Objective | str = "Nikon MRP70401",
        pixel_um: float | None = None,
        wavelength_um: float = optics.DEFAULT_WAVELENGTH_UM,
        exposure_ms: float = 10.0,
        signal_e_per_ms: float = 2000.0,
        read_noise_e: float = 1.6,
        gain_e_per_dn: float = 0.5,
        offset_dn: float = 100.0,
        bit_depth: int = 16,
        noise: bool = True,
        n_sample: float | None = None,
        interface_um: float | None = None,
        focal_shift: str = "ratio",
        breathing_per_um: float = 0.0,
        breathing_ref_um: float | None = None,
        fail_on_snap: int | None = None,
        seed: int = 0,
        clock: SimulatedClock | None = None,
    ) -> None:
        if not callable(getattr(stage, "get_position_um", None)):
            raise TypeError(f"stage must have get_position_um(), got {type(stage).__name__}")
        self.stage = stage
        if specimen is None:
            specimen = Specimen.synthetic()
        if not isinstance(specimen, Specimen):
            raise TypeError(f"specimen must be a Specimen, got {type(specimen).__name__}")
        self.specimen = specimen
        if isinstance(objective, str):
            if objective not in optics.OBJECTIVES:
                raise ValueError(
                    f"objective must be one of {sorted(optics.OBJECTIVES)}, got {objective!r}"
                )
            objective = optics.OBJECTIVES[objective]
        if not isinstance(objective, optics.Objective):
            raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
        self.objective = objective
        self.pixel_um = check_range(
            DEFAULT_CAMERA_PIXEL_UM / objective.magnification if pixel_um is None else pixel_um,
            "pixel_um",
            *PIXEL_UM_RANGE,
        )
        self.wavelength_um = check_range(wavelength_um, "wavelength_um", *WAVELENGTH_UM_RANGE)
        self.signal_e_per_ms = check_range(
            signal_e_per_ms, "signal_e_per_ms", 0.0, MAX_ELECTRONS, lo_inclusive=False
        )
        self._exposure_ms = self._check_exposure(exposure_ms, "exposure_ms")
        self.read_noise_e = check_range(read_noise_e, "read_noise_e", 0.0, MAX_READ_NOISE_E)
        self.gain_e_per_dn = check_range(gain_e_per_dn, "gain_e_per_dn", *GAIN_E_PER_DN_RANGE)
        self.bit_depth = check_int(bit_depth, "bit_depth", 8, 16)
        self.offset_dn = check_range(offset_dn, "offset_dn", 0.0, float((1 << self.bit_depth) - 1))
        if not isinstance(noise, bool):
            raise TypeError(f"noise must be a bool, got {noise!r}")
        self.noise = noise
        self.breathing_per_um = check_range(
            breathing_per_um, "breathing_per_um", -MAX_BREATHING_PER_UM, MAX_BREATHING_PER_UM
        )
        self.breathing_ref_um = (
            specimen.bottom_um
            if breathing_ref_um is None
            else check_finite_real(breathing_ref_um, "breathing_ref_um")
        )
        self.fail_on_snap = (
            None if fail_on_snap is None else check_int(fail_on_snap, "fail_on_snap", 1)
        )
        check_int(seed, "seed", 0)
        self._rng = np.random.default_rng(seed)
        if clock is None:
            clock = getattr(stage, "clock", None)
        if clock is not None and not isinstance(clock, SimulatedClock):
            raise TypeError(f"clock must be a SimulatedClock, got {type(clock).__name__}")
        self.clock = clock
        self.snap_count = 0

        # focus heights, with the optional index-mismatch focal shift
        focal_shift = check_choice(focal_shift, "focal_shift", ("ratio", "psf"))
        self.n_sample = (
            None if n_sample is None else check_range(n_sample, "n_sample", 1.0, MAX_INDEX)
        )
        self.interface_um = (
            specimen.top_um
            if interface_um is None
            else check_finite_real(interface_um, "interface_um")
        )
        self._focus_h = self._focus_heights(specimen.height_um, focal_shift)
        self._focus_layer = (
            None
            if specimen.layer_height_um is None
            else float(self._focus_heights(np.array([specimen.layer_height_um]), focal_shift)[0])
        )

        # defocus ladder (filled lazily)
        na, n = objective.na, objective.n_immersion
        rows, cols = specimen.shape[:2]
        _psf_supersampling(
            (rows, cols), pixel_um=self.pixel_um, na=na, wavelength_um=self.wavelength_um
        )
        self._z0_um = 0.5 * float(
            optics.wave_optical_depth(na, wavelength_um=self.wavelength_um, n=n)
        )
        extent_um = self.pixel_um * max(specimen.shape[:2])
        tan_a = math.tan(math.asin(min(na / n, 0.999999)))
        #: beyond this defocus the blur spot is wider than the image: the last rung is used
        self.max_defocus_um = max(extent_um / tan_a, 4 * self._z0_um)
        self._k_max = math.ceil(math.asinh(self.max_defocus_um / self._z0_um) / LADDER_STEP)
        self._tex_f = self._spectrum(specimen.texture)
        self._rungs: dict[int, np.ndarray] = {}
        if specimen.layer_texture is not None:
            assert specimen.layer_alpha is not None
            alpha = specimen.layer_alpha
            a3 = alpha[..., None] if specimen.texture.ndim == 3 else alpha
            self._layer_f = self._spectrum(a3 * specimen.layer_texture)
            self._trans_f = self._spectrum(1.0 - alpha)
            self._layer_rungs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- protocol -------------------------------------------------------------------------
    @property
    def exposure_ms(self) -> float:
        """Current exposure time in ms."""
        return self._exposure_ms

    def set_exposure_ms(self, ms: float) -> None:
        """Set the exposure time in ms (> 0, see :meth:`_check_exposure`)."""
        self._exposure_ms = self._check_exposure(ms, "ms")

    def _check_exposure(self, value: Any, name: str) -> float:
        """Return a valid exposure: > 0, <= MAX_EXPOSURE_MS, signal within MAX_ELECTRONS."""
        ms = check_range(value, name, 0.0, MAX_EXPOSURE_MS, lo_inclusive=False)
        if ms * self.signal_e_per_ms > MAX_ELECTRONS:
            raise ValueError(
                f"{name}={ms!r} ms at signal_e_per_ms={self.signal_e_per_ms!r} gives "
                f"{ms * self.signal_e_per_ms:.4g} electrons a pixel, above MAX_ELECTRONS="
                f"{MAX_ELECTRONS:g}"
            )
        return ms

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        """Expose one frame at the stage's current position.

        Raises
        ------
        CameraError
            On the snap chosen by ``fail_on_snap``, or if the exposure is longer than
            ``timeout_s``.
        """
        if timeout_s is not None:
            check_positive(timeout_s, "timeout_s", allow_zero=True)
        self.snap_count += 1
        if self.fail_on_snap == self.snap_count:
            raise CameraError(f"injected camera fault on snap {self.snap_count}")
        if timeout_s is not None and self._exposure_ms / 1000.0 > timeout_s:
            raise CameraError(
                f"exposure {self._exposure_ms!r} ms is longer than timeout_s={timeout_s!r} s"
            )
        z = float(self.stage.get_position_um())
        expected = self.render(z)
        if self.clock is not None:
            self.clock.advance(self._exposure_ms / 1000.0)
        return self._digitise(expected)

    # -- rendering ------------------------------------------------------------------------
    @property
    def white_dn(self) -> float:
        """Expected DN (above the offset) of a reflectance-1 pixel at this exposure."""
        return self.signal_e_per_ms * self._exposure_ms / self.gain_e_per_dn

    def render(self, z_um: float) -> np.ndarray:
        """Noise-free reflectance image (float64, [0, 1]) with the stage at ``z_um``."""
        z = check_finite_real(z_um, "z_um")
        img = self._blend(self._tex_rungs, np.abs(z - self._focus_h))
        if self._focus_layer is not None:
            lay, trans = self._layer_at(abs(z - self._focus_layer))
            img = lay + (trans[..., None] if img.ndim == 3 else trans) * img
        if self.breathing_per_um != 0.0:
            img = self._zoom(img, 1.0 + self.breathing_per_um * (z - self.breathing_ref_um))
        return img

    def ground_truth(self) -> GroundTruth:
        """Return the all-in-focus expectation and the focus heights (:class:`GroundTruth`)."""
        sharp = self._rung(0)
        if self._focus_layer is not None:
            lay, trans = self._layer_rung(0)
            sharp = lay + (trans[..., None] if sharp.ndim == 3 else trans) * sharp
        white = self.white_dn
        return GroundTruth(
            image=self.offset_dn + white * sharp,
            reflectance=sharp,
            white_dn=white,
            focus_height_um=self._focus_h.copy(),
            height_um=self.specimen.height_um.copy(),
        )

    def frame_to_reflectance(self, frame: np.ndarray) -> np.ndarray:
        """Convert a frame (or a fused image) in DN to reflectance units (finite values)."""
        dn = as_float_array(frame, "frame")
        return (dn - self.offset_dn) / self.white_dn

    # -- internals ------------------------------------------------------------------------
    def _focus_heights(self, h: np.ndarray, model: str) -> np.ndarray:
        if self.n_sample is None:
            return np.array(h, dtype=np.float64)
        obj = self.objective
        depth = np.maximum(self.interface_um - h, 0.0)
        if model == "ratio":
            r = float(
                optics.focal_shift_ratio(
                    obj.na, n_immersion=obj.n_immersion, n_sample=self.n_sample
                )
            )
            nfp = depth / r
        else:
            from ..psf import apparent_focal_position

            d_max = float(depth.max())
            if d_max == 0.0:
                nfp = depth
            else:
                r0 = float(
                    optics.focal_shift_ratio(
                        obj.na, n_immersion=obj.n_immersion, n_sample=self.n_sample
                    )
                )
                grid = np.linspace(0.0, 1.5 * d_max / min(r0, 1.0) + 1.0, 48)
                afp = np.asarray(
                    apparent_focal_position(
                        grid,
                        na=obj.na,
                        n_immersion=obj.n_immersion,
                        n_sample=self.n_sample,
                        wavelength_um=self.wavelength_um,
                    )[0],
                    dtype=np.float64,
                )
                afp = np.maximum.accumulate(afp)  # monotone for the inversion
                nfp = np.interp(depth, afp, grid)
        return np.where(h < self.interface_um, self.interface_um - nfp, h)

    def _spectrum(self, img: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(img, axes=(0, 1))

    def _otf(self, k: int) -> np.ndarray:
        dz = self._z0_um * math.sinh(k * LADDER_STEP)
        obj = self.objective
        rows, cols = self.specimen.shape[:2]
        return defocus_otf(
            (rows, cols),
            pixel_um=self.pixel_um,
            na=obj.na,
            n=obj.n_immersion,
            wavelength_um=self.wavelength_um,
            dz_um=dz,
        )

    def _filter(self, spec: np.ndarray, otf: np.ndarray) -> np.ndarray:
        o = otf[..., None] if spec.ndim == 3 else otf
        return np.fft.irfft2(spec * o, s=self.specimen.shape[:2], axes=(0, 1))

    def _rung(self, k: int) -> np.ndarray:
        k = min(k, self._k_max)
        if k not in self._rungs:
            self._rungs[k] = self._filter(self._tex_f, self._otf(k)).astype(np.float32)
        return self._rungs[k]

    def _tex_rungs(self, k: int) -> np.ndarray:
        return self._rung(k)

    def _layer_rung(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._k_max)
        if k not in self._layer_rungs:
            otf = self._otf(k)
            self._layer_rungs[k] = (
                self._filter(self._layer_f, otf),
                self._filter(self._trans_f, otf),
            )
        return self._layer_rungs[k]

    def _layer_at(self, dz: float) -> tuple[np.ndarray, np.ndarray]:
        u = math.asinh(dz / self._z0_um) / LADDER_STEP
        k = min(int(u), self._k_max)
        w = 0.0 if k >= self._k_max else u - k
        a0, t0 = self._layer_rung(k)
        if w == 0.0:
            return a0, t0
        a1, t1 = self._layer_rung(k + 1)
        return (1 - w) * a0 + w * a1, (1 - w) * t0 + w * t1

    def _blend(self, rung: Any, dz: np.ndarray) -> np.ndarray:
        u = np.arcsinh(dz / self._z0_um) / LADDER_STEP
        k = np.minimum(np.floor(u).astype(np.intp), self._k_max)
        w = np.where(k >= self._k_max, 0.0, u - k)
        out = np.zeros(self.specimen.shape, dtype=np.float64)
        colour = out.ndim == 3
        for kk in np.unique(k):
            sel = k == kk
            ww = w[sel]
            lo = rung(int(kk))[sel]
            hi = rung(int(kk) + 1)[sel]
            if colour:
                ww = ww[:, None]
            out[sel] = (1.0 - ww) * lo + ww * hi
        return out

    def _zoom(self, img: np.ndarray, m: float) -> np.ndarray:
        from scipy import ndimage

        if not m > 0:
            raise CameraError(f"focus breathing gives a magnification {m!r} <= 0")
        rows, cols = img.shape[:2]
        cy, cx = (rows - 1) / 2.0, (cols - 1) / 2.0
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
        coords = [cy + (yy - cy) / m, cx + (xx - cx) / m]
        if img.ndim == 2:
            return ndimage.map_coordinates(img, coords, order=1, mode="reflect")
        return np.stack(
            [
                ndimage.map_coordinates(img[..., c], coords, order=1, mode="reflect")
                for c in range(img.shape[2])
            ],
            axis=-1,
        )

    def _digitise(self, reflectance: np.ndarray) -> np.ndarray:
        electrons = np.maximum(reflectance, 0.0) * self.signal_e_per_ms * self._exposure_ms
        if self.noise:
            electrons = self._rng.poisson(electrons).astype(np.float64)
            if self.read_noise_e > 0:
                electrons += self._rng.normal(0.0, self.read_noise_e, size=electrons.shape)
        dn = np.rint(electrons / self.gain_e_per_dn + self.offset_dn)
        full = (1 << self.bit_depth) - 1
        dtype = np.uint8 if self.bit_depth == 8 else np.uint16
        return np.clip(dn, 0, full).astype(dtype)  # the ADC saturates

    def __repr__(self) -> str:
        return (
            f"SimulatedCamera(objective={self.objective.name!r}, shape={self.specimen.shape}, "
            f"pixel_um={self.pixel_um:.4g}, exposure_ms={self._exposure_ms!r})"
        )
