"""numba device functions the fusion kernel modules share (private; imported lazily).

The mirrored border index (``_refl``) of every level of the pyramids, and the 16-bit activity
codes (``_encode_row``, ``_log_code``) that the fusion kernel (:mod:`._blend_kernels`) and the
depth tracker's kernels (:mod:`._depth_kernels`) both read and write. numba compiles a call
to them into the calling kernel wherever that kernel is defined. Also the decorator of every
fusion kernel (:func:`kernel`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from nanoro_optics._numba import njit

from ._codes import CODE_MAX, CODE_ONE, CODE_UNKNOWN, SUM_CODE_SHIFT


def kernel(*, parallel: bool = False, inline: bool = False) -> Any:
    """Return the decorator of the fusion kernels: the package's ``njit`` with numpy's errors.

    numba's default ``error_model="python"`` tests every float division's divisor for zero
    to raise ``ZeroDivisionError``; that branch keeps the inner loops from vectorising (it
    halved the time of ``StackFuser.add``, ``benchmarks/bench_add_profile.py``). With
    ``error_model="numpy"`` a division by zero gives inf or NaN instead; no divisor in the
    fusion kernels can be zero, so the results are the same bit for bit. ``inline``: the
    function is inlined into its callers by numba itself (a per-pixel step of a loop that
    must vectorise).
    """
    if inline:
        return njit(parallel=parallel, error_model="numpy", inline="always")
    return njit(parallel=parallel, error_model="numpy")


@kernel()
def _refl(i, n):
    """Mirror index ``i`` into ``[0, n)`` without repeating the edge (reflect-101)."""
    if n == 1:
        return 0
    while i < 0 or i >= n:
        if i < 0:
            i = -i
        if i >= n:
            i = 2 * n - 2 - i
    return i


def _sum_of_code_typer(typingctx: Any, code: Any) -> Any:
    """Return the sum a soft-rule sum code stands for (float32; see :func:`_code_typer`).

    In 32-bit integer lanes: the code widened, shifted into the exponent and mantissa,
    offset by the bits of 1 and read as a float32, all in registers (numba's own uint32
    arithmetic runs on 64-bit lanes, half as many a vector).
    """
    if code == types.float32:
        # a map of float32 norms (frames whose activities are not coded): the kernels'
        # source is typed for it too, on a path a coded map never takes
        return types.float32(code), lambda context, builder, signature, args: args[0]
    if not isinstance(code, types.Integer) or code.signed:  # type: ignore[attr-defined]
        return None
    bits = code.bitwidth  # type: ignore[attr-defined]

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        if bits < 32:
            u = builder.zext(args[0], i32)
        else:
            u = builder.trunc(args[0], i32) if bits > 32 else args[0]
        u = builder.shl(u, ir.Constant(i32, SUM_CODE_SHIFT))
        u = builder.add(u, ir.Constant(i32, CODE_ONE))
        return builder.bitcast(u, ir.FloatType())

    return types.float32(code), codegen


def _code_typer(shift: int, name: str) -> Any:
    """Return the typer of an intrinsic: the uint16 code of a float32 ratio >= 1.

    ``(bits(ratio) - bits(1) + 2**(shift - 1)) >> shift``, at most :data:`CODE_MAX`, in
    32-bit integer lanes (round to the nearest step): shift 12 for activity ratios (5 bits
    of exponent, 11 of mantissa), :data:`SUM_CODE_SHIFT` for the soft rule's sums of fourth
    powers ``sum (a_k / floor) ** 4`` (7 and 9: the relative precision the activity codes
    give their fourth root). Infinity takes the largest code; ratios below 1 are the
    caller's to avoid.
    """

    def typer(typingctx: Any, ratio: Any) -> Any:
        if ratio != types.float32:
            return None

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            i32 = ir.IntType(32)
            u = builder.bitcast(args[0], i32)
            u = builder.add(u, ir.Constant(i32, (1 << (shift - 1)) - CODE_ONE))
            u = builder.lshr(u, ir.Constant(i32, shift))
            top = ir.Constant(i32, CODE_MAX)
            u = builder.select(builder.icmp_unsigned("<", u, top), u, top)
            return builder.trunc(u, ir.IntType(16))

        return types.uint16(types.float32), codegen

    typer.__name__ = typer.__qualname__ = name
    return typer


#: ``_sum_of_code(code)``, ``_code_of_sum(total)`` and ``_code_of_ratio(ratio)``, callable
#: in the kernels
_sum_of_code: Any = intrinsic(_sum_of_code_typer)
_code_of_sum: Any = intrinsic(_code_typer(SUM_CODE_SHIFT, "_code_of_sum"))
_code_of_ratio: Any = intrinsic(_code_typer(12, "_code_of_ratio"))


# ---------------------------------------------------------------------------------------
# 16-bit activity codes
# ---------------------------------------------------------------------------------------
# (the format and its constants are described in the numba-free ``_codes``, so that
# allocating a fuser's maps does not import numba)


@kernel()
def _encode_row(a, inv_floor, keys):
    """Codes of the activities ``a`` (floor ``1 / inv_floor``), as float32 into ``keys``.

    Values below the floor take the floor's code (0); the fuser's activities never are
    (they include the floor).
    """
    one = np.float32(1.0)
    for j in range(a.shape[0]):
        keys[j] = np.float32(_code_of_ratio(max(a[j] * inv_floor, one)))


@kernel()
def _log_code(code):
    """Natural log of ``a / floor`` for a code of :func:`_encode_row` (NaN if unknown)."""
    c = np.uint32(code)
    if c >= CODE_UNKNOWN:
        return np.float32(np.nan)
    e = np.float32(c >> np.uint32(11))
    m = np.float32(c & np.uint32(0x7FF)) * np.float32(1.0 / 2048.0)
    return e * np.float32(np.log(2.0)) + np.log1p(m)


@kernel()
def _range_row(plane, lo, hi, r, first):
    """Fold row ``r`` of a planar frame into the per-pixel running minimum and maximum."""
    nc, _, w = plane.shape
    for c in range(nc):
        if first:
            for j in range(w):
                lo[c, r, j] = plane[c, r, j]
                hi[c, r, j] = plane[c, r, j]
        else:
            for j in range(w):
                v = plane[c, r, j]
                lo[c, r, j] = min(lo[c, r, j], v)
                hi[c, r, j] = max(hi[c, r, j], v)
