"""Tell the user when the fusion kernels compile for the first time (it takes a while).

numba compiles the fusion kernels on their first call and caches the machine code on disk
(``cache=True``), so only the first run on a machine (or after an upgrade) pays for it.
:func:`announce_compile` looks for the cache cheaply, without compiling or loading anything,
and prints one line on stderr if the kernels a command needs are not cached yet.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["ALIGN_KERNELS", "DEPTH_KERNELS", "FUSION_KERNELS", "Z_KERNELS", "announce_compile"]

#: kernels of :mod:`nanoro_optics.fusion._kernels` every fusion calls, with a rough compile
#: time each on one core of a 2-core machine (``benchmarks/bench_import.py`` measures the total)
FUSION_KERNELS: dict[str, float] = {"fuse_level": 10.0, "reduce_level": 2.0, "expand_add": 2.0}
#: ... those the depth map adds
DEPTH_KERNELS: dict[str, float] = {"depth_update": 1.0, "depth_estimate": 1.0}
#: ... a depth map in um adds (frame index to z, :mod:`nanoro_optics.fusion._zmap_kernels`)
Z_KERNELS: dict[str, float] = {"index_to_z": 0.5}
#: ... and those frame alignment adds
ALIGN_KERNELS: dict[str, float] = {
    "luminance_block_mean": 1.0,
    "spline_coefficients": 2.0,
    "warp_cubic_frame": 3.0,
}


def announce_compile(
    *, depth: bool, align: bool, depth_um: bool = False, stream: TextIO | None = None
) -> float:
    """Print a notice on ``stream`` (default stderr) if the fusion kernels must compile now.

    Parameters
    ----------
    depth, align : bool, keyword-only
        Whether the command tracks depth and aligns frames (each needs more kernels).
    depth_um : bool, optional
        Whether the depth map is given in um (z positions known): one more kernel.
    stream : text stream, optional
        Where the notice goes.

    Returns
    -------
    float
        The estimated compile time in s (0 when every kernel needed is cached: nothing is
        printed then).
    """
    from .._numba import uncached_kernels
    from ..fusion import _kernels, _zmap_kernels

    needed = dict(FUSION_KERNELS)
    if depth:
        needed.update(DEPTH_KERNELS)
    if align:
        needed.update(ALIGN_KERNELS)
    missing = uncached_kernels(_kernels, needed)
    if depth and depth_um:
        needed.update(Z_KERNELS)
        missing += uncached_kernels(_zmap_kernels, Z_KERNELS)
    if not missing:
        return 0.0
    # integer frames compile each kernel twice (the finest level in the frames' dtype, the
    # coarser ones in float32), so the estimate doubles the per-kernel figures
    seconds = 2.0 * sum(needed[name] for name in missing)
    print(
        f"compiling fast kernels (first run only, about {seconds:.0f} s)...",
        file=sys.stderr if stream is None else stream,
        flush=True,
    )
    return seconds
