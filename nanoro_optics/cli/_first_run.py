"""Tell the user when numba compiles a kernel (the first run on a machine takes a while).

numba compiles a kernel on its first call and caches the machine code on disk
(``cache=True``), so only the first run on a machine (or after an upgrade) pays for it. Which
kernels a command needs depends on its options, the frames' dtype and the code paths taken;
rather than keep a table of them, :func:`compile_notice` listens to numba's own
``"numba:compile"`` event, which numba raises only when a kernel is really compiled (not when
it is loaded from the cache), and prints one line on stderr the first time it fires. A run
whose kernels are all cached prints nothing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from .._numba import COMPILE_NOTICE

__all__ = ["NOTICE", "compile_notice"]

#: the line printed when the first kernel starts compiling
NOTICE = COMPILE_NOTICE


class _Notice:
    """Prints :data:`NOTICE` once on ``stream`` (default stderr); ``said`` tells if it did."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.said = False

    def __call__(self) -> None:
        self.said = True
        print(NOTICE, file=sys.stderr if self.stream is None else self.stream, flush=True)


@contextlib.contextmanager
def compile_notice(
    stream: TextIO | None = None, *, enabled: bool = True, background: bool = False
) -> Iterator[_Notice]:
    """Print :data:`NOTICE` on ``stream`` (default stderr) if numba compiles inside the block.

    Parameters
    ----------
    stream : text stream, optional
        Where the notice goes.
    enabled : bool, keyword-only
        False: listen to nothing (``--quiet``).
    background : bool, keyword-only
        Import numba in a thread of its own (so that a command whose first frame is being
        decoded meanwhile does not wait for numba's import); a compile that starts before
        the import ends is not announced, the ones after it are.

    Yields
    ------
    object
        The listener; its ``said`` attribute tells whether the notice was printed.
    """
    from .._numba import on_first_compile

    notice = _Notice(stream)
    if not enabled:
        yield notice
        return
    stops: list[Any] = []

    def install() -> None:
        stops.append(on_first_compile(notice))

    thread = None
    if background:
        thread = threading.Thread(target=install, daemon=True)
        thread.start()
    else:
        install()
    try:
        yield notice
    finally:
        if thread is not None:
            thread.join()
        for stop in stops:
            stop()
