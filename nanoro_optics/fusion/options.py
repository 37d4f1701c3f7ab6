"""Every setting of a fusion in one frozen value: :class:`FusionOptions`.

One object carries the rule (sharpness, windows, levels), the alignment, what is known of
the data (bit depth, noise, guide channel), the crop and the depth map's settings (fill,
minimum confidence, z step or positions, index-mismatch correction). It is validated once,
when it is made (:meth:`FusionOptions.replace` makes a new, validated one), and travels as
JSON (:meth:`FusionOptions.to_json`, :meth:`FusionOptions.from_json`) into the files'
records. :func:`~nanoro_optics.fusion.fuse_stack`, :class:`~nanoro_optics.fusion.StackFuser`,
the file pipeline (:mod:`nanoro_optics.pipeline`), the CLI, the dask batch, the live MDA
handler and the demo all take one; the CLI's flags and a GUI's tooltips take their help text
from :data:`HELP` (:meth:`FusionOptions.help`).

The z step's sign
-----------------
z positions are stage z in um, growing upwards (away from the sample), the convention of
:mod:`nanoro_optics.acquire` and :class:`~nanoro_optics.psf.IndexMismatch`. With
``z_step_um`` frame ``k`` lies at ``k * z_step_um`` from the first frame: a positive step is
a scan that moves up, a negative one a scan that moves down (as
:func:`~nanoro_optics.acquire.run_zscan` scans, top to bottom). The depth map is then in the
same coordinates: the z (um, relative to the first frame) at which each pixel is in focus.
A step of 0, NaN or infinity is refused.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nanoro_optics._validation import (
    LENGTH_MAX_UM,
    as_float_array,
    check_bool,
    check_choice,
    check_int,
)

from .rule import FusionRule

if TYPE_CHECKING:
    from nanoro_optics.psf import IndexMismatch

__all__ = [
    "HALO_MODES",
    "HELP",
    "OPTIONS_FORMAT",
    "REFERENCES",
    "UNSET",
    "FusionOptions",
    "Unset",
    "field_values",
    "merge",
]

#: ``"format"`` of :meth:`FusionOptions.to_json`
OPTIONS_FORMAT = "nanoro_optics.FusionOptions/1"
#: the frames ``reference`` may name
REFERENCES = ("first", "middle")
#: the values of ``halo`` (:mod:`nanoro_optics.fusion.halo`)
HALO_MODES = ("off", "auto")

#: One help text per field (the CLI's ``--help``, a GUI's tooltips): :meth:`FusionOptions.help`.
HELP: dict[str, str] = {
    "sharpness": "exponent N of the soft selection weights (a / a_max)^N, 1 to 64 (default 4; "
    "larger is closer to a hard pick); None (CLI: 'hard') is the hard maximum-activity rule",
    "window_px": "side of the activity window in px at the two finest levels, odd, 1 to 15 "
    "(default 5)",
    "coarse_window_px": "the same from the third level on (default: the window); 1 measures "
    "each coefficient's own energy there, which keeps sharp occluding edges from spreading "
    "onto the background",
    "inherit": "weight of the finer level's activity in a level's activity, 0 to 100 "
    "(default 1; the guard against halos next to sharp edges)",
    "focus_levels": "number of the finest band-pass levels whose own energy measures focus, "
    "1 to 32 (default 3: scales up to about 8 px)",
    "noise_floor": "activity floor in units of the noise energy, > 0 (default 0.25); larger "
    "averages more of the flat, noise-only regions",
    "levels": "pyramid levels including the low-pass residual, 1 to 32 (default: halve until "
    "the short side is about 8 px)",
    "align": "align every frame onto the reference frame (the first of the stack, or the "
    "middle one: reference) before fusing (focus breathing: scale; drift: translation); the "
    "result has that frame's pixel grid",
    "reference": "with alignment, the frame whose pixel grid the result keeps: 'first' "
    "(default) or 'middle' (half the largest warp; the frames are read twice)",
    "crop": "with alignment, crop the result to the area every frame covers",
    "bit_depth": "bits the camera records, 1 to 32 (e.g. 12 for 12-bit data in 16-bit "
    "files); a frame with a larger value is refused",
    "noise_dn": "noise standard deviation in DN, one or one per channel, > 0 (default: "
    "estimated from the first two frames); activity is measured in units of the noise",
    "guide_channel": "measure sharpness on this channel alone (0 to 15) and blend every "
    "channel with its weights; the depth map is the guide's",
    "fill_depth": "fill the depth map where no frame is confidently in focus from the "
    "confident pixels around (default); False leaves NaN there (the confidence map marks "
    "those pixels either way)",
    "min_confidence": "depth confidence, 0 to 1, below which a pixel's own depth is not used "
    "(default 0.6)",
    "z_step_um": "focus step between frames in um, finite and not 0: frame k at k * step "
    "from the first frame, z growing upwards (negative: a scan moving down); the depth map "
    "is then in um",
    "z_um": "z position of every frame in um (strictly monotonic, z growing upwards); the "
    "depth map is then in um",
    "index_mismatch": "correct the depth map (in um) for the focal shift at an interface of "
    "mismatched refractive index: it then holds the actual height in the sample "
    "(nanoro_optics.psf.IndexMismatch)",
    "halo": "halo correction next to occluding edges: 'auto' re-reads the frames near sharp "
    "depth steps, fits a layered model (occluder's colour and matte, defocus PSF) and "
    "replaces the pyramid's pixels where re-rendering the unused frames agrees to within the "
    "noise, the only pixels that may then leave the frames' per-pixel range (the result "
    "reports the map); 'off' (default) keeps the pyramid fusion everywhere",
    "halo_blur_px": "the optics' defocus blur for the halo correction: radius in px of a "
    "point's blur disc one frame from its focus (nanoro_optics.optics.defocus_blur_radius "
    "of the z step over the pixel size), > 0; the correction then looks for its PSF within "
    "a factor of 2 of it (default: fitted from the stack alone)",
}


def _check_real(value: Any, name: str, lo: float, hi: float, *, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    low_bad = v <= lo if open_lo else v < lo
    if not math.isfinite(v) or low_bad or v > hi:
        low = f"> {lo:g}" if open_lo else f">= {lo:g}"
        raise ValueError(f"{name} must be finite, {low} and <= {hi:g}, got {value!r}")
    return v


def _positions(value: Any, name: str) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(value).__name__}")
    arr = as_float_array(value, name)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    return tuple(float(v) for v in arr)


#: smallest step between z positions (um): 1 pm, and 4 float32 steps of the largest |z|
#: (the depth map is float32: finer steps, or |z| beyond 1e9 um, gave 0 or inf there)
_Z_STEP_MIN_UM = 1e-6


def check_monotonic(z: np.ndarray, name: str) -> None:
    """Refuse z positions the depth map cannot hold or that are not strictly monotonic.

    Positions must lie within ``+-LENGTH_MAX_UM`` (the float32 depth map holds them), steps
    must be resolvable in float32, and the frames must be in focus order.
    """
    big = np.abs(z) > LENGTH_MAX_UM
    if np.any(big):
        raise ValueError(
            f"{name} must be within +-{LENGTH_MAX_UM!r} um, got {float(z[np.argmax(big)])!r}"
        )
    if z.size < 2:
        return
    d = np.diff(z)
    least = max(_Z_STEP_MIN_UM, 4 * float(np.finfo(np.float32).eps) * float(np.max(np.abs(z))))
    if np.any((d != 0) & (np.abs(d) < least)):
        k = int(np.argmax((d != 0) & (np.abs(d) < least))) + 1
        raise ValueError(
            f"{name} steps must be at least {least:.3g} um (the depth map is float32), but "
            f"position {k} ({float(z[k])!r}) is {abs(float(d[k - 1])):.3g} um from the one before"
        )
    if not (np.all(d > 0) or np.all(d < 0)):
        bad = int(np.argmax(d <= 0) if d[0] > 0 else np.argmax(d >= 0)) + 1
        raise ValueError(
            f"{name} must be strictly monotonic (frames in focus order), but position {bad} "
            f"({z[bad]!r}) does not continue from {z[bad - 1]!r}"
        )


#: the fields that are :class:`~nanoro_optics.fusion.FusionRule`'s (validated by it)
_RULE_FIELDS = (
    "sharpness",
    "window_px",
    "coarse_window_px",
    "inherit",
    "min_confidence",
    "focus_levels",
    "noise_floor",
    "fill_depth",
)


@dataclass(frozen=True)
class FusionOptions:
    """Every setting of a focus fusion, validated once (see :data:`HELP` for each field).

    Parameters
    ----------
    sharpness : int or None
        Soft-rule exponent, 1 to 64; None: the hard maximum-activity rule.
    window_px, coarse_window_px : int
        Activity windows (odd, 1 to 15 px); ``coarse_window_px`` None: ``window_px``.
    inherit : float
        Weight of the finer level's activity, 0 to 100.
    focus_levels : int
        Finest levels whose own energy measures focus, 1 to 32.
    noise_floor : float
        Activity floor in noise energies, > 0 (at most 1e6).
    levels : int or None
        Pyramid levels, 1 to 32 (None: from the frame size).
    align : bool
        Register every frame onto the reference frame.
    reference : {"first", "middle"}
        With ``align``: the frame whose grid the result takes.
    crop : bool
        With ``align``: crop to the area every frame covers.
    bit_depth : int or None
        Bits the camera records, 1 to 32.
    noise_dn : float, tuple of float or None
        Noise standard deviation (DN), one or one per channel, > 0.
    guide_channel : int or None
        Channel (0 to 15) whose sharpness selects for every channel.
    fill_depth : bool
        Fill the depth map where the confidence is below ``min_confidence``.
    min_confidence : float
        0 to 1.
    z_step_um : float or None
        Focus step (um), finite, not 0; negative for a scan moving down (see the module
        notes). Exclusive with ``z_um``.
    z_um : tuple of float or None
        z of every frame (um), finite, strictly monotonic.
    index_mismatch : nanoro_optics.psf.IndexMismatch or None
        Depth correction for an index-mismatched interface; needs z positions (``z_step_um``
        or ``z_um`` here, or ``z_um`` given to :meth:`StackFuser.add`).
    halo : {"off", "auto"}
        Halo correction next to occluding edges (:mod:`nanoro_optics.fusion.halo`):
        ``"auto"`` applies it where its consistency check holds (:func:`fuse_stack` on an
        array, and the file pipeline, which can read the frames again; a streaming
        :class:`StackFuser` sees each frame once and does not); ``"off"`` never.
    halo_blur_px : float or None
        The optics as a prior for the halo correction's defocus PSF: the radius (px) of a
        point's geometric blur disc one frame from its focus,
        ``optics.defocus_blur_radius(z_step_um, na=NA, n=n) / pixel_size_um``. The PSF is
        then searched within a factor of 2 of it (aberrations, an index mismatch and the
        step's own error leave it that uncertain); None fits it from the stack alone.

    Raises
    ------
    ValueError, TypeError
        Naming the field, its value and the limit.

    Examples
    --------
    >>> opts = FusionOptions(levels=5, z_step_um=-2.0)
    >>> opts.replace(sharpness=None).sharpness is None
    True
    >>> FusionOptions.from_json(opts.to_json()) == opts
    True
    >>> FusionOptions(window_px=4)
    Traceback (most recent call last):
    ...
    ValueError: window_px must be odd, got 4
    """

    sharpness: int | None = 4
    window_px: int = 5
    coarse_window_px: int | None = None
    inherit: float = 1.0
    focus_levels: int = 3
    noise_floor: float = 0.25
    levels: int | None = None
    align: bool = False
    reference: str = "first"
    crop: bool = False
    bit_depth: int | None = None
    noise_dn: float | tuple[float, ...] | None = None
    guide_channel: int | None = None
    fill_depth: bool = True
    min_confidence: float = 0.6
    z_step_um: float | None = None
    z_um: tuple[float, ...] | None = None
    index_mismatch: IndexMismatch | None = None
    halo: str = "off"
    halo_blur_px: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        rule = self.rule  # the rule's own checks name the field, value and limit
        for name in _RULE_FIELDS:
            set_(self, name, getattr(rule, name))
        if self.levels is not None:
            set_(self, "levels", check_int(self.levels, "levels", 1, 32))
        set_(self, "align", check_bool(self.align, "align"))
        check_choice(self.reference, "reference", REFERENCES)
        set_(self, "crop", check_bool(self.crop, "crop"))
        if not isinstance(self.halo, str):
            raise TypeError(f"halo must be a str, one of {HALO_MODES!r}, got {self.halo!r}")
        check_choice(self.halo, "halo", HALO_MODES)
        if self.halo_blur_px is not None:
            blur = _check_real(self.halo_blur_px, "halo_blur_px", 0.0, 1e3, open_lo=True)
            set_(self, "halo_blur_px", blur)
        if self.reference != "first" and not self.align:
            raise ValueError(
                f"reference={self.reference!r} is for align=True (it sets the output grid)"
            )
        if self.crop and not self.align:
            raise ValueError("crop=True needs align=True (without alignment every frame covers)")
        if self.bit_depth is not None:
            set_(self, "bit_depth", check_int(self.bit_depth, "bit_depth", 1, 32))
        if self.guide_channel is not None:
            set_(self, "guide_channel", check_int(self.guide_channel, "guide_channel", 0, 15))
        if self.noise_dn is not None:
            set_(self, "noise_dn", _check_noise(self.noise_dn))
        if self.z_step_um is not None:
            step = _check_real(self.z_step_um, "z_step_um", -1e9, 1e9)
            if step == 0:
                raise ValueError(
                    "z_step_um must not be 0 (frames must be at distinct z positions); a "
                    "negative step is a scan moving down"
                )
            set_(self, "z_step_um", step)
        if self.z_um is not None:
            if self.z_step_um is not None:
                raise ValueError(
                    f"give z_step_um ({self.z_step_um}) or z_um ({len(self.z_um)} positions), "
                    "not both"
                )
            z = _positions(self.z_um, "z_um")
            check_monotonic(np.asarray(z), "z_um")
            set_(self, "z_um", z)
        if self.index_mismatch is not None:
            from nanoro_optics.psf import IndexMismatch

            if not isinstance(self.index_mismatch, IndexMismatch):
                raise TypeError(
                    "index_mismatch must be a nanoro_optics.psf.IndexMismatch, got "
                    f"{type(self.index_mismatch).__name__}"
                )

    # -- derived values -------------------------------------------------------------------
    @property
    def rule(self) -> FusionRule:
        """The selection rule these options set (:class:`~nanoro_optics.fusion.FusionRule`)."""
        return FusionRule(**{name: getattr(self, name) for name in _RULE_FIELDS})

    def z_of_frame(self, k: int) -> float | None:
        """Z (um) of frame ``k`` from ``z_step_um`` or ``z_um``; None without either."""
        if self.z_step_um is not None:
            return k * self.z_step_um
        if self.z_um is not None:
            if not 0 <= k < len(self.z_um):
                raise ValueError(
                    f"frame {k} has no z position: z_um holds {len(self.z_um)} (one per frame)"
                )
            return self.z_um[k]
        return None

    @property
    def depth_in_um(self) -> bool:
        """Whether the depth map is in um (z positions given here)."""
        return self.z_step_um is not None or self.z_um is not None

    # -- values ---------------------------------------------------------------------------
    def replace(self, **changes: Any) -> FusionOptions:
        """Return a copy with ``changes`` applied, validated like a new one."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"FusionOptions has no field {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def help(cls, name: str) -> str:
        """Return the one help text of field ``name`` (CLI help, GUI tooltips)."""
        check_choice(name, "name", HELP)
        return HELP[name]

    def to_json(self) -> dict[str, Any]:
        """Return the options as a JSON-ready dict (with ``"format"``), for records and files."""
        out: dict[str, Any] = {"format": OPTIONS_FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "index_mismatch" and value is not None:
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_json_text(self) -> str:
        """:meth:`to_json` as one line of JSON text (keys sorted)."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> FusionOptions:
        """Rebuild options from :meth:`to_json` (a dict, or its JSON text).

        Raises
        ------
        ValueError
            Not options of this format, or a field this version does not know (named).
        """
        if isinstance(data, (str, bytes)):
            data = json.loads(data)
        if not isinstance(data, Mapping) or data.get("format") != OPTIONS_FORMAT:
            raise ValueError(f"not {OPTIONS_FORMAT} options")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"format"})
        if unknown:
            raise ValueError(f"unknown FusionOptions field(s) {unknown}")
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("z_um", "noise_dn"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        mismatch = kwargs.get("index_mismatch")
        if mismatch is not None:
            from nanoro_optics.psf import IndexMismatch

            kwargs["index_mismatch"] = IndexMismatch(**mismatch)
        return cls(**kwargs)


#: largest noise_dn accepted: any finite value (frames of any finite scale are fused; the
#: fuser refuses a noise that leaves float32 against the frames' own scale, StackFuser)
_NOISE_MAX_DN = sys.float_info.max


def _check_noise(value: Any) -> float | tuple[float, ...]:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _check_real(value, "noise_dn", 0.0, _NOISE_MAX_DN, open_lo=True)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"noise_dn must be a number or a sequence of numbers, got {type(value).__name__}"
        )
    items = (
        list(np.asarray(value, dtype=object).ravel())
        if isinstance(value, np.ndarray)
        else list(value)
    )
    if not 1 <= len(items) <= 16:
        raise ValueError(f"noise_dn must hold 1 to 16 values (one per channel), got {len(items)}")
    return tuple(
        _check_real(v, f"noise_dn[{i}]", 0.0, _NOISE_MAX_DN, open_lo=True)
        for i, v in enumerate(items)
    )


class _Unset(enum.Enum):
    """The type of :data:`UNSET`: an override that was not given."""

    UNSET = "unset"


#: default of the keyword overrides of :func:`fuse_stack` and :class:`StackFuser`: not given
UNSET = _Unset.UNSET
#: the type of :data:`UNSET`, for the signatures of functions that take keyword overrides
Unset = _Unset


def merge(options: FusionOptions | None, overrides: Mapping[str, Any]) -> FusionOptions:
    """Return ``options`` (default: the defaults) with the overrides that were given.

    Parameters
    ----------
    options : FusionOptions or None
    overrides : mapping
        Field names to values; :data:`UNSET` values are left out.

    Raises
    ------
    TypeError
        ``options`` that is not a :class:`FusionOptions`.
    """
    if options is None:
        options = FusionOptions()
    elif not isinstance(options, FusionOptions):
        raise TypeError(f"options must be a FusionOptions, got {type(options).__name__}")
    given = {k: v for k, v in overrides.items() if v is not UNSET}
    return options.replace(**given) if given else options


def field_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the :class:`FusionOptions` fields among ``values`` (a signature's ``locals()``).

    For the functions whose signatures list every field as a keyword-only override
    (:func:`~nanoro_optics.fusion.fuse_stack`, :class:`~nanoro_optics.fusion.StackFuser`):
    ``merge(options, field_values(locals()))``. A field the signature lacks is a
    ``KeyError`` naming it, so a field added here cannot be forgotten there.
    """
    return {f.name: values[f.name] for f in dataclasses.fields(FusionOptions)}
