"""Tiled fusion of one very large focus stack: :func:`fuse_tiled`.

The stack is cut into tiles; each tile is read from every frame with an overlap (margin) wide
enough that no coefficient of the fused pyramid under the tile's core sees the tile's edge,
fused with a :class:`~nanoro_optics.fusion.StackFuser`, and its core is written into the
output. The result is the untiled fusion with the same ``levels`` and rule options, bit for
bit: the fuser computes each coefficient from a bounded neighbourhood with a fixed order of
operations, uses no image-wide statistic (the activity floor depends only on the dtype), and
every tile starts on a multiple of ``2 ** (levels - 1)`` pixels so that its pyramid samples
are the whole image's samples.

Frames are read region by region from memory-mapped uncompressed TIFF (``tifffile.memmap``),
or through ``tifffile``'s zarr view of a compressed or tiled TIFF, or from any array with
numpy slicing (``numpy.memmap``, ``zarr.Array``); the output can be a memory-mapped TIFF, so a
stack larger than RAM is fused on one machine with memory bounded by the tile size. With a
dask client the tiles are spread over the workers.

Support of the pyramid (the margin)
-----------------------------------
With REDUCE/EXPAND on the 5-tap binomial kernel [1]_ a sample of level ``l`` is ``2**l``
pixels apart, REDUCE reaches 2 samples and EXPAND 1 sample of the coarser level, the activity
window ``window_px // 2`` samples and the inherited activity 1 sample of the finer level.
Chaining these (see :func:`tile_margin_px`) gives how far, in input pixels, a fused output
pixel (and the depth map, tracked on level 1 and upsampled bilinearly) can depend on the
input: about ``6.5 * 2**(levels - 1)`` pixels for 5 levels or more (830 for 8, 6650 for 11);
for fewer levels the depth map's smoothing dominates.
That is why the default number of levels here is capped at :data:`MAX_DEFAULT_LEVELS`.

References
----------
.. [1] P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code",
   IEEE Trans. Commun. 31(4), 532-540 (1983). https://doi.org/10.1109/TCOM.1983.1095851
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nanoro_optics._validation import check_int
from nanoro_optics.fusion.options import UNSET, FusionOptions, Unset, field_values, merge

from .batch import _limit_numba_threads

__all__ = ["MAX_DEFAULT_LEVELS", "TiledResult", "fuse_tiled", "tile_margin_px"]

#: truncation (in sigmas) of scipy.ndimage.gaussian_filter, which smooths the depth map
_GAUSS_TRUNCATE = 4.0
#: default pyramid levels of a tiled fusion are ``min(auto_levels(shape), MAX_DEFAULT_LEVELS)``
#: (the untiled fuser's own default for images whose short side is below 2048 px)
MAX_DEFAULT_LEVELS = 8


#: rows of frame 0 read at a time for its range (:func:`_frame0_span`)
_SPAN_ROWS = 256


def tile_margin_px(levels: int, *, window_px: int = 5) -> int:
    """Overlap (px) a tile needs so its core fuses exactly as in the whole image.

    Parameters
    ----------
    levels : int
        Pyramid levels, including the low-pass residual (1 to 32).
    window_px : int, optional
        The fusion rule's activity window (odd, 1 to 15).

    Returns
    -------
    int
        The largest distance, in input pixels along one axis, between an output pixel (fused
        image, depth or confidence) and an input pixel it depends on.

    Notes
    -----
    With ``s_l = 2**l`` and ``r = window_px // 2``: a Gaussian level reaches
    ``g_l = 2 (s_l - 1)``; a Laplacian level ``max(g_l, 2 s_l + g_{l+1})``; its activity adds
    the window ``r s_l`` and inherits the finer activity through ``[1, 2, 1]``
    (``+ s_{l-1}``); the coarsest level is the Gaussian residual with inherited activity
    only; collapsing adds ``2 s_l`` per EXPAND; the depth map (activity of level 1, smoothed
    by a Gaussian of ``SMOOTH_PX`` samples truncated at 4 sigma, upsampled bilinearly) adds
    ``s_1 (round(4 SMOOTH_PX) + 1)``. This is the fuser of :mod:`nanoro_optics.fusion` [1]_; the
    tests check that tiles with this margin reproduce the untiled fusion exactly and that a
    much smaller margin does not.

    References
    ----------
    .. [1] P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code",
       IEEE Trans. Commun. 31(4), 532-540 (1983). https://doi.org/10.1109/TCOM.1983.1095851

    Examples
    --------
    >>> tile_margin_px(8)  # the image's reach; with few levels the depth smoothing dominates
    828
    """
    n = check_int(levels, "levels", 1, 32)
    window = check_int(window_px, "window_px", 1, 15)
    r = window // 2

    def gauss(lev: int) -> int:
        return 2 * (2**lev - 1)

    act: list[int] = []
    fused: list[int] = []
    for lev in range(n):
        inherited = act[lev - 1] + 2 ** (lev - 1) if lev > 0 else 0
        if lev == n - 1:
            coef = gauss(lev)
            a = inherited
        else:
            coef = max(gauss(lev), 2 ** (lev + 1) + gauss(lev + 1))
            a = max(coef + r * 2**lev, inherited)
        act.append(a)
        fused.append(max(coef, a))
    reach = fused[n - 1]
    for lev in range(n - 2, -1, -1):
        reach = max(fused[lev], 2 ** (lev + 1) + reach)
    # the depth map: activity of level 1, smoothed by the tracker's Gaussian (scipy's
    # default truncation at 4 sigma), then upsampled bilinearly
    from nanoro_optics.fusion.depth import SMOOTH_PX

    depth_level = min(1, n - 1)
    smooth = int(_GAUSS_TRUNCATE * float(SMOOTH_PX) + 0.5)
    return int(max(reach, act[depth_level] + 2**depth_level * (smooth + 1)))


@dataclass(frozen=True)
class TiledResult:
    """The result of :func:`fuse_tiled`.

    Attributes
    ----------
    image : numpy.ndarray
        Fused image (a read-only memory map of ``image_path`` when one was given).
    depth, confidence : numpy.ndarray
        float32 ``(H, W)`` depth map and its confidence, as in
        :class:`~nanoro_optics.fusion.FusionResult` (memory maps when paths were given).
    n_frames : int
    depth_unit : str
        ``"frame"`` or ``"um"``.
    levels : int
        Pyramid levels used: ``fuse_stack(frames, levels=levels, **options)`` gives the same.
    margin_px : int
        Overlap read around every tile.
    tile_px : int
        Side of a tile's core.
    n_tiles : int
    seconds : float
        Wall time.
    """

    image: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    n_frames: int
    depth_unit: str
    levels: int
    margin_px: int
    tile_px: int
    n_tiles: int
    seconds: float


# --------------------------------------------------------------------------------------------
# reading regions of frames


class _Frames:
    """Regions of the frames of a stack, read without loading whole frames.

    ``source`` is a TIFF file holding the whole stack (its first series: frames along the
    leading axes), a folder or list of single-frame TIFF files, or an array ``(N, H, W[, C])``
    with numpy slicing. Picklable (a path source is reopened where it is read).
    """

    def __init__(self, source: Any) -> None:
        self.array: Any = None
        self.files: list[str] = []
        self.multi = False
        if hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__"):
            shape = tuple(int(n) for n in source.shape)
            if len(shape) not in (3, 4) or 0 in shape:
                raise ValueError(
                    f"source array must be (N, H, W) or (N, H, W, C), got shape {shape}"
                )
            self.array = source
            self.n_frames = shape[0]
            self.frame_shape = shape[1:]
            self.dtype = np.dtype(source.dtype)
            return
        from nanoro_optics.io import list_stack_files

        files = list_stack_files(source)
        for file in files:
            if file.suffix.lower() not in (".tif", ".tiff"):
                raise ValueError(
                    f"tiled fusion reads TIFF files (memory-mapped or through zarr), got {file}; "
                    "convert the frames to TIFF or pass an array"
                )
        self.files = [str(f) for f in files]
        shapes = [self._series_shape(f) for f in self.files]
        if len(self.files) == 1 and len(shapes[0][0]) > 0:
            outer, frame_shape, dtype = shapes[0]
            self.multi = True
            self.n_frames = int(np.prod(outer))
        else:
            for f, (outer, _, _) in zip(self.files, shapes, strict=True):
                if int(np.prod(outer)) != 1:
                    raise ValueError(
                        f"{f} holds {int(np.prod(outer))} frames; give one multi-frame TIFF "
                        "or a list of single-frame TIFFs"
                    )
            _, frame_shape, dtype = shapes[0]
            for f, (_, fs, dt) in zip(self.files, shapes, strict=True):
                if fs != frame_shape or dt != dtype:
                    raise ValueError(
                        f"{f} has shape {fs} and dtype {dt}, but {self.files[0]} has "
                        f"{frame_shape} and {dtype}; all frames of a stack must match"
                    )
            self.n_frames = len(self.files)
        self.frame_shape = frame_shape
        self.dtype = dtype

    @staticmethod
    def _series_shape(path: str) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype]:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape = series.axes, tuple(int(n) for n in series.shape)
                dtype = np.dtype(series.dtype)
        except Exception as exc:  # tifffile raises many types on damaged files
            raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        n_inner = 3 if axes.endswith("S") else 2
        if len(shape) < n_inner or "Y" not in axes[-n_inner:] or "X" not in axes[-n_inner:]:
            raise ValueError(f"cannot read {path} as frames: axes {axes!r}, shape {shape}")
        return shape[: len(shape) - n_inner], shape[len(shape) - n_inner :], dtype

    def region(self, k: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Frame ``k``, rows ``y0:y1`` and columns ``x0:x1``, as a new C-contiguous array."""
        if self.array is not None:
            return np.ascontiguousarray(np.asarray(self.array[k, y0:y1, x0:x1]))
        path = self.files[0] if self.multi else self.files[k]
        inner = len(self.frame_shape)
        return _read_tiff_region(path, k if self.multi else None, inner, y0, y1, x0, x1)


def _read_tiff_region(
    path: str, k: int | None, inner_ndim: int, y0: int, y1: int, x0: int, x1: int
) -> np.ndarray:
    """Rows ``y0:y1``, columns ``x0:x1`` of frame ``k`` (None: the file's only frame)."""
    import tifffile

    try:
        mm = tifffile.memmap(path, mode="r")
    except ValueError:  # compressed or not contiguous: read through zarr
        mm = None
    if mm is not None:
        if k is None:
            out = np.array(mm[y0:y1, x0:x1])
        else:
            out = np.array(mm.reshape((-1, *mm.shape[mm.ndim - inner_ndim :]))[k, y0:y1, x0:x1])
        # the map is closed here, so its pages do not stay in this process's RSS
        del mm
        return out
    import zarr

    with tifffile.imread(path, aszarr=True) as store:
        z: Any = zarr.open(store, mode="r")
        if k is None:
            return np.ascontiguousarray(z[y0:y1, x0:x1])
        idx = np.unravel_index(k, z.shape[: z.ndim - inner_ndim])
        key: list[Any] = [int(i) for i in idx]
        key += [slice(y0, y1), slice(x0, x1)]
        return np.ascontiguousarray(z[tuple(key)])


# --------------------------------------------------------------------------------------------
# tiles


def _tiles(h: int, w: int, tile: int, margin: int, align: int) -> Iterator[tuple[int, ...]]:
    """``(cy0, cy1, cx0, cx1, ry0, ry1, rx0, rx1)``: each core and the region read for it."""
    for cy0 in range(0, h, tile):
        cy1 = min(cy0 + tile, h)
        ry0 = max(0, cy0 - margin) // align * align
        ry1 = min(h, cy1 + margin)
        for cx0 in range(0, w, tile):
            cx1 = min(cx0 + tile, w)
            rx0 = max(0, cx0 - margin) // align * align
            rx1 = min(w, cx1 + margin)
            yield cy0, cy1, cx0, cx1, ry0, ry1, rx0, rx1


def _frame0_span(frames: _Frames) -> tuple[int, int, float] | None:
    """Frame 0's smallest and largest value and largest magnitude, read in strips of rows.

    What a fuser of the whole frames takes its working units from (wide integers, float
    frames far from 1): every tile's fuser takes them from here (``StackFuser._scale_as``).
    None for uint8 and uint16 frames, which are fused as they are.
    """
    dtype = frames.dtype
    if dtype in (np.uint8, np.uint16):
        return None
    h, w = frames.frame_shape[:2]
    lo: int | None = None
    hi: int | None = None
    top = 0.0
    for r0 in range(0, h, _SPAN_ROWS):
        strip = frames.region(0, r0, min(r0 + _SPAN_ROWS, h), 0, w)
        if dtype.kind == "f":
            # as the fuser sees it (float16 promoted); a non-finite pixel is the tile's error
            a = np.abs(strip.astype(np.promote_types(dtype, np.float32), copy=False))
            finite = a[np.isfinite(a)]
            top = max(top, float(finite.max()) if finite.size else 0.0)
        else:
            s_lo, s_hi = int(strip.min()), int(strip.max())
            lo = s_lo if lo is None else min(lo, s_lo)
            hi = s_hi if hi is None else max(hi, s_hi)
    return (0 if lo is None else lo, 0 if hi is None else hi, top)


def _fuse_tile(
    frames: _Frames,
    box: tuple[int, ...],
    z_um: Sequence[float] | None,
    options: FusionOptions,
    numba_threads: int | None,
    span: tuple[int, int, float] | None = None,
) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray, str]:
    from nanoro_optics.fusion import StackFuser

    _limit_numba_threads(numba_threads)
    cy0, cy1, cx0, cx1, ry0, ry1, rx0, rx1 = box
    fuser = StackFuser(options, z_um=z_um)
    if span is not None:  # the working units of the whole frames, not of this tile's
        fuser._scale_as(*span)
    for k in range(frames.n_frames):
        fuser.add(frames.region(k, ry0, ry1, rx0, rx1))
    res = fuser.result()
    core = (slice(cy0 - ry0, cy1 - ry0), slice(cx0 - rx0, cx1 - rx0))
    return (
        box,
        np.ascontiguousarray(res.image[core]),
        np.ascontiguousarray(res.depth[core]),
        np.ascontiguousarray(res.confidence[core]),
        res.depth_unit,
    )


class _Output:
    """One output array: in memory, or a memory-mapped TIFF opened only while a tile is written."""

    def __init__(self, path: Any, shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
        self.path: Path | None = None
        self.array: np.ndarray | None = None
        if path is None:
            self.array = np.empty(shape, dtype)
            return
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{name} must be a path, got {type(path).__name__} {path!r}")
        import tifffile

        p = Path(path)
        if p.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"{name} must be a .tif or .tiff file, got {p}")
        if not p.parent.is_dir():
            raise FileNotFoundError(f"cannot write {p}: folder {p.parent} does not exist")
        from nanoro_optics.io import OutputSet

        self.path = p
        self._output = OutputSet()  # moved into place by finish(), removed by discard()
        self._tmp = self._output.reserve(p)
        photometric = "rgb" if len(shape) == 3 and shape[2] in (3, 4) else "minisblack"
        mm = tifffile.memmap(self._tmp, shape=shape, dtype=dtype, photometric=photometric)
        mm.flush()
        del mm

    def write(self, cy0: int, cy1: int, cx0: int, cx1: int, data: np.ndarray) -> None:
        if self.array is not None:
            self.array[cy0:cy1, cx0:cx1] = data
            return
        import tifffile

        mm = tifffile.memmap(self._tmp, mode="r+")
        mm[cy0:cy1, cx0:cx1] = data
        mm.flush()
        del mm

    def read(self) -> np.ndarray:
        """Return what has been written so far (a copy in memory)."""
        if self.array is not None:
            return self.array.copy()
        import tifffile

        return np.array(tifffile.memmap(self._tmp, mode="r"))

    def finish(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        import tifffile

        assert self.path is not None
        self._output.commit()
        return tifffile.memmap(self.path, mode="r")

    def discard(self) -> None:
        if self.path is not None:
            self._output.discard()


def fuse_tiled(
    source: Any,
    options: FusionOptions | None = None,
    *,
    tile_px: int = 2048,
    image_path: str | os.PathLike[str] | None = None,
    depth_path: str | os.PathLike[str] | None = None,
    confidence_path: str | os.PathLike[str] | None = None,
    client: Any = None,
    numba_threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    sharpness: int | Unset | None = UNSET,
    window_px: int | Unset = UNSET,
    coarse_window_px: int | Unset | None = UNSET,
    inherit: float | Unset = UNSET,
    focus_levels: int | Unset = UNSET,
    noise_floor: float | Unset = UNSET,
    levels: int | Unset | None = UNSET,
    align: bool | Unset = UNSET,
    reference: str | Unset = UNSET,
    crop: bool | Unset = UNSET,
    bit_depth: int | Unset | None = UNSET,
    noise_dn: float | Sequence[float] | Unset | None = UNSET,
    guide_channel: int | Unset | None = UNSET,
    fill_depth: bool | Unset = UNSET,
    min_confidence: float | Unset = UNSET,
    z_step_um: float | Unset | None = UNSET,
    z_um: Sequence[float] | Unset | None = UNSET,
    index_mismatch: Any = UNSET,
    halo: Any = UNSET,
    halo_blur_px: Any = UNSET,
) -> TiledResult:
    """Fuse one large focus stack tile by tile; equal to the untiled fusion.

    Parameters
    ----------
    source : path, list of paths, or array
        A TIFF holding the whole stack (multi-page or OME-TIFF; memory-mapped when
        uncompressed, read strip by strip through zarr otherwise), a folder or list of
        single-frame TIFFs, or an array ``(N, H, W[, C])`` with numpy slicing
        (``numpy.memmap``, ``zarr.Array``).
    options : FusionOptions, optional
        The fusion's settings (:class:`~nanoro_optics.fusion.FusionOptions`), as for
        :func:`~nanoro_optics.fusion.fuse_stack`; the keyword-only fields below override
        single ones. Differences here: ``levels`` defaults to ``min(auto_levels((H, W)),
        MAX_DEFAULT_LEVELS)`` (the untiled fuser's default for images up to 2047 px on the
        short side; the overlap grows as ``2**levels``, :func:`tile_margin_px`);
        ``fill_depth`` defaults to False unless ``options`` or the keyword sets it (the
        fill is a pass over the whole depth map, so the tiles leave low-confidence depth
        NaN, and ``fill_depth=True`` fills the assembled map at the end, in memory, at full
        size); alignment, crop and the index-mismatch correction are refused (alignment is
        estimated from whole frames: align the frames first).
    tile_px : int, optional
        Side of a tile's core, 16 px or more (the tile read is ``tile_px + 2 margin``).
    image_path, depth_path, confidence_path : path, optional
        Write these outputs into memory-mapped TIFFs (moved into place when complete) instead
        of holding them in memory; the result then holds read-only memory maps.
    client : None, str or distributed.Client, optional
        Spread the tiles over a dask cluster (an address or a Client; ``source`` must then be
        a path every worker can read). None fuses the tiles in this process.
    numba_threads : int, optional
        numba threads per tile (default: numba's setting in-process, 1 on a cluster).
    progress : callable, optional
        Called as ``progress(tiles_done, n_tiles)``.
    sharpness, window_px, ..., index_mismatch, halo, halo_blur_px : keyword-only
        Override the field of ``options`` of the same name (see above). The halo
        correction (``halo``, :mod:`nanoro_optics.fusion.halo`) cannot be applied to tiled
        fusion (each tile is fused by a streaming fuser): ``halo="auto"`` is refused.

    Returns
    -------
    TiledResult

    Raises
    ------
    ValueError, TypeError
        Bad arguments or unreadable frames (the message names the file).
    ConnectionError
        If a scheduler address cannot be reached.

    Notes
    -----
    Alignment (``align=True`` of :func:`~nanoro_optics.fusion.fuse_stack`) estimates one
    transform per frame from the whole frame, so it is not available tile by tile: align the
    frames first. Equality with :func:`~nanoro_optics.fusion.fuse_stack` holds for the same
    ``levels`` and rule options (and ``fill_depth=False``, the default here); the tests
    check it bit for bit for integer and float frames. The noise of every channel is
    measured once, on the rows of the first frame the untiled fuser reads, and given to
    every tile.

    Examples
    --------
    >>> import numpy as np
    >>> from nanoro_optics.fusion import fuse_stack, synthetic_stack
    >>> frames = synthetic_stack((96, 80), 3, seed=2).frames
    >>> tiled = fuse_tiled(frames, levels=3, tile_px=32)
    >>> tiled.n_tiles, tiled.margin_px == tile_margin_px(3)
    (9, True)
    >>> bool(np.array_equal(tiled.image, fuse_stack(frames, levels=3).image))
    True
    """
    from nanoro_optics.fusion.pyramid import auto_levels

    t0 = time.perf_counter()
    fill_given = (options is not None) or fill_depth is not UNSET
    opts = merge(options, field_values(locals()))
    if opts.align or opts.crop or opts.reference != "first":
        raise ValueError(
            "fuse_tiled cannot align frames (alignment is estimated from whole frames); "
            "align the stack first"
        )
    if opts.halo != "off":
        raise ValueError(
            f"fuse_tiled cannot apply halo={opts.halo!r}: each tile is fused by a streaming "
            "fuser; give halo='off', or fuse the stack with fuse_stack or `nanoro-optics fuse`"
        )
    if opts.index_mismatch is not None:
        raise ValueError(
            "fuse_tiled does not correct the depth for index mismatch: relabel the assembled "
            "depth map with IndexMismatch.relabel"
        )
    frames = _Frames(source)
    h, w = frames.frame_shape[:2]
    n_levels = min(auto_levels((h, w)), MAX_DEFAULT_LEVELS) if opts.levels is None else opts.levels
    tile = check_int(tile_px, "tile_px", 16)
    if numba_threads is not None:
        numba_threads = check_int(numba_threads, "numba_threads", 1)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, got {type(progress).__name__}")
    z: list[float] | None = None
    if opts.z_um is not None:
        z = list(opts.z_um)
    elif opts.z_step_um is not None:
        z = [k * opts.z_step_um for k in range(frames.n_frames)]
    if z is not None and len(z) != frames.n_frames:
        raise ValueError(f"z_um has {len(z)} positions but the stack has {frames.n_frames} frames")
    fill = opts.fill_depth if fill_given else False
    # each tile: the same rule, levels and noise, no fill, z given with the tile
    tile_opts = opts.replace(levels=n_levels, fill_depth=False, z_um=None, z_step_um=None)
    if tile_opts.noise_dn is None:
        # the untiled fuser measures the noise on rows of the whole first two frames: so
        # must every tile (the same rows, read here once)
        from nanoro_optics.fusion.noise import noise_rows, noise_sigma

        def rows_of(k: int) -> np.ndarray:
            rows = np.stack([frames.region(k, r, r + 1, 0, w)[0] for r in noise_rows(h)])
            if rows.dtype.kind == "f":  # as the fuser sees them
                rows = rows.astype(np.float32)
            return rows.reshape(len(rows), w, -1)

        second = rows_of(1) if frames.n_frames > 1 else None
        sigma = noise_sigma(rows_of(0), second)
        tile_opts = tile_opts.replace(noise_dn=tuple(float(v) for v in np.ravel(sigma)))
    # the widest window any level uses
    window = tile_opts.window_px
    window = max(window, int(tile_opts.coarse_window_px or window))
    margin = tile_margin_px(n_levels, window_px=window)
    boxes = list(_tiles(h, w, tile, margin, 2 ** (n_levels - 1)))

    out_dtype = frames.dtype  # the fuser returns the frames' dtype
    outputs = {
        "image": _Output(image_path, frames.frame_shape, out_dtype, "image_path"),
        "depth": _Output(depth_path, (h, w), np.dtype(np.float32), "depth_path"),
        "confidence": _Output(confidence_path, (h, w), np.dtype(np.float32), "confidence_path"),
    }
    unit = "um" if z is not None else "frame"
    try:
        done = 0

        def store(result: tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray, str]) -> None:
            nonlocal done
            box, img, dep, conf, _ = result
            cy0, cy1, cx0, cx1 = box[:4]
            outputs["image"].write(cy0, cy1, cx0, cx1, img)
            outputs["depth"].write(cy0, cy1, cx0, cx1, dep)
            outputs["confidence"].write(cy0, cy1, cx0, cx1, conf)
            done += 1
            if progress is not None:
                progress(done, len(boxes))

        span = _frame0_span(frames)
        if client is None:
            for box in boxes:
                store(_fuse_tile(frames, box, z, tile_opts, numba_threads, span))
        else:
            _run_on_cluster(client, frames, boxes, z, tile_opts, numba_threads, store, span)
        if fill:  # the assembled map, filled as one (the tiles left their holes NaN)
            from nanoro_optics.fusion.depth import fill_depth as fill_holes

            dep, conf = outputs["depth"], outputs["confidence"]
            full_dep = dep.read()
            known = np.isfinite(full_dep)
            if known.any():
                dep.write(0, h, 0, w, fill_holes(full_dep, np.where(known, conf.read(), 0.0)))
        arrays = {k: o.finish() for k, o in outputs.items()}
    except BaseException:
        for o in outputs.values():
            o.discard()
        raise
    return TiledResult(
        image=arrays["image"],
        depth=arrays["depth"],
        confidence=arrays["confidence"],
        n_frames=frames.n_frames,
        depth_unit=unit,
        levels=n_levels,
        margin_px=margin,
        tile_px=tile,
        n_tiles=len(boxes),
        seconds=time.perf_counter() - t0,
    )


def _run_on_cluster(
    client: Any,
    frames: _Frames,
    boxes: list[tuple[int, ...]],
    z: Sequence[float] | None,
    options: FusionOptions,
    numba_threads: int | None,
    store: Callable[[Any], None],
    span: tuple[int, int, float] | None,
) -> None:
    from . import require_distributed
    from .batch import connect

    distributed = require_distributed()
    if frames.array is not None:
        raise TypeError(
            "with a dask client, source must be a TIFF path the workers can read, not an "
            "in-memory array (it would be copied into every task)"
        )
    dask_client, owned = connect(client)
    try:
        threads = 1 if numba_threads is None else numba_threads
        futures = [
            dask_client.submit(
                _fuse_tile, frames, box, z, options, threads, span, pure=False, retries=2
            )
            for box in boxes
        ]
        try:
            for fut in distributed.as_completed(futures):
                store(fut.result())
                fut.release()
        except BaseException:
            dask_client.cancel(futures)
            raise
    finally:
        if owned:
            from .batch import _close

            _close(dask_client)
