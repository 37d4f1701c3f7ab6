"""The 16-bit activity codes' constants (private; numba-free, see ``_kernel_common``).

An activity ``a`` at or above a floor ``f`` is stored in 16 bits as the float32 bit pattern
of ``x = a / f`` (in ``[1, 2**32)``) less that of 1, rounded to 11 mantissa bits: 5 bits of
exponent and 11 of mantissa, relative step ``2**-11``, rounding error at most ``2**-12``
(2.4e-4). Codes are monotonic in ``a``, so comparisons need no decoding. They are here, not
in the kernel module, so that a fuser allocates its maps without importing numba: the CLI
then maps the fuser's memory in while its decoding thread imports numba.
"""

from __future__ import annotations

#: float32 bit pattern of 1.0, the code 0
CODE_ONE = 0x3F800000
#: the largest code of a value; :data:`CODE_UNKNOWN` marks a value not (yet) known
CODE_MAX = 65534
CODE_UNKNOWN = 65535
#: bits a soft-rule sum code (:func:`~nanoro_optics.fusion._kernel_common._code_typer`)
#: is shifted by: 7 bits of exponent and 9 of mantissa, for sums of fourth powers of activity
#: ratios in ``[1, 2**128)``, relative step ``2**-9`` (a fourth root's ``2**-11``)
SUM_CODE_SHIFT = 14
