"""The fuser's output: the fused image and depth map of :class:`~.stack.StackFuser`.

Private: :class:`_FusedOutput` holds the methods of StackFuser that collapse the fused
pyramid into the image (inside the frames' per-pixel range, :meth:`_FusedOutput._set_range`
for a fuser that keeps none), finish the depth map and build the
:class:`~nanoro_optics.fusion.result.FusionResult`; StackFuser inherits them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nanoro_optics._validation import check_bool

from ._intake import _FrameIntake
from .depth import DepthTracker
from .frame_range import _planar_view
from .result import ONE_FRAME_ERROR, FusionResult
from .rule import FusionRule

#: activity floor (noise energies) of the depth estimate and its confidence: below one
#: noise energy the focus profile is noise, whatever floor the fusion weights use
DEPTH_FLOOR = 1.0


def _collapse(accs: list[np.ndarray], scale: float, dtype: np.dtype, kernels: Any) -> np.ndarray:
    """Rebuild the image (H, W, C) in ``dtype`` from the fused levels (``acc * scale``)."""
    top = len(accs) - 1
    nc, h, w = accs[0].shape
    # other dtypes are fused in float32 working units: built as float32, mapped back exactly
    # by StackFuser._from_work (the kernel's float clip cannot hold 64-bit limits)
    dtype = dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)
    is_int = dtype.kind in "ui"
    lo, hi = (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) if is_int else (0.0, 0.0)
    sc = np.float32(scale)
    if top == 0:
        cur = np.empty(accs[0].shape, np.float32)
        kernels.scale_into(accs[0], sc, cur)
        img = np.moveaxis(cur, 0, -1)
        if is_int:
            return np.clip(np.rint(img), lo, hi).astype(dtype)
        return np.ascontiguousarray(img, dtype=dtype)
    cur = np.empty(accs[top].shape, np.float32)
    kernels.scale_into(accs[top], sc, cur)
    for k in range(top - 1, 0, -1):
        nxt = np.empty(accs[k].shape, np.float32)
        kernels.expand_add(accs[k], sc, cur, nxt, False, False, 0.0, 0.0)
        accs[k + 1] = accs[k + 1][:0]  # no longer needed: let its memory go
        cur = nxt
    out = np.empty((h, w, nc), dtype=dtype if is_int else np.float32)
    kernels.expand_add(accs[0], sc, cur, out, True, is_int, lo, hi)
    return out if is_int else out.astype(dtype, copy=False)


class _FusedOutput(_FrameIntake):
    """Output of :class:`~nanoro_optics.fusion.stack.StackFuser` (see the module)."""

    # set by StackFuser.__init__ and its allocation
    depth: bool
    rule: FusionRule
    _released: bool
    _keep_range: bool
    _track_at: int
    _allocated: bool
    _tracker: DepthTracker | None
    _lo: np.ndarray | None
    _hi: np.ndarray | None
    _acc: list[np.ndarray]
    _wnorm: list[np.ndarray]
    _gbuf: list[np.ndarray]
    _rbuf: list[np.ndarray]
    _plane: np.ndarray | None
    _first: np.ndarray | None
    _built: np.ndarray | None
    _qscale: float
    _eps: float
    _depth_level: int

    if TYPE_CHECKING:

        def _fold_pending(self, rows1: np.ndarray | None = None) -> None: ...

        def _pyr(self) -> Any: ...

        def close(self) -> None: ...

        @property
        def valid_bbox(self) -> tuple[int, int, int, int] | None: ...

    # -- output -------------------------------------------------------------------------
    def _z_positions(self) -> np.ndarray | None:
        if self._z_init is not None:
            if self._z_init.size != self._n:
                raise ValueError(
                    f"z_um has {self._z_init.size} positions but {self._n} frames were added"
                )
            return self._z_init
        if self._z_frames:
            return np.asarray(self._z_frames)
        return None

    def result(self, *, release: bool = False, frames: Any = None) -> FusionResult:
        """Return the fused image and depth map of the frames added so far.

        Parameters
        ----------
        release : bool, optional
            Free the fuser's working memory while the result is built (the peak memory is
            then that of the frames' loop, not more); the fuser takes no frame afterwards.
            By default more frames may be added and ``result`` called again.
        frames : array, sequence or callable, optional
            With ``halo="auto"``: the frames as they were added (an ``(N, H, W[, C])`` array,
            a sequence, or ``frames(k)`` returning frame ``k``), read again near occluding
            edges by the halo correction (:mod:`.halo`; aligned frames are warped again as
            the fuser warped them). A streaming fuser keeps no frame, so without them the
            correction does not run and ``result.halo.note`` says so. Ignored with
            ``halo="off"``.

        Raises
        ------
        ValueError
            If no frame was added, or ``z_um`` does not match the number of frames.
        RuntimeError
            If the fuser was released by an earlier ``result(release=True)``, or was made
            with ``depth=False`` (then only :meth:`image` gives a result).
        """
        release = check_bool(release, "release")
        if not self.depth:
            raise RuntimeError(
                "this StackFuser was made with depth=False and keeps no depth map; "
                "call image() for the fused image"
            )
        result = self._result(release=release)
        if self.options.halo == "off":
            return result
        from .halo import finish_halo

        why = ""
        if frames is None:
            why = "no frames to read again (one-shot frames, or result() without frames=)"
        return finish_halo(self, result, frames, note=why)

    def image(self, *, release: bool = False) -> np.ndarray:
        """Return the fused image alone, without the depth map :meth:`result` also builds.

        Parameters
        ----------
        release : bool, optional
            As in :meth:`result`: free the working memory; the fuser takes no frame after.

        Raises
        ------
        ValueError
            If no frame was added.
        RuntimeError
            If the fuser was released by an earlier ``result`` or ``image(release=True)``.
        """
        release = check_bool(release, "release")
        if release and not self._released and self._n > 0 and self._tracker is not None:
            self._tracker.release()  # no depth map: its maps can go before the collapse
        return self._image(release=release)

    def _drop_range(self) -> None:
        """Keep no per-pixel range of the frames: :meth:`_set_range` hands it over after them.

        Two frame-size maps less while fusing; the file pipeline reads the files a second
        time for the range (:class:`FrameRange`). Must come before the first frame.
        """
        if self._allocated or self._n:
            raise ValueError("_drop_range() must come before the first frame")
        self._keep_range = False

    def _frame_bytes(self) -> int:
        """Bytes of one frame of the stack (0 before the first)."""
        if self._shape is None or self._dtype is None:
            return 0
        return int(np.prod(self._shape)) * self._dtype.itemsize

    def _track_level(self, level: int) -> None:
        """Track the depth on pyramid level ``level`` (coarser than level 1: less memory).

        The file pipeline's first read with the halo correction and no depth output asked
        for tracks a coarse depth map, on which it looks for occluding edges
        (:func:`~.halo.may_have_edges`) before it tracks the full one. Must come before the
        first frame; the coarsest level there is, at most.
        """
        if self._allocated or self._n:
            raise ValueError("_track_level() must come before the first frame")
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise ValueError(f"_track_level: level must be an int >= 1, got {level!r}")
        self._track_at = level

    def _set_range(self, lo: Any, hi: Any) -> None:
        """Hand over the frames' per-pixel range, for a fuser that keeps none (:meth:`_drop_range`).

        The fuser takes the arrays and closes itself (:meth:`close`): no frame may follow.

        Raises
        ------
        ValueError
            A fuser that keeps its own range, no frame yet, or arrays of the wrong shape or
            dtype, or ``lo > hi`` somewhere.
        """
        if self._keep_range:
            raise ValueError(
                "_set_range() is for a StackFuser that keeps no range (_drop_range()); this "
                "one keeps the frames' range itself"
            )
        if self._n == 0 or self._shape is None:
            raise ValueError("_set_range() comes after the frames: none was added yet")
        planar = []
        for name, arr in (("lo", lo), ("hi", hi)):
            a = np.asarray(arr)
            if a.shape != self._shape or a.dtype != self._dtype:
                raise ValueError(
                    f"_set_range {name} has shape {a.shape} and dtype {a.dtype}, expected "
                    f"{self._shape} and {self._dtype} (the frames')"
                )
            planar.append(_planar_view(a))
        if np.any(planar[0] > planar[1]):
            raise ValueError("_set_range lo exceeds hi somewhere: give (minimum, maximum)")
        self.close()
        self._lo, self._hi = planar

    def _image(self, *, release: bool) -> np.ndarray:
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._n == 0:
            raise ValueError("the stack is empty: add at least one frame before result()")
        assert self._dtype is not None and self._shape is not None
        self._fold_pending()  # a single frame so far: its noise from itself
        if self._lo is None and self._n > 1:
            raise ValueError(
                "this StackFuser keeps no range of the frames (_drop_range()): hand it "
                "over with _set_range(lo, hi) first, e.g. _set_range(*frame_range(frames))"
            )
        if release:  # the collapse needs only the fused means; free the rest before it
            self._free_buffers(keep_means=True)
        if self._n == 1 and self._first is not None:
            image = self._first.copy()
        else:
            if self._built is not None:  # collapsed by _close(collapse=True)
                image3 = self._built if release else self._built.copy()
            else:
                accs = self._acc if release else list(self._acc)
                image3 = _collapse(accs, 1.0 / self._qscale, self._dtype, self._pyr())
            # no fused pixel outside the range the frames recorded there: where levels come
            # from different frames (frames that differ in brightness or position at coarse
            # scales), their sum can overshoot; this bounds it by the data
            lo, hi = self._lo, self._hi
            if image3.dtype != self._dtype or self._exp != 0:  # fused in working units
                image3 = self._from_work(image3, lo, hi)  # back, and clamped exactly
            elif lo is not None and hi is not None:  # (a single frame needs no range)
                self._kern().clamp_to_range(image3, lo, hi)
            image = image3 if len(self._shape) == 3 else image3[:, :, 0]
        if release:
            self._free_buffers(keep_means=False)
        return image

    def _free_buffers(self, *, keep_means: bool) -> None:
        """Release the fuser: free its work buffers; unless ``keep_means``, its means and range."""
        self._released = True
        self._wnorm, self._gbuf, self._rbuf = [], [], []
        self._plane = None
        if not keep_means:
            self._acc = []
            self._built = self._lo = self._hi = None

    def _result(self, *, release: bool, image: np.ndarray | None = None) -> FusionResult:
        """Return the fused image and the depth map (no halo step).

        ``image``: the image of the same frames fused by another fuser, which kept their
        range (the file pipeline's first read, when this fuser tracked the depth in a second
        one and keeps no range); this fuser's own pyramid is then not collapsed.
        """
        if self._released:
            raise RuntimeError("this StackFuser was released by result(release=True)")
        if self._n == 1:
            raise ValueError(ONE_FRAME_ERROR)
        z = self._z_positions()
        mismatch = self.options.index_mismatch
        if mismatch is not None and z is None:
            raise ValueError(
                "index_mismatch corrects a depth map in um: give z positions (z_step_um or "
                "z_um in the options, or z_um to add())"
            )
        if image is None:
            image = self._image(release=release)
        elif release:  # only the tracker is read from here on
            self._free_buffers(keep_means=False)
        assert self._tracker is not None
        fill = self.rule.fill_depth
        depth, conf = self._tracker.finish(
            z_um=z,
            min_confidence=self.rule.min_confidence,
            release=release,
            fill=fill,
            # the depth estimate counts activity above a floor of one noise energy (on the
            # tracked level the floors of the finer levels add up through ``inherit``)
            extra_floor=max(DEPTH_FLOOR - self._eps, 0.0)
            * sum(self.rule.inherit**i for i in range(self._depth_level + 1)),
        )
        bbox = self.valid_bbox
        if bbox is not None:
            # where some aligned frames have no data (edge-filled), the focus profile is not
            # measured: confidence 0 there, and no depth, unless the depth is filled: then
            # from the nearest pixel every frame covers (as the fill takes the confident
            # pixels around a hole)
            y0, y1, x0, x1 = bbox
            h, w = depth.shape
            outside = np.ones(depth.shape, dtype=bool)
            outside[y0:y1, x0:x1] = False
            if fill and y1 > y0 and x1 > x0:
                inner = depth[y0:y1, x0:x1]
                depth = np.pad(inner, ((y0, h - y1), (x0, w - x1)), mode="edge")
            else:
                depth[outside] = np.nan
            conf[outside] = 0.0
        kind = "nominal"
        if mismatch is not None and z is not None:
            depth, kind = mismatch.relabel(depth, z), "actual"
        return FusionResult(
            image=image,
            depth=depth,
            confidence=conf,
            n_frames=self._n,
            depth_unit="frame" if z is None else "um",
            depth_kind=kind,
        )
