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

__all__ = ["NOTICE", "compile_notice"]

#: the line printed when the first kernel starts compiling
NOTICE = "compiling fast kernels (first run only: numba caches them; this takes a minute or so)..."


class _Notice:
    """A numba event listener that prints :data:`NOTICE` once, at the first compile."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.said = False
        self._lock = threading.Lock()

    def on_start(self, event: Any) -> None:
        with self._lock:
            if self.said:
                return
            self.said = True
        print(NOTICE, file=sys.stderr if self.stream is None else self.stream, flush=True)

    def on_end(self, event: Any) -> None:
        return None


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
    listener = _Notice(stream)
    if not enabled:
        yield listener
        return
    state: dict[str, Any] = {}

    def install() -> None:
        from numba.core import event

        class Listener(event.Listener):
            def on_start(self, ev: Any) -> None:
                listener.on_start(ev)

            def on_end(self, ev: Any) -> None:
                listener.on_end(ev)

        state["listener"] = Listener()
        state["event"] = event
        event.register("numba:compile", state["listener"])

    thread = None
    if background:
        thread = threading.Thread(target=install, daemon=True)
        thread.start()
    else:
        install()
    try:
        yield listener
    finally:
        if thread is not None:
            thread.join()
        if "listener" in state:
            state["event"].unregister("numba:compile", state["listener"])
