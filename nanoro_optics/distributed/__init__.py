"""Scale-out focus fusion on dask.distributed (extra ``nanoro_optics[dask]``).

:func:`fuse_many` fuses a batch of focus stacks, one task per stack, on a local or remote dask
cluster; results are written atomically and a rerun resumes an interrupted batch.
:func:`fuse_tiled` fuses one very large stack tile by tile (from memory-mapped TIFF or zarr),
with overlaps wide enough that the result equals the untiled fusion.

Importing this package does not import dask; dask is imported when a function needs it and a
clear :class:`ImportError` says how to install it when it is missing.

Public names
------------
fuse_many, BatchReport, StackRecord   batch fusion (:mod:`.batch`)
fuse_tiled, TiledResult, tile_margin_px   tiled fusion of one stack (:mod:`.tiled`)
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_exports

__all__ = [
    "BatchReport",
    "StackRecord",
    "TiledResult",
    "fuse_many",
    "fuse_tiled",
    "tile_margin_px",
]

_EXPORTS: dict[str, str] = {
    "fuse_many": "batch",
    "BatchReport": "batch",
    "StackRecord": "batch",
    "fuse_tiled": "tiled",
    "TiledResult": "tiled",
    "tile_margin_px": "tiled",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


def require_distributed() -> Any:
    """Import and return :mod:`distributed`, or raise an ImportError saying how to install it."""
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the test environment has the extra
        raise ImportError(
            'nanoro_optics.distributed needs dask.distributed: pip install "nanoro_optics[dask]"'
        ) from exc
    return distributed
