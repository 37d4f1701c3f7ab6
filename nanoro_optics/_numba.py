"""The package's one numba policy.

Kernel modules import :func:`njit` from here instead of from numba, so numba is imported
only when a kernel module is first imported (never by ``import nanoro_optics``), and every
kernel is compiled with ``cache=True`` so the compile cost is paid once per machine.
Kernel modules may ``from numba import prange`` at their top: they are themselves imported
only lazily, from inside the public functions that need them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
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


def max_threads() -> int:
    """Return numba's thread count (``NUMBA_NUM_THREADS``, the most ``set_num_threads`` allows)."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` numba threads in this thread, then restore its setting.

    numba's setting is thread-local: other threads keep theirs. Its parallel kernels run as
    OpenMP teams whose threads spin while they wait for each other, so next to another busy
    thread (a decoder, an acquisition) a team as large as the machine loses more to the
    wait than it gains.
    """
    import numba

    prev = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def uncached_kernels(module: ModuleType, names: Iterable[str] | None = None) -> list[str]:
    """Return the names of ``module``'s kernels that numba's on-disk cache does not hold.

    A kernel counts as cached when its cache index (the ``.nbi`` file numba keeps next to the
    compiled code, in the folder numba's own cache locator chose: ``NUMBA_CACHE_DIR`` when
    set, else the module's ``__pycache__``, else the user-wide cache) exists and is not older
    than the module's source. This is cheap (one ``stat`` per kernel, nothing compiled or
    unpickled), and it answers "is this the first run?": a cached kernel may still compile a
    specialisation for new argument types, which takes seconds, not the first run's minute.

    Parameters
    ----------
    module : module
        A kernel module (already imported: importing one compiles nothing).
    names : iterable of str, optional
        Check only these kernels (those a command calls); names the module does not define
        are ignored. Default: every cached kernel of the module.

    Returns
    -------
    list of str
        Names of the kernels without a usable cache index, in definition order; empty when
        every kernel is cached or the module has no cached kernels.

    Examples
    --------
    >>> import types
    >>> uncached_kernels(types.ModuleType("no_kernels"))
    []
    """
    if not isinstance(module, ModuleType):
        raise TypeError(f"module must be a module, got {type(module).__name__} {module!r}")
    source = getattr(module, "__file__", None)
    try:
        source_mtime = os.stat(source).st_mtime if source else 0.0
    except OSError:
        source_mtime = 0.0
    wanted = None if names is None else set(names)
    missing = []
    for name, obj in vars(module).items():
        if wanted is not None and name not in wanted:
            continue
        cache_file = getattr(getattr(obj, "_cache", None), "_cache_file", None)
        index = getattr(cache_file, "_index_path", None)
        if not isinstance(index, str):  # not a cached numba dispatcher
            continue
        try:
            fresh = os.stat(index).st_mtime >= source_mtime
        except OSError:
            fresh = False
        if not fresh:
            missing.append(name)
    return missing
