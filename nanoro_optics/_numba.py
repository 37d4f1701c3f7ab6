"""The package's one numba policy, and its one policy for the threads that fuse.

Kernel modules import :func:`njit` from here instead of from numba, so numba is imported
only when a kernel module is first imported (never by ``import nanoro_optics``), and every
kernel is compiled with ``cache=True`` so the compile cost is paid once per machine.
Kernel modules may ``from numba import prange`` at their top: they are themselves imported
only lazily, from inside the public functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Options shared by every kernel. ``fastmath`` stays off: the kernels must match their slow
#: numpy references to tight tolerances, and reassociation would break exact integer paths.
NJIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": False}


def njit(*, parallel: bool = False, **overrides: Any) -> Callable[[F], F]:
    """Return numba's ``njit`` decorator with the package policy.

    The on-disk cache of every kernel made here goes stale when any of the package's kernel
    sources changes (:func:`_stamp_kernel_caches`), not only the kernel's own module.

    Parameters
    ----------
    parallel : bool, optional
        Compile with ``parallel=True`` (use ``numba.prange`` in the kernel).
    **overrides
        Further numba options; they override :data:`NJIT_OPTIONS`.
    """
    import numba

    _stamp_kernel_caches()
    options = {**NJIT_OPTIONS, "parallel": parallel, **overrides}
    return numba.njit(**options)  # type: ignore[no-any-return,unused-ignore]


#: the package's folder: kernels defined under it get the package-wide cache stamp
_PACKAGE_DIR = Path(__file__).resolve().parent


def _kernel_sources() -> tuple[Path, ...]:
    """Return the package's kernel sources: every ``*_kernels.py`` and what they import.

    A kernel's machine code also holds the helpers it calls from sibling kernel modules
    (inlined or linked) and the constants it reads (``fusion/_codes.py``), frozen at compile
    time; the kernel modules import nothing else of the package (a test checks this).
    """
    return _sources_under(_PACKAGE_DIR)


@lru_cache(maxsize=4)
def _sources_under(root: Path) -> tuple[Path, ...]:
    # (found once per process: every kernel's cache asks for the stamp)
    names = ("_kernel_common.py", "_codes.py")
    return tuple(
        sorted(p for p in root.rglob("*.py") if p.name.endswith("_kernels.py") or p.name in names)
    )


def _kernel_digest() -> bytes:
    """SHA-256 of the package's kernel sources (their paths and contents) and the options."""
    stats = []
    for path in _kernel_sources():
        st = path.stat()
        stats.append((str(path), st.st_mtime_ns, st.st_size))
    return _digest_of(tuple(stats), repr(sorted(NJIT_OPTIONS.items())))


@lru_cache(maxsize=8)
def _digest_of(stats: tuple[tuple[str, int, int], ...], options: str) -> bytes:
    # keyed by the files' times and sizes: a file changed while the process runs is read again
    h = hashlib.sha256(options.encode())
    for name, _, _ in stats:
        path = Path(name)
        h.update(path.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.digest()


_STAMPED = False
_STAMP_LOCK = threading.Lock()


def _stamp_kernel_caches() -> None:
    """Make numba's cache of a package kernel stale whenever any kernel source changes.

    numba stamps a cached kernel with its own source file only: a kernel whose helper in
    another module changed (``_kernel_common.py``, a sibling ``*_kernels.py``, a constant in
    ``_codes.py``) would be loaded from the cache as it was compiled before, silently
    running the old code. This puts cache locators in front of numba's own that, for
    functions defined in this package only, add :func:`_kernel_digest` to the stamp: any
    change to the kernel sources (or :data:`NJIT_OPTIONS`) recompiles every kernel once.
    The cache files stay where numba puts them. Idempotent; a numba without these
    locator classes keeps its own stamps (a test fails there rather than the kernels).
    """
    global _STAMPED
    with _STAMP_LOCK:
        if _STAMPED:
            return
        _STAMPED = True
        from numba.core import caching

        impl = getattr(caching, "CacheImpl", None)
        bases = [
            getattr(caching, name, None)
            for name in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
        ]
        if impl is None or not hasattr(impl, "_locator_classes") or None in bases:
            return
        impl._locator_classes[:0] = [_stamped_locator(base) for base in bases if base]


def _stamped_locator(base: type) -> type:
    """Return a subclass of the numba cache locator ``base`` with the package-wide stamp."""

    class Stamped(base):  # type: ignore[valid-type,misc,unused-ignore]
        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            try:
                Path(py_file).resolve().relative_to(_PACKAGE_DIR)
            except (OSError, ValueError):
                return None  # not a kernel of this package: numba's own locators
            return super().from_function(py_func, py_file)

        def get_source_stamp(self) -> Any:
            return (super().get_source_stamp(), _kernel_digest())

    Stamped.__name__ = Stamped.__qualname__ = f"PackageStamped{base.__name__}"
    return Stamped


def max_threads() -> int:
    """Return numba's thread count (``NUMBA_NUM_THREADS``, the most ``set_num_threads`` allows)."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


def fusion_threads(*, busy: int = 0, limit: int | None = None) -> int:
    """Return how many numba threads a fusion step takes: the one thread-count policy.

    Every front end asks here (the CLI while its decoder runs, ``LiveFusion`` while the
    MDA acquires and after it, the batch and tiled workers), so the rule lives in one place:
    all of numba's threads (:func:`max_threads`) less the ``busy`` threads that keep a core
    of their own meanwhile (a decoder, an acquisition loop), never fewer than one and never
    more than ``limit``. A parallel kernel runs as a team whose threads spin while they
    wait for each other, so a team that counts on a core another thread holds loses more
    to the wait than the extra thread gains (see :func:`threads`).

    Parameters
    ----------
    busy : int, keyword-only
        Threads outside numba that stay busy while the fusion runs, 0 or more.
    limit : int or None, keyword-only
        Upper bound (a user's or a worker's share of the machine), 1 or more; None: none.

    Returns
    -------
    int
        From 1 to :func:`max_threads`.

    Examples
    --------
    >>> 1 <= fusion_threads(busy=1) <= fusion_threads() == max_threads()
    True
    >>> fusion_threads(limit=1)
    1
    """
    from ._validation import check_int

    busy = check_int(busy, "busy", 0)
    most = max_threads()
    if limit is not None:
        most = min(most, check_int(limit, "limit", 1))
    return max(1, most - busy)


#: how many steps of niceness a front end's own fusing and finishing threads yield to the
#: acquisition by default (``LiveFusion(fusion_nice=)``; Linux)
DEFAULT_FUSION_NICE = 10


def lower_this_thread(nice: int) -> bool:
    """Lower the calling thread's scheduling priority by ``nice`` steps (Linux only).

    A live front end fuses in threads of its own beside the acquisition's. On a machine
    with as many busy threads as cores, a thread waking from a camera exposure waits for
    a core while two fusion threads run; a few milliseconds a frame then add up to most
    of the wall-time overhead. Lowered by ``nice`` (Linux's per-thread nice value), the
    fusion threads still take every core the acquisition leaves idle, but the
    acquisition's thread gets a core as soon as it wakes. The niceness is capped at 19;
    other systems have no per-thread niceness in Python and are left as they are.

    Parameters
    ----------
    nice : int
        Steps to add to the thread's niceness, 0 to 19 (0: nothing is done).

    Returns
    -------
    bool
        Whether the thread's priority was changed.
    """
    from ._validation import check_int

    nice = check_int(nice, "nice", 0, 19)
    if nice == 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()  # Linux: a thread id names one thread
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + nice))
    except OSError:  # e.g. a sandbox that refuses it: run at the same priority
        return False
    return True


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


#: what a front end tells the user when :func:`on_first_compile` fires
COMPILE_NOTICE = (
    "compiling fast kernels (first run only: numba caches them; this takes a minute or so)..."
)


def on_first_compile(callback: Callable[[], Any]) -> Callable[[], None]:
    """Call ``callback()`` once, when numba next compiles a kernel; return the un-register call.

    numba raises its ``"numba:compile"`` event only when a kernel is really compiled, not when
    it is loaded from the on-disk cache, so a front end can tell the user about the first run
    on a machine (a minute or so) without keeping a table of the kernels it needs. The event
    is global: a compile in any thread counts. ``callback`` runs in the compiling thread,
    before the compile; it must be quick and thread-safe (a GUI posts a message to its own
    thread).

    Parameters
    ----------
    callback : callable
        Called with no arguments, at most once.

    Returns
    -------
    callable
        Stops listening (idempotent); call it when the work is done.
    """
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    from numba.core import event

    lock = threading.Lock()
    state = {"said": False, "registered": True}

    class _Listener(event.Listener):  # type: ignore[misc,unused-ignore]
        def on_start(self, ev: Any) -> None:
            with lock:
                if state["said"]:
                    return
                state["said"] = True
            callback()

        def on_end(self, ev: Any) -> None:
            return None

    listener = _Listener()
    event.register("numba:compile", listener)

    def stop() -> None:
        with lock:
            if not state["registered"]:
                return
            state["registered"] = False
        event.unregister("numba:compile", listener)

    return stop


class _SkipBlasProbe(importlib.abc.MetaPathFinder):
    """Import finder that refuses ``scipy.linalg`` to numba's BLAS probe, and to it alone.

    The first time numba registers its array functions (as it loads or compiles the first
    kernel of a process) ``numba.np.arraymath`` checks whether a BLAS is there by
    importing ``scipy.linalg``, which loads scipy's OpenBLAS: about 30 MB and 0.2-0.3 s
    that a process whose kernels call no BLAS (``np.dot``, ``np.convolve`` and friends:
    none of this package's do) does not need. Refused, numba records that it has no BLAS,
    which only changes how it would compile ``np.convolve`` and ``np.correlate`` (a loop
    instead of BLAS's dot). The refusal depends on the importing thread's own call stack,
    so any other import of ``scipy.linalg``, in any thread, goes through as usual.
    """

    _PROBE = ("_check_blas", os.path.join("numba", "np", "arraymath.py"))

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "scipy.linalg":
            return None
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code.co_name == self._PROBE[0] and code.co_filename.endswith(self._PROBE[1]):
                raise ImportError("scipy.linalg is not needed here (numba's BLAS probe)")
            frame = frame.f_back
        return None


@contextmanager
def without_blas_probe() -> Iterator[None]:
    """Run the block with numba's BLAS probe refused (:class:`_SkipBlasProbe`).

    For a command-line process whose kernels need no BLAS: the first kernel then loads
    without scipy.linalg and its OpenBLAS (about 30 MB and 0.2-0.3 s less). Has no effect
    when numba's array functions were registered already.
    """
    finder = _SkipBlasProbe()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
