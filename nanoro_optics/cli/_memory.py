"""Hand freed frame-sized buffers back to the system at once (the CLI's own process).

glibc's ``malloc`` serves a large request with its own memory mapping, unmapped when freed,
but raises that threshold (up to 32 MiB) each time such a block is freed [1]_. After the
fuser's work buffers go, frame-sized buffers then come from heaps that keep their pages, per
thread: on a 12 MP x 20 stack the CLI's pass over the files for their range peaked at 465 MB
instead of 390 MB. Fixing the threshold keeps every array above it in its own mapping.
Elsewhere than glibc this does nothing. The setting stays for the process, and makes numpy's
allocations above it map fresh pages each time (the test suite's fusion tests ran 20 %
slower with it), so ``fuse`` sets it only for large frames, once it has fused them.

References
----------
.. [1] mallopt(3), ``M_MMAP_THRESHOLD``, Linux man-pages 6.9 (2024).
   https://man7.org/linux/man-pages/man3/mallopt.3.html
"""

from __future__ import annotations

import ctypes
import sys

#: ``M_MMAP_THRESHOLD`` of glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
#: blocks from this size up get their own mapping (glibc's default before it adapts: 128 KiB)
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes``; say whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc, or no C library to ask
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes)))
