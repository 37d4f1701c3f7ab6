"""Lazy re-exports for the package and its sub-packages.

A package's ``__init__`` lists which of its sub-modules defines each public name; the module is
imported the first time one of its names is used, so importing the package stays cheap (no
numba, scipy or dask until needed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any],
    exports: Mapping[str, str],
    *,
    submodules: Iterable[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for a package whose globals are ``namespace``.

    Parameters
    ----------
    namespace : dict
        The package's ``globals()``; resolved names are cached there.
    exports : mapping
        Public name -> name of the sub-module (relative to the package) that defines it.
    submodules : iterable of str, optional
        Sub-modules that are themselves returned as attributes.
    """
    package = namespace["__name__"]
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in subs:
            return importlib.import_module(f".{name}", package)
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
