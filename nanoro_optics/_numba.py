"""The package's one numba policy.

Kernel modules import :func:`njit` from here instead of from numba, so numba is imported
only when a kernel module is first imported (never by ``import nanoro_optics``), and every
kernel is compiled with ``cache=True`` so the compile cost is paid once per machine.
Kernel modules may ``from numba import prange`` at their top: they are themselves imported
only lazily, from inside the public functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Options shared by every kernel. ``fastmath`` stays off: the kernels must match their slow
#: numpy references to tight tolerances, and reassociation would break exact integer paths.
NJIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": False}


def njit(*, parallel: bool = False, **overrides: Any) -> Callable[[F], F]:
    """Return numba's ``njit`` decorator with the package policy.

    Parameters
    ----------
    parallel : bool, optional
        Compile with ``parallel=True`` (use ``numba.prange`` in the kernel).
    **overrides
        Further numba options; they override :data:`NJIT_OPTIONS`.
    """
    import numba

    options = {**NJIT_OPTIONS, "parallel": parallel, **overrides}
    return numba.njit(**options)  # type: ignore[no-any-return,unused-ignore]
