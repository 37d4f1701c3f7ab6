"""Lazy re-exports for the package and its sub-packages, through ``lazy_loader``.

A package's ``__init__`` lists which of its sub-modules defines each public name; the module is
imported the first time one of its names is used, so importing the package stays cheap (no
numba, scipy or dask until needed). scikit-image's ``lazy_loader`` does the work; this module
only turns the package's ``{name: sub-module}`` table into its ``submod_attrs``.
"""

from __future__ import annotations

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
    import lazy_loader

    by_module: dict[str, list[str]] = {}
    for name, module in exports.items():
        by_module.setdefault(module, []).append(name)
    attach_getattr, _, _ = lazy_loader.attach(
        namespace["__name__"], submodules=sorted(submodules), submod_attrs=by_module
    )

    def __getattr__(name: str) -> Any:
        value = attach_getattr(name)
        namespace[name] = value  # the next access skips the look-up
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
