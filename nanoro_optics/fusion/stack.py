"""Streaming focus fusion: :class:`StackFuser`, a focus stack fused frame by frame.

Each frame is decomposed into a Burt-Adelson Laplacian pyramid [1]_ level by level and folded
into a running fused pyramid with the rule of :mod:`.rule`; the frame's pyramid is never
stored whole. The state is, per level, the weighted mean of the coefficients (planar; int16
fixed point for uint8 frames, else float32) and one map of the frames' activities (their
maximum, or their p-norm for the soft rule; for integer frames as 16-bit codes, else
float32), plus the depth tracker on the half-resolution level and the frames' per-pixel
range: for a uint8 RGB frame about ``4/3 * (6 + 2) + 11 / 4 + 6`` bytes per pixel (without
the tracker, ``depth=False``, the third term goes; without the range, which the file
pipeline hands over after a second read of the files when it tracks depth, the last), and
the per-frame work buffers (the frame in planar form, its next Gaussian level). Memory does
not grow with the number of frames, and frames can be fused as a camera delivers them.

The fuser's frame intake (checks, noise weights, working units) is in :mod:`._intake`, its
output (the collapse, the depth map, :class:`~.result.FusionResult`) in :mod:`._output`;
:func:`~.fuse.fuse_stack` fuses a whole stack in one call, :mod:`.noise` estimates the
frames' noise, :mod:`.frame_range` their per-pixel range.

References
----------
.. [1] P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code",
   IEEE Trans. Commun. 31(4), 532-540 (1983). https://doi.org/10.1109/TCOM.1983.1095851
.. [2] P. J. Burt and R. J. Kolczynski, "Enhanced image capture through fusion", Proc. 4th
   ICCV, 173-182 (1993). https://doi.org/10.1109/ICCV.1993.378222
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nanoro_optics._validation import check_bool

from ._output import _collapse, _FusedOutput
from .depth import DepthTracker
from .frame_range import _planar_view
from .noise import _SIGMA_MIN_DN, noise_rows
from .options import UNSET, FusionOptions, _Unset, field_values, merge
from .pyramid import auto_levels
from .result import ONE_FRAME_ERROR

if TYPE_CHECKING:
    from nanoro_optics.psf import IndexMismatch

__all__ = ["ONE_FRAME_ERROR", "StackFuser"]


#: activity / eps that 16-bit activity codes hold (``_kernel_common._encode_row``), with a margin
_CODE_RANGE = 2.0**31


def _activity_bound(levels: int, inherit: float, energy: float) -> float:
    """Largest activity on any level, for frames whose weighted energy is at most ``energy``.

    Activities here are in units of the floor. A Laplacian coefficient is at most the white
    level in magnitude (REDUCE and EXPAND average with positive weights), so the local
    weighted energy of a level is at most ``sum_c w_c white**2 / floor`` (``energy``; the
    channel weights ``w_c = 1 / (C sigma_c**2)`` sum to at most ``1 / sigma_min**2``); level
    ``k`` adds ``inherit`` times the (averaged) activity of level ``k - 1``, and the floor.
    """
    one_level = 1.0 + energy
    return one_level * sum(float(inherit) ** k for k in range(levels))


def _scratch_shape(workers: int, channels: int, width: int, radius: int) -> tuple[int, int, int]:
    """Shape of the float32 scratch of ``_blend_kernels.fuse_level`` (one slice per worker).

    Per worker the rings its sweep keeps in the cache: ``radius + 1`` rows of coefficients
    per channel, ``2 * radius + 1`` of windowed energy, 3 of activity, and 7 single rows,
    each ``width + 2 * radius`` long (``radius``: the largest window's half-width).
    """
    rows = (radius + 1) * channels + (2 * radius + 1) + 3 + 7
    return workers, rows, width + 2 * radius


class _BufferPool:
    """The buffers of one released :class:`StackFuser`, kept for the next of its layout.

    A front end that fuses one stack after another (``LiveFusion``: one per MDA group)
    then pays for the fuser's memory (about 0.1 GB at 2048 x 2048) once instead of once a
    stack. It holds one set at most (the last released), for as long as its owner lives
    (:meth:`StackFuser.share_buffers`); thread-safe (a finishing thread gives buffers back
    while the acquiring one takes them).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None

    def put(self, layout: tuple[Any, ...], buffers: tuple[Any, ...]) -> None:
        with self._lock:
            self._entry = (layout, buffers)

    def take(self, layout: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            entry, self._entry = self._entry, None
        if entry is None or entry[0] != layout:
            return None  # (another layout's buffers go: the next stack is of this one)
        return entry[1]


#: the pools of their owners (one per owner, gone with it)
_POOLS: weakref.WeakKeyDictionary[Any, _BufferPool] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


#: the pyramid level the depth tracker follows (half resolution; :meth:`StackFuser._track_level`)
DEPTH_LEVEL = 1

#: int16 steps per DN of the fused coefficients of uint8 frames: coefficients of a uint8
#: image lie in [-255, 255], so 128 steps per DN fit int16 and keep 1/256 DN rounding
_QSCALE_UINT8 = 128.0


class StackFuser(_FusedOutput):
    """Fuse a focus stack frame by frame (memory independent of the number of frames).

    Parameters
    ----------
    options : FusionOptions, optional
        Every setting of the fusion (:class:`~nanoro_optics.fusion.FusionOptions`, whose
        fields document each one); default ``FusionOptions()``.
    sharpness, window_px, coarse_window_px, inherit, focus_levels, noise_floor, levels, \
align, reference, crop, bit_depth, noise_dn, guide_channel, fill_depth, min_confidence, \
z_step_um, z_um, index_mismatch, halo, halo_blur_px : keyword-only, optional
        Override that field of ``options`` (validated as :meth:`FusionOptions.replace`
        does). z positions may also be given to each :meth:`add`. ``reference="middle"``
        needs ``align_reference`` (a streaming fuser sees each frame once); ``crop`` is
        applied by :func:`fuse_stack` and :mod:`nanoro_optics.pipeline` (the fuser's
        result keeps the full grid, :attr:`valid_bbox` says what to crop). ``halo="auto"``
        reads the frames again near occluding edges (:mod:`.halo`): give them to
        :meth:`result` (``frames=``), as :func:`fuse_stack` and
        :mod:`nanoro_optics.pipeline` do; without them the result says it was not applied.
    depth : bool, optional
        Track the frame of best focus for the depth map (default). With ``False`` the fuser
        keeps no depth tracker (at 12 MP about 63 MB less and a little less work per frame)
        and only :meth:`image` gives a result; :meth:`result` then raises.
    align_reference : array_like, optional
        With ``align``, the 2x3 matrix of the frame whose pixel grid the result takes
        (:func:`~nanoro_optics.fusion.align.reference_transform` over the same frames, a
        first pass); by default the first frame's grid.

    Notes
    -----
    Frames must all have the same shape and dtype: uint8, uint16 (any integer type) or float,
    grey ``(H, W)`` or colour ``(H, W, C)``. The depth map assumes frames arrive in focus
    order (as a Z scan delivers them). The channels' noise is estimated from the first two
    frames (:func:`noise_sigma`); with ``noise_dn`` given, the fused image does not depend on
    the frames' order, up to rounding (exactly with the hard rule, ``sharpness=None``).

    Every pixel of the fused image lies within the range ``[min_k, max_k]`` the frames
    recorded at that pixel (the fuser keeps that range, two maps of the frame's size): a
    Laplacian pyramid whose levels come from different frames can overshoot where the frames
    differ at coarse scales (brightness changes, misalignment, specular highlights), and the
    data bound it. Single frames come back exactly.

    The fused pyramid holds, per coefficient, the weighted mean of the frames' coefficients
    so far. For uint8 frames it is stored as int16 fixed point, 128 steps per DN
    (coefficients of a uint8 image lie within +-255 DN): half the memory and memory traffic
    of float32, at a rounding of 1/256 DN per frame, far below the output's 1 DN step.
    Other dtypes are fused in float32 (16-bit frames keep their full precision): float
    frames scaled by a power of two when frame 0's largest magnitude lies outside
    ``2**-24`` to ``2**24``, integers wider than 24 bits relative to the midpoint of frame
    0's range, and mapped back exactly (:meth:`_set_scale`), so that every integer width
    (int8 to uint64) and every finite float scale (float16 to float64) fuses to a finite
    image inside the frames' range. A float frame ``2**100`` times frame 0's scale is
    refused (its pyramid would overflow float32).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    >>> fuser = StackFuser()
    >>> for _ in range(3):
    ...     fuser.add(img)
    >>> res = fuser.result()
    >>> res.n_frames, bool(np.array_equal(res.image, img))
    (3, True)
    """

    def __init__(
        self,
        options: FusionOptions | None = None,
        *,
        sharpness: int | _Unset | None = UNSET,
        window_px: int | _Unset = UNSET,
        coarse_window_px: int | _Unset | None = UNSET,
        inherit: float | _Unset = UNSET,
        focus_levels: int | _Unset = UNSET,
        noise_floor: float | _Unset = UNSET,
        levels: int | _Unset | None = UNSET,
        align: bool | _Unset = UNSET,
        reference: str | _Unset = UNSET,
        crop: bool | _Unset = UNSET,
        bit_depth: int | _Unset | None = UNSET,
        noise_dn: float | Sequence[float] | _Unset | None = UNSET,
        guide_channel: int | _Unset | None = UNSET,
        fill_depth: bool | _Unset = UNSET,
        min_confidence: float | _Unset = UNSET,
        z_step_um: float | _Unset | None = UNSET,
        z_um: Sequence[float] | _Unset | None = UNSET,
        index_mismatch: IndexMismatch | _Unset | None = UNSET,
        halo: str | _Unset = UNSET,
        halo_blur_px: float | _Unset | None = UNSET,
        depth: bool = True,
        align_reference: Any = None,
    ) -> None:
        opts = merge(options, field_values(locals()))
        self.options = opts
        self.rule = opts.rule
        self.guide_channel = opts.guide_channel
        self.depth = check_bool(depth, "depth")
        self._keep_range = True  # the file pipeline hands the range over instead (_set_range)
        self._track_at = DEPTH_LEVEL  # the level of the depth tracker (_track_level)
        self.bit_depth = opts.bit_depth
        self._noise_opt: np.ndarray | None = (
            None if opts.noise_dn is None else np.atleast_1d(np.asarray(opts.noise_dn, float))
        )
        self.noise_dn: np.ndarray | None = None
        self._z_init = None if opts.z_um is None else np.asarray(opts.z_um, np.float64)
        self._levels_opt = opts.levels
        self.align = opts.align
        self._aligner: Any = None
        if align_reference is not None:
            if not self.align:
                raise ValueError("align_reference is for align=True (it sets the output grid)")
            from .align import FrameAligner

            self._aligner = FrameAligner(reference=align_reference)  # checks the matrix
        elif opts.reference != "first":
            raise ValueError(
                f"reference={opts.reference!r}: a StackFuser sees each frame once, so it "
                "takes the reference frame's transform as align_reference= (fuse_stack and "
                "nanoro_optics.pipeline compute it from a first pass over the frames)"
            )
        self._z_frames: list[float] = []
        self._n = 0
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._first: np.ndarray | None = None
        self._shape_source = "frame 0"
        self._allocated = False
        self._kernels: Any = None
        self._pyr_kernels: Any = None
        self._released = False
        self._closed = False
        self._rows0: np.ndarray | None = None  # frame 0's noise rows while it waits
        self._acc: list[np.ndarray] = []
        self._built: np.ndarray | None = None  # the image collapsed by _close(collapse=True)
        self._plane: np.ndarray | None = None
        self._lo: np.ndarray | None = None
        self._hi: np.ndarray | None = None
        self._scratch: np.ndarray | None = None
        self._pool: _BufferPool | None = None
        self._layout: tuple[Any, ...] | None = None

    # -- properties ---------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        """Number of frames added so far."""
        return self._n

    @property
    def valid_bbox(self) -> tuple[int, int, int, int] | None:
        """``(y0, y1, x0, x1)`` covered by every aligned frame (None without alignment)."""
        if self._aligner is None:
            return None
        return tuple(int(v) for v in self._aligner.valid_bbox)  # type: ignore[return-value]

    def _kern(self) -> Any:
        if self._kernels is None:
            from . import _blend_kernels

            self._kernels = _blend_kernels
        return self._kernels

    def _pyr(self) -> Any:
        if self._pyr_kernels is None:
            from . import _pyramid_kernels

            self._pyr_kernels = _pyramid_kernels
        return self._pyr_kernels

    def _reserve(self, shape: Sequence[int], dtype: Any) -> None:
        """Allocate the working memory for frames of ``shape`` and ``dtype`` before the first.

        Otherwise the first :meth:`add` pays for it: at 12 MP about 0.3 GB of new memory,
        whose pages the system maps in as they are first written. The file pipeline
        (:mod:`nanoro_optics.pipeline`) calls it while the first frame is being decoded (the
        work is done outside the GIL, so it runs beside a decoding thread). Every frame
        added afterwards must have this shape and dtype.

        Parameters
        ----------
        shape : sequence of int
            ``(H, W)`` or ``(H, W, C)`` of the frames.
        dtype : numpy dtype or type
            Their dtype (integers or floats).

        Raises
        ------
        ValueError
            A shape that is not a frame's, or frames were already added or reserved for.
        TypeError
            A dtype that is not numeric.
        """
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._shape is not None:
            raise ValueError(
                f"_reserve() must come before the first frame; this fuser already has frames "
                f"of shape {self._shape}"
            )
        try:
            dims = tuple(operator.index(v) for v in shape)
        except TypeError as exc:
            raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from exc
        if len(dims) not in (2, 3) or min(dims) < 1 or (len(dims) == 3 and dims[2] > 16):
            raise ValueError(
                f"shape must be (rows, cols) or (rows, cols, channels) with 1 to 16 channels, "
                f"all >= 1, got {dims}"
            )
        try:
            kind = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be a numpy dtype, got {dtype!r}") from exc
        if kind.kind not in "uif":
            raise TypeError(f"dtype must be an integer or float type, got {kind}")
        c = dims[2] if len(dims) == 3 else 1
        self._check_guide(c, f"the reserved shape {dims}")
        self._shape, self._dtype, self._shape_source = dims, kind, "_reserve()"
        self._allocate(dims[0], dims[1], c, self._work_dtype(kind))
        assert self._plane is not None
        maps: list[np.ndarray] = [*self._acc, *self._wnorm, *self._gbuf, *self._rbuf]
        ranges = () if self._lo is None or self._hi is None else (self._lo, self._hi)
        for arr in (*maps, self._plane, *ranges, *self._tracker_arrays()):
            arr[...] = 0  # map the pages in now (numpy releases the GIL for this)

    def _allocate(self, h: int, w: int, c: int, work_dtype: np.dtype) -> None:
        self._allocated = True
        n_levels = self._levels_opt if self._levels_opt is not None else auto_levels((h, w))
        self.levels = n_levels
        self._acc = []
        self._wnorm: list[np.ndarray] = []
        shapes = []
        hh, ww = h, w
        for _ in range(n_levels):
            shapes.append((hh, ww))
            hh, ww = (hh + 1) // 2, (ww + 1) // 2
        self._level_shapes = shapes
        # uint8 frames: the fused coefficients in int16 fixed point (half the memory and
        # memory traffic of float32, rounding 1/256 DN); anything else in float32
        self._quant = self._dtype == np.uint8
        self._qscale = _QSCALE_UINT8 if self._quant else 1.0
        acc_dtype = np.int16 if self._quant else np.float32
        assert self._dtype is not None
        # activity is in units of the noise energy (the channel weights are set from the
        # first frame, :meth:`_set_noise`); the floor is ``rule.noise_floor`` of it
        self._eps = float(self.rule.noise_floor)
        self._white = self._white_level(self._dtype)
        # integer frames bound the activity: its maps (the norms below, the depth tracker's)
        # can then hold 16-bit codes of activity / eps, half the memory of float32
        self._coded = self._dtype.kind in "ui" and (
            _activity_bound(
                n_levels, self.rule.inherit, self._white**2 / _SIGMA_MIN_DN**2 / self._eps
            )
            < _CODE_RANGE
        )
        norm_dtype = np.uint16 if self._coded else np.float32
        # level 0 is read planar: a frame is first copied into this buffer, after which the
        # caller may reuse its own (``_add(frame, z, on_copied)``; a grey frame that add()
        # folds at once is read where it is, see _add); in the frame's own
        # dtype (uint16 frames copied into float32 cost 2 bytes a sample more to write and
        # to read again, for one compiled specialisation less of the level-0 kernels)
        plane_dtype = work_dtype
        # the frames' per-pixel range: the fused image is kept inside it (see result())
        # (in the frames' own dtype: exact for every dtype, as _set_range gives it)
        keep = self._keep_range
        self._layout = (
            tuple(shapes),
            c,
            max(self.rule.window_at(lev) // 2 for lev in range(n_levels)),  # the scratch's
            *(np.dtype(t).str for t in (acc_dtype, norm_dtype, plane_dtype, self._dtype)),
            keep,
        )
        # the buffers a released fuser of the same layout left in this fuser's pool, if any
        # (share_buffers: a front end that fuses one stack after another, LiveFusion)
        reused = None if self._pool is None else self._pool.take(self._layout)
        if reused is not None:
            self._acc, self._wnorm, self._gbuf, self._rbuf = (list(b) for b in reused[:4])
            self._plane, self._lo, self._hi, self._scratch = reused[4:]
            for acc in self._acc:  # the running means start at 0 (the norms are set anew)
                acc[...] = 0
        else:
            for hh, ww in shapes:
                self._acc.append(np.zeros((c, hh, ww), acc_dtype))
                self._wnorm.append(np.zeros((hh, ww), norm_dtype))
            # per-frame work buffers, reused so that no frame pays for fresh pages
            # (uint8 frames: the Gaussian levels in the fixed point of ``acc``, half the memory)
            self._gbuf = [np.empty((c, hh, ww), acc_dtype) for hh, ww in shapes[1:]]
            self._rbuf = [np.empty((hh, ww), np.float32) for hh, ww in shapes[1:]]
            self._plane = np.empty((c, h, w), plane_dtype)
            self._lo = np.empty((c, h, w), self._dtype) if keep else None
            self._hi = np.empty((c, h, w), self._dtype) if keep else None
            # the kernels' rows of scratch, one slice per numba thread (made at the first frame)
            self._scratch = None
        self._depth_level = min(self._track_at, n_levels - 1) if self.depth else -1
        self._tracker: DepthTracker | None = None
        floor = self._eps if self._coded else None
        if self.depth:
            lev = self._depth_level
            self._tracker = DepthTracker(shapes[lev], lev, (h, w), floor=floor)
        self._lum = np.full(c, 1.0 / c, np.float32)  # set from the first frame
        self._g1_ready = False  # _gbuf[0] holds REDUCE(plane) (made as the plane was filled)
        self._no_range = np.zeros((c, 1, 1), work_dtype)  # placeholder of lo, hi
        self._dummy2 = np.zeros((1, 1), np.float32)
        self._dummy3 = np.zeros((c, 1, 1), acc_dtype)
        # placeholders of the tracker's maps on the levels it does not follow (a tracker of
        # one pixel: the same dtypes, so that the kernel compiles once for both)
        self._no_track = DepthTracker((1, 1), 0, (1, 1), floor=floor).arrays()

    def share_buffers(self, owner: Any) -> StackFuser:
        """Share work buffers with the other fusers of ``owner``; return this fuser.

        Released by ``result(release=True)`` or ``image(release=True)``, the fuser leaves
        its buffers (fused pyramid, norms, work levels, plane, range, scratch) in the
        owner's pool instead of freeing them, and the next fuser of the owner with the same
        layout (frame shape, dtype, options) takes them at its first frame: a front end
        that fuses one stack after another allocates once. The pool holds one set at most
        and goes with ``owner`` (held weakly). Results are the same as with fresh buffers.

        Parameters
        ----------
        owner : object
            Any object that can be weakly referenced (the acquisition's handler, a loop's
            session object); its fusers share one set of buffers.

        Examples
        --------
        >>> import numpy as np
        >>> from nanoro_optics.fusion import StackFuser
        >>> class Session: ...
        >>> session = Session()
        >>> for _ in range(2):  # the second stack reuses the first one's buffers
        ...     fuser = StackFuser(levels=2).share_buffers(session)
        ...     for k in range(3):
        ...         fuser.add(np.full((8, 8), k, np.uint16))
        ...     res = fuser.result(release=True)
        >>> res.image.shape
        (8, 8)
        """
        with _POOLS_LOCK:
            pool = _POOLS.get(owner)
            if pool is None:
                pool = _POOLS[owner] = _BufferPool()
        self._pool = pool
        return self

    def _pooled(self) -> tuple[Any, ...]:
        """Return the buffers a released fuser leaves in its owner's pool (share_buffers)."""
        return (
            tuple(self._acc),
            tuple(self._wnorm),
            tuple(self._gbuf),
            tuple(self._rbuf),
            self._plane,
            self._lo,
            self._hi,
            self._scratch,
        )

    def _lend_reserved(self) -> bool:
        """Leave the buffers :meth:`_reserve` mapped in for the next fuser of the owner.

        For a front end that knows the frames' shape and dtype before the first arrives
        (``LiveFusion`` at the sequence's start): the fuser of its first group then takes
        memory already mapped in instead of faulting in about 0.1 GB (at 2048 x 2048) while
        the frames come. This fuser is released (it takes no frames). Returns whether the
        buffers went to a pool (a fuser of :meth:`share_buffers` that reserved and took
        no frame).
        """
        pool = self._pool
        if pool is None or self._layout is None or self._n or self._released:
            return False
        pool.put(self._layout, self._pooled())
        self._free_buffers(keep_means=False)
        self._scratch = self._tracker = None
        return True

    def _image(self, *, release: bool) -> np.ndarray:
        pool = self._pool
        if not (release and pool is not None and not self._released and self._acc):
            return super()._image(release=release)
        kept = self._pooled()
        image = super()._image(release=True)  # (builds the image in new arrays)
        if self._layout is not None and kept[4] is not None and len(kept[1]) == len(kept[0]):
            pool.put(self._layout, kept)
        return image

    def _tracker_arrays(self) -> tuple[np.ndarray, ...]:
        return () if self._tracker is None else self._tracker.arrays()

    def add(self, frame: Any, *, z_um: float | None = None) -> None:
        """Fuse one more frame into the result.

        Parameters
        ----------
        frame : array_like, shape (H, W) or (H, W, C)
            The next frame, same shape and dtype as the first one.
        z_um : float, optional
            Its z position in um (then every frame needs one, strictly monotonic; not with
            the options' ``z_um`` or ``z_step_um``).

        Raises
        ------
        ValueError
            Shape differs from frame 0, a NaN/inf pixel, or an inconsistent ``z_um``.
        TypeError
            Not numeric, or dtype differs from frame 0.
        """
        self._add(frame, z_um, None)

    def _add(self, frame: Any, z_um: float | None, on_copied: Callable[[], None] | None) -> None:
        """:meth:`add`; ``on_copied()`` is called once the fuser holds its copy of the frame.

        The file pipeline's decoding thread then refills the frame's buffer while the frame
        is fused. Not called when the frame is refused.
        """
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._closed:
            raise RuntimeError("this StackFuser was closed (close()): it takes no more frames")
        raw = frame
        frame = self._check_frame(frame)
        self._take_z(z_um)
        if self._shape is None:
            self._shape = frame.shape
            self._dtype = self._in_dtype
        if self.align:
            if self._aligner is None:
                from .align import FrameAligner

                self._aligner = FrameAligner()
            frame = self._aligner.add(frame)
        frame3 = frame if frame.ndim == 3 else frame[:, :, None]
        if self._n == 0:
            if not self._allocated:
                h, w, c = frame3.shape
                self._allocate(h, w, c, frame3.dtype)
            if self._dtype not in (np.uint8, np.uint16):
                # float32 rounding would change other dtypes; 8- and 16-bit frames come
                # back from their pyramid exactly, so they need no copy of a large frame
                self._first = np.array(raw, copy=True)
        elif self._first is not None:
            self._first = None  # only a single-frame stack comes back as is
        assert self._plane is not None
        first = self._n == 0
        if first and self._noise_opt is None:
            # the noise is measured on the first two frames: frame 0 waits in the plane
            # (folded when frame 1 arrives, or when a result is asked for first)
            self._rows0 = np.array(frame3[noise_rows(frame3.shape[0])])  # its own dtype
        elif first:
            self._set_noise(frame3)
        elif self._rows0 is not None:
            self._fold_pending(np.asarray(frame3[noise_rows(frame3.shape[0])]))
        # the plane holds the frame's values exactly: the range is kept from it
        exact = self._dtype in (np.uint8, np.uint16) or (
            self._dtype == np.float32 and self._exp == 0
        )
        keep = self._lo is not None and exact
        # a grey frame in the plane's dtype and layout is read where it is when it is folded
        # right away and the caller waits for that (add): the copy would only write the
        # frame once more and the level-0 sweep read it back
        h, w, c = frame3.shape
        direct = (
            c == 1
            and on_copied is None
            and self._rows0 is None
            and frame3.dtype == self._plane.dtype
            and frame3.flags.c_contiguous
            and frame3.flags.aligned
            and frame3.flags.writeable  # (the kernels' type: a read-only one compiles anew)
        )
        plane = frame3.reshape(1, h, w) if direct else self._plane
        # one sweep: the planar copy, the range and level 1 of the Gaussian pyramid
        reduce = self.levels > 1
        self._pyr().intake(
            frame3,
            plane,
            not direct,
            self._lo if keep else self._no_range,
            self._hi if keep else self._no_range,
            keep,
            first,
            self._gbuf[0] if reduce else self._dummy3,
            reduce,
            self._qscale,
            self._quant,
            self._work_scratch(),
            self._workers(),
        )
        self._g1_ready = reduce  # _fold takes it as is
        late = self._lo is not None and not exact  # the range from the frame, not the plane
        if late and not self.align:
            # from the frame as given: before its buffer goes back to the caller
            self._update_range(raw, frame3, first)
            late = False
        if on_copied is not None:
            on_copied()
        if late:  # from the warped frame, the fuser's own copy
            self._update_range(None, frame3, first)
        if self._rows0 is None:
            self._fold(first, plane)
        self._n += 1

    def _update_range(self, raw: Any, work3: np.ndarray, first: bool) -> None:
        """Fold a frame into the range maps, in the frames' own dtype (exact).

        The frame as given, or (``raw`` None: aligned) its warped working-unit values
        mapped back to the dtype.
        """
        assert self._lo is not None and self._hi is not None
        if raw is None:
            src3 = self._from_work(work3, None, None)
        else:
            src3 = np.asarray(raw)
            src3 = src3 if src3.ndim == 3 else src3[:, :, None]
        src = _planar_view(src3)
        if first:
            self._lo[...] = src
            self._hi[...] = src
        else:
            np.minimum(self._lo, src, out=self._lo)
            np.maximum(self._hi, src, out=self._hi)

    def _fold_pending(self, rows1: np.ndarray | None = None) -> None:
        """Set the noise from frame 0's rows (and frame 1's) and fold frame 0 in."""
        if self._rows0 is None:
            return
        self._set_noise(self._rows0, rows1)
        self._rows0 = None
        self._fold(True)

    def _fold(self, first: bool, plane: np.ndarray | None = None) -> None:
        """Fold the frame in ``plane`` (by default the planar buffer) into the fused pyramid."""
        kern = self._kern()
        pyr = self._pyr()
        rule = self.rule
        hard = rule.sharpness is None
        power = 1 if rule.sharpness is None else int(rule.sharpness)
        g: np.ndarray = self._plane if plane is None else plane  # type: ignore[assignment]
        inherited = self._dummy2
        scratch = self._work_scratch()
        workers = self._workers()
        for lev in range(self.levels):
            top = lev == self.levels - 1
            if top:
                gn = self._dummy3
                reduced = self._dummy2
            else:
                gn = self._gbuf[lev]
                # uint8: Gaussian levels as int16 in steps of 1 / qscale (rounded)
                if lev > 0 or not self._g1_ready:
                    gain = self._qscale if lev == 0 else 1.0
                    pyr.reduce_level(g, False, gn, gain, self._quant)
                reduced = self._rbuf[lev]
            g_scale = 1.0 if lev == 0 else 1.0 / self._qscale
            want_act = lev == self._depth_level
            tracker = self._tracker
            kern.fuse_level(
                g,
                gn,
                inherited,
                self._acc[lev],
                self._wnorm[lev],
                reduced,
                *(tracker.arrays() if want_act and tracker else self._no_track),
                tracker.next_frame() if want_act and tracker else 0,
                self._coded,
                first,
                self._lum,
                rule.window_at(lev) // 2,
                np.float32(rule.inherit if lev > 0 else 0.0),
                np.float32(self._eps),
                power,
                hard,
                top,
                lev < rule.focus_levels,
                want_act,
                not top,
                self._quant,
                np.float32(self._qscale),
                np.float32(g_scale),
                np.float32(1.0 / self._qscale),
                scratch,
                workers,
            )
            g = gn
            inherited = reduced
        self._g1_ready = False

    def _work_scratch(self) -> np.ndarray:
        """Return the kernels' rows of float32 scratch (one slice per numba thread), made once."""
        if self._scratch is None:
            from nanoro_optics._numba import max_threads

            assert self._plane is not None
            c, w = self._plane.shape[0], self._plane.shape[2]
            radius = max(self.rule.window_at(lev) // 2 for lev in range(self.levels))
            self._scratch = np.empty(_scratch_shape(max_threads(), c, w, radius), np.float32)
        return self._scratch

    @staticmethod
    def _workers() -> int:
        """Return the runs of rows a parallel kernel splits a level into (numba's threads)."""
        import numba

        return int(numba.get_num_threads())

    def close(self) -> None:
        """Take no more frames: free the per-frame work buffers now.

        The fused pyramid (and the depth tracker and kept range) stay for :meth:`image` and
        :meth:`result`. A caller with more work to do before asking for the result calls
        this first, so the two do not add up in memory. Adding a frame afterwards raises
        ``RuntimeError``.
        """
        self._close(collapse=False)

    def _close(self, *, collapse: bool) -> None:
        """:meth:`close`; with ``collapse`` also build the fused image now.

        The fused pyramid is then freed (for uint8 RGB frames 8 bytes a pixel, the image 3)
        before the file pipeline reads the files again for their range; the image is brought
        inside that range when it is asked for, after :meth:`_set_range`.
        """
        self._fold_pending()
        self._closed = True
        self._wnorm, self._gbuf, self._rbuf = [], [], []
        self._plane = self._scratch = None
        if collapse and self._built is None and self._acc and not self._released:
            if not (self._n == 1 and self._first is not None):  # (that one is returned as is)
                assert self._dtype is not None
                self._built = _collapse(self._acc, 1.0 / self._qscale, self._dtype, self._pyr())
                self._acc = []

    def _fused_levels(self) -> list[np.ndarray]:
        """Return the fused Laplacian levels as float32 ``(C, H, W)`` (tests, inspection)."""
        self._fold_pending()
        return [a.astype(np.float32) / np.float32(self._qscale) for a in self._acc]
