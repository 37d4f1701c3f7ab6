"""The ``nanoro-optics`` command.

Each sub-command lives in its own module of this package and defines ``COMMAND`` (its name),
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Sub-command modules
import their heavy dependencies inside ``run`` so that ``nanoro-optics --help`` stays fast.
Nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import pkgutil
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

__all__ = ["build_parser", "exit_main", "main"]


def _command_modules() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            modules.append(module)
    return modules


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-parser per command module."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="nanoro-optics",
        description="Microscope optics, Z-scan plans, simulated acquisition and focus stacking.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _command_modules():
        p = sub.add_parser(module.COMMAND, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status.

    Errors from bad arguments (``ValueError``/``TypeError`` raised by the library) are printed
    as one line on stderr with exit status 2, never as a traceback.
    """
    from .._numba import without_blas_probe

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # the commands' kernels call no BLAS: numba loads them without scipy.linalg
        with without_blas_probe():
            return int(args._run(args))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"nanoro-optics {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nanoro-optics {args.command}: interrupted", file=sys.stderr)
        return 130


def exit_main() -> NoReturn:
    """Run :func:`main` as the program, then end the process without tearing it down.

    The entry point of ``python -m nanoro_optics`` and of the ``nanoro-optics`` script.
    Once numba has loaded kernels, the interpreter's finalization (numba's registries and
    LLVM's engine freed object by object) takes 0.3-2 s, longer than a small fusion. Every
    command has written and committed its outputs when ``main`` returns, so the process
    waits for any thread that is not a daemon, runs the ``atexit`` handlers, flushes its
    streams and ends with ``main``'s status. An exception leaving ``main`` ends the process
    the usual way (traceback, finalization).
    """
    code = main()
    for thread in threading.enumerate():  # what finalization would wait for
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what finalization would run first (logging's flush, ...)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            code = code or 1
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
