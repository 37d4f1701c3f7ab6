"""The fuser's frame intake: checking a frame and bringing it to the float32 working units.

Private: :class:`_FrameIntake` holds the methods of
:class:`~nanoro_optics.fusion.stack.StackFuser` that take a frame in (its checks, its z
position, the noise weights of its channels) and map frames of any dtype onto the float32
working units and back (:meth:`_FrameIntake._set_scale`); StackFuser inherits them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nanoro_optics._validation import as_float_array

from .noise import _SIGMA_MIN_DN, noise_sigma
from .options import FusionOptions, check_monotonic

#: float frames whose largest magnitude lies in this window are fused at their own scale;
#: others are first multiplied by a power of two (exact) that brings it to [0.5, 1): the
#: float32 energies (coefficient squared over noise squared) then neither overflow nor
#: underflow (float32 frames at 1e20 or 1e-20 fused to NaN before)
_FLOAT_SCALE_WINDOW = (2.0**-24, 2.0**24)
#: integer frames (other than uint8 and uint16) whose first frame lies in +-2**24 are fused
#: as they are (float32 holds them exactly); wider ones relative to the midpoint of the
#: first frame's range, scaled by a power of two to a span of at most 2**24
_INT_EXACT = 2**24
#: integer frames of at least this many values have their bit-depth check's maximum taken on
#: the fusion's numba threads (below it numpy's one-thread pass costs less than a launch)
_PARALLEL_MAX_PIXELS = 1 << 18
#: smallest noise standard deviation the fuser works with, in its float32 working units
#: (the data scaled as above): 1 / (C sigma**2) stays finite in float32 (2**-60 is far
#: below float32's resolution of data of magnitude >= 2**-24)
_SIGMA_TINY = 2.0**-60
#: a float frame of magnitude 2**this in the working units (frame 0 at most 2**24 there)
#: is refused: its pyramid sums would near float32's 2**128 (the fusion kernel saturates
#: the energies, ``_blend_kernels.ACTIVITY_MAX``, so they do not overflow before)
_WORK_MAX_EXP = 100
_SIGN_BIT = np.uint64(1 << 63)


def _biased(a: np.ndarray) -> np.ndarray:
    """Map an integer array onto uint64, order-preserving (signed: the sign bit flipped)."""
    if a.dtype.kind == "u":
        return a.astype(np.uint64)
    return a.astype(np.int64).view(np.uint64) ^ _SIGN_BIT


def _unbiased(u: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_biased` (``u`` must hold values of ``dtype``)."""
    if dtype.kind == "u":
        return u.astype(dtype)
    return (u ^ _SIGN_BIT).view(np.int64).astype(dtype)


def _bias_of(dtype: np.dtype) -> int:
    return 1 << 63 if dtype.kind == "i" else 0


def _saturating_add(base: int, steps: np.ndarray) -> np.ndarray:
    """Add integral float64 ``steps`` to ``base`` in uint64, saturated to ``[0, 2**64 - 1]``."""
    big = np.float64(2.0**64 - 2048)  # the largest float64 below 2**64
    ub = np.uint64(base)
    up = np.minimum(np.maximum(steps, 0.0), big).astype(np.uint64)
    down = np.minimum(np.maximum(-steps, 0.0), big).astype(np.uint64)
    top = np.uint64(2**64 - 1) - ub
    out = np.where(up > top, np.uint64(2**64 - 1), ub + np.minimum(up, top))
    return np.where(down > ub, np.uint64(0), out - np.minimum(down, ub))


def _interleaved(a: np.ndarray) -> np.ndarray:
    """Return a planar ``(C, H, W)`` array as an interleaved ``(H, W, C)`` view."""
    return np.moveaxis(a, 0, -1)


class _FrameIntake:
    """Frame intake of :class:`~nanoro_optics.fusion.stack.StackFuser` (see the module)."""

    # set by StackFuser.__init__ and its allocation
    options: FusionOptions
    guide_channel: int | None
    bit_depth: int | None
    noise_dn: np.ndarray | None
    _n: int
    _shape: tuple[int, ...] | None
    _dtype: np.dtype | None
    _shape_source: str
    _noise_opt: np.ndarray | None
    _z_init: np.ndarray | None
    _z_frames: list[float]
    _lum: np.ndarray
    #: frame 0's (lo, hi, top) when this fuser sees only a part of it (:meth:`_scale_as`)
    _frame0_span: tuple[int, int, float] | None = None

    if TYPE_CHECKING:

        def _kern(self) -> Any: ...

    # -- frame intake -------------------------------------------------------------------
    def _check_frame(self, frame: Any) -> np.ndarray:
        k = self._n
        if not isinstance(frame, np.ndarray):
            try:
                frame = np.asarray(frame)
            except Exception as exc:
                raise TypeError(f"frame {k} is not an array: {type(frame).__name__}") from exc
        if frame.dtype.kind not in "uif":
            raise TypeError(f"frame {k} must hold integers or floats, got dtype {frame.dtype}")
        if frame.ndim not in (2, 3) or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(
                f"frame {k} must be (rows, cols) or (rows, cols, channels), got shape {frame.shape}"
            )
        if frame.ndim == 3 and not 1 <= frame.shape[2] <= 16:
            raise ValueError(f"frame {k} has {frame.shape[2]} channels, expected 1 to 16")
        self._check_guide(frame.shape[2] if frame.ndim == 3 else 1, f"frame {k}")
        if self._shape is not None:
            if frame.shape != self._shape:
                raise ValueError(
                    f"frame {k} has shape {frame.shape}, expected {self._shape} "
                    f"(the shape of {self._shape_source})"
                )
            if frame.dtype != self._dtype:
                raise TypeError(
                    f"frame {k} has dtype {frame.dtype}, expected {self._dtype} "
                    f"(the dtype of {self._shape_source})"
                )
        self._in_dtype = frame.dtype
        if self.bit_depth is not None and frame.dtype.kind in "ui":
            white = self._white_level(frame.dtype)
            if frame.flags.c_contiguous and frame.size >= _PARALLEL_MAX_PIXELS:
                # a large frame's maximum on the fusion's threads (numpy's takes one)
                top = int(self._kern().int_max(frame.reshape(frame.shape[0], -1)))
            else:
                top = int(frame.max())
            if top > white:
                pos = np.unravel_index(int(np.argmax(frame)), frame.shape)
                raise ValueError(
                    f"frame {k} has the value {top} at {tuple(int(p) for p in pos)}, above "
                    f"{int(white)}, the largest of bit_depth={self.bit_depth}"
                )
        if frame.dtype.kind == "f":
            # checked at the frame's own precision (float32 of a finite 1e300 is inf); the
            # pyramid works in float32 whatever the input precision (float16: exactly)
            frame = np.ascontiguousarray(frame, dtype=np.promote_types(frame.dtype, np.float32))
            bad, top = self._kern().finite_absmax(frame)
            if bad >= 0:
                pos = np.unravel_index(int(bad), frame.shape)
                raise ValueError(
                    f"frame {k} has a non-finite pixel ({frame.flat[int(bad)]}) at "
                    f"{tuple(int(p) for p in pos)}"
                )
            if k == 0:
                self._set_scale(frame, float(top))
            if top > 0 and math.frexp(top)[1] + self._exp > _WORK_MAX_EXP:
                raise ValueError(
                    f"frame {k} has a pixel of magnitude {float(top)!r}, at least "
                    f"2**{_WORK_MAX_EXP - self._exp}, this stack's limit: the fuser works in "
                    f"float32 scaled to frame 0 (largest magnitude {self._scale0!r}), where "
                    f"pixels must stay below 2**{_WORK_MAX_EXP}"
                )
        elif k == 0:
            self._set_scale(frame, 0.0)
        if self._work_dtype(self._in_dtype) != frame.dtype or self._exp != 0:
            frame = self._to_work(frame)  # float32 working units (see _set_scale)
        return frame  # copied into the planar buffer, whatever its strides

    def _set_scale(self, frame: np.ndarray, top: float) -> None:
        """Choose, from frame 0, how frames map onto the float32 working units.

        A frame ``x`` is fused as ``(x - offset) * 2**exp`` in float32. uint8 and uint16
        frames, float frames whose largest magnitude lies in :data:`_FLOAT_SCALE_WINDOW`
        and integer frames within ``+-2**24`` keep ``offset = 0, exp = 0`` (fused as they
        are). Other float frames are scaled by a power of two (exactly) to a largest
        magnitude in ``[0.5, 1)``; other integer frames are taken relative to the midpoint
        of frame 0's range (``offset``, exact in 64-bit integers) and scaled by a power of
        two to a span of at most ``2**24``. The fused image is mapped back exactly
        (:meth:`_from_work`), so any integer width and any finite float scale fuse
        finite and inside the frames' range.
        """
        self._exp = 0
        self._offset: int | None = None  # in the biased uint64 domain of _biased()
        span = self._frame0_span  # a tile's fuser: the whole frame 0's (_scale_as)
        if span is not None:
            top = span[2]
        self._scale0 = top  # frame 0's largest magnitude (float frames)
        if frame.dtype in (np.uint8, np.uint16):
            return
        if frame.dtype.kind == "f":
            if top > 0 and not _FLOAT_SCALE_WINDOW[0] <= top <= _FLOAT_SCALE_WINDOW[1]:
                self._exp = -math.frexp(top)[1]
            return
        lo, hi = (int(frame.min()), int(frame.max())) if span is None else span[:2]
        if -_INT_EXACT <= lo and hi <= _INT_EXACT:
            return
        self._offset = _bias_of(frame.dtype) + (lo + hi) // 2
        self._exp = -max(0, (hi - lo).bit_length() - 24)

    def _scale_as(self, lo: int, hi: int, top: float) -> None:
        """Choose the working units from a whole frame 0 of which this fuser sees a part.

        Tiled fusion (:func:`nanoro_optics.distributed.fuse_tiled`) fuses each tile with
        its own fuser; were each to take the units from its own part of frame 0, tiles of
        integers wider than 24 bits would be rounded to different steps (seams at their
        borders) and float frames scaled apart. ``lo``, ``hi``: frame 0's smallest and
        largest value (integer frames); ``top``: its largest magnitude (float frames).
        Must come before the first frame.
        """
        if self._n:
            raise ValueError("_scale_as() must come before the first frame")
        if not (isinstance(lo, int) and isinstance(hi, int) and lo <= hi):
            raise ValueError(f"_scale_as: lo and hi must be ints with lo <= hi, got {lo!r}, {hi!r}")
        if not (math.isfinite(top) and top >= 0):
            raise ValueError(f"_scale_as: top must be finite and >= 0, got {top!r}")
        self._frame0_span = (lo, hi, float(top))

    def _to_work(self, frame: np.ndarray) -> np.ndarray:
        """Return a frame in the float32 working units of :meth:`_set_scale`."""
        if frame.dtype.kind == "f":  # (magnitudes checked: below 2**100 once scaled)
            if self._exp == 0:
                return frame.astype(np.float32)
            if frame.dtype == np.float32:  # (ldexp is exact up to the one final rounding)
                return np.ldexp(frame, self._exp)
            return np.ldexp(frame.astype(np.float64, copy=False), self._exp).astype(np.float32)
        if self._offset is None:  # exact in float32 below 2**24, rounded (no wrap) above
            return frame.astype(np.float32)
        return np.ldexp(self._steps(frame), self._exp).astype(np.float32)

    def _steps(self, frame: np.ndarray) -> np.ndarray:
        """``frame - offset`` as float64, computed exactly in uint64 (then rounded once)."""
        assert self._offset is not None
        u = _biased(frame)
        base = np.uint64(self._offset)
        above = u >= base
        return np.where(
            above,
            (u - np.where(above, base, u)).astype(np.float64),
            -(np.where(above, u, base) - u).astype(np.float64),
        )

    def _from_work(
        self, image3: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None
    ) -> np.ndarray:
        """Map a float32 image ``(H, W, C)`` of working units back to the frames' dtype.

        Exactly: integers rounded half to even from the offset in 64-bit integers and
        saturated at the dtype's limits, floats scaled back by the power of two; then
        clamped to the planar per-pixel range ``lo``, ``hi`` (the frames' dtype) in that
        exact arithmetic, so that no pixel leaves the data (nor wraps around).
        """
        dtype = self._dtype
        assert dtype is not None
        out = np.empty(image3.shape, dtype)
        step = 256  # rows at a time: the float64 / uint64 temporaries stay small
        for r0 in range(0, image3.shape[0], step):
            rows = slice(r0, r0 + step)
            y = np.ldexp(image3[rows].astype(np.float64), -self._exp)
            b = None if lo is None or hi is None else (lo[:, rows], hi[:, rows])
            if dtype.kind == "f":
                if b is not None:  # lo, hi are values of dtype: its rounding keeps y inside
                    y = np.minimum(np.maximum(y, _interleaved(b[0])), _interleaved(b[1]))
                with np.errstate(over="ignore"):
                    out[rows] = y.astype(dtype)
                continue
            base = _bias_of(dtype) if self._offset is None else self._offset
            u = _saturating_add(base, np.rint(y))
            info = np.iinfo(dtype)
            lim = _biased(np.array([info.min, info.max], dtype))
            u = np.minimum(np.maximum(u, lim[0]), lim[1])
            if b is not None:
                u = np.minimum(
                    np.maximum(u, _biased(_interleaved(b[0]))), _biased(_interleaved(b[1]))
                )
            out[rows] = _unbiased(u, dtype)
        return out

    def _check_guide(self, c: int, source: str) -> None:
        g = self.guide_channel
        if g is not None and g >= c:
            raise ValueError(
                f"guide_channel={g} is out of range: {source} has {c} channel"
                f"{'s' if c > 1 else ''} (guide_channel 0 to {c - 1})"
            )

    def _take_z(self, z_um: Any) -> None:
        k = self._n
        step = self.options.z_step_um
        if z_um is not None and step is not None:
            raise ValueError(
                f"frame {k}: z_um={z_um!r} was given to add() but the options set "
                f"z_step_um={step}; give one"
            )
        if z_um is None and step is not None:
            z_um = k * step  # frame k at k * z_step_um from the first frame
        if z_um is None:
            if self._z_frames:
                raise ValueError(f"frame {k} has no z_um but the frames before it had one")
            return
        if self._z_init is not None:
            raise ValueError(
                f"frame {k}: z_um was given both to StackFuser() and to add(); give it once"
            )
        if k > 0 and not self._z_frames:
            raise ValueError(f"frame {k} has z_um={z_um!r} but the frames before it had none")
        z = float(as_float_array(z_um, "z_um"))
        zs = [*self._z_frames, z]
        check_monotonic(np.asarray(zs), "z_um")
        self._z_frames.append(z)

    def _white_level(self, dtype: np.dtype) -> float:
        """Largest value a frame may hold: ``2**bit_depth - 1``, else the dtype's maximum."""
        if dtype.kind in "ui":
            top = float(np.iinfo(dtype).max)
            if self.bit_depth is not None:
                if 2.0**self.bit_depth - 1 > top:
                    raise ValueError(
                        f"bit_depth={self.bit_depth} does not fit frames of dtype {dtype} "
                        f"(at most {np.iinfo(dtype).bits} bits)"
                    )
                return 2.0**self.bit_depth - 1
            return top
        return 1.0

    def _set_noise(self, frame3: np.ndarray, next_frame: np.ndarray | None = None) -> None:
        """Weigh every channel's energy by its noise (first two frames, or ``noise_dn``).

        Activity is then in units of the noise energy, whatever the dtype, range or gain of
        the data: a dim 12-bit channel in a uint16 container counts as much as a bright one,
        and the floor ``rule.noise_floor`` sits at the noise, not at a fraction of the
        container's range.
        """
        c = frame3.shape[2]
        g = self.guide_channel
        if self._noise_opt is not None:
            if self._noise_opt.size not in (1, c):
                raise ValueError(
                    f"noise_dn has {self._noise_opt.size} values but the frames have {c} "
                    f"channels (give one, or one per channel)"
                )
            sigma = np.broadcast_to(self._noise_opt, (c,)).astype(np.float64)
            if frame3.dtype.kind in "ui":  # 1 DN at least (this also bounds the codes)
                sigma = np.maximum(sigma, _SIGMA_MIN_DN)
            sigma = np.ldexp(sigma, self._exp)  # in the working units (_set_scale)
            if np.any(sigma < _SIGMA_TINY) or np.any(sigma > 1.0 / _SIGMA_TINY):
                raise ValueError(
                    f"noise_dn={self._noise_opt.tolist()!r} does not fit these frames: "
                    f"from {math.ldexp(_SIGMA_TINY, -self._exp):.6g} to "
                    f"{math.ldexp(1.0 / _SIGMA_TINY, -self._exp):.6g} (2**-60 to 2**60 of "
                    f"the frames' scale), else the noise energy leaves float32"
                )
        else:  # (at least 2**-60 of the frames' scale: far below float32's resolution)
            sigma = np.maximum(noise_sigma(frame3, next_frame), _SIGMA_TINY)
        self.noise_dn = np.ldexp(sigma, -self._exp)  # in DN of the frames
        if g is None:
            self._lum = (1.0 / (c * sigma**2)).astype(np.float32)
        else:  # the guide alone, weighed as in a single-channel fusion of it
            self._lum = np.zeros(c, np.float32)
            self._lum[g] = np.float32(1.0 / sigma[g] ** 2)

    @staticmethod
    def _work_dtype(dtype: np.dtype) -> np.dtype:
        """Return the dtype frames are fused in: uint8 and uint16 as given, else float32."""
        return dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)
