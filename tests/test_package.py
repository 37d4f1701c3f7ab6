"""Package-level rules: cheap import, one-way dependencies, exports that resolve."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import nanoro_optics

PKG = Path(nanoro_optics.__file__).parent

# top-level module -> the package modules it may import (GUIDE.md, "The house")
ALLOWED: dict[str, set[str]] = {
    "_validation": set(),
    "_numba": set(),
    "_lazy": set(),
    "_text": set(),
    "optics": {"_validation"},
    "psf": {"_validation", "_numba", "optics", "psf"},
    "beamtilt": {"_validation", "_numba", "optics", "beamtilt"},
    "zscan": {"_validation", "optics", "zscan"},
    # (psf: the index-mismatch correction; pipeline: fuse_stack's lazy delegate for paths)
    "fusion": {"_validation", "_numba", "_lazy", "fusion", "psf", "pipeline"},
    "pipeline": {"_validation", "_numba", "fusion", "io"},
    "io": {"_validation", "_numba"},
    "hardware": {"_validation", "_numba", "_lazy", "optics", "psf", "fusion", "hardware"},
    "acquire": {"_validation", "_text", "optics", "zscan", "hardware", "fusion", "io"},
    "mmcore": {
        "_validation",
        "_numba",
        "_lazy",
        "optics",
        "psf",
        "zscan",
        "fusion",
        "io",
        "hardware",
        "mmcore",
    },
    "autofocus": {"_validation", "optics", "zscan", "hardware", "fusion", "acquire", "autofocus"},
    "demo": {
        "_validation",
        "optics",
        "zscan",
        "hardware",
        "fusion",
        "io",
        "acquire",
        "psf",
        "autofocus",
        "pipeline",
    },
    "testing": {
        "_validation",
        "optics",
        "zscan",
        "hardware",
        "fusion",
        "acquire",
        "beamtilt",
        "testing",
        "autofocus",
    },
    "distributed": {"_validation", "_text", "_lazy", "fusion", "io", "distributed", "pipeline"},
    "napari": {"_numba", "fusion", "io", "napari"},
    "cli": {"*"},
    "__main__": {"cli"},
    "__init__": {"_lazy"},
}
# hardware protocols and errors import nothing of the package
PURE = {"hardware/protocols.py", "hardware/errors.py"}


def _top(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _package_imports(path: Path) -> set[str]:
    """Top-level package modules imported by ``path`` (absolute or relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel_parts = path.relative_to(PKG).parts
    depth = len(rel_parts) - 1  # folders below the package root
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                mod = node.module or ""
                if mod == "nanoro_optics" or mod.startswith("nanoro_optics."):
                    rest = mod.split(".")[1:]
                    found.add(rest[0] if rest else node.names[0].name)
                continue
            up = node.level - 1  # levels above the file's own folder
            if up > depth:
                continue
            base = list(rel_parts[: depth - up])
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0].removesuffix(".py"))
            else:  # "from .. import x" at the package root
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "nanoro_optics" and len(parts) > 1:
                    found.add(parts[1])
    return found


SOURCES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_dependencies_point_one_way(path: Path) -> None:
    top = _top(path)
    allowed = ALLOWED.get(top)
    assert allowed is not None, f"{path.relative_to(PKG)}: module {top!r} has no dependency rule"
    imported = _package_imports(path) - {top}
    if str(path.relative_to(PKG)) in PURE:
        imported -= {"hardware"}
        assert not imported, (
            f"{path.relative_to(PKG)} must import nothing of the package: {imported}"
        )
        return
    if "*" in allowed:
        return
    bad = imported - allowed
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}; allowed: {sorted(allowed)}"


def test_nothing_imports_cli() -> None:
    for path in SOURCES:
        top = _top(path)
        if top in {"cli", "__main__"}:
            continue
        assert "cli" not in _package_imports(path), f"{path.relative_to(PKG)} imports cli"


def test_import_is_cheap_and_numba_free() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import nanoro_optics; "
        "dt = time.perf_counter() - t; "
        "heavy = sorted(m for m in ('numba', 'scipy', 'skimage', 'dask', 'matplotlib', "
        "'napari', 'qtpy', 'PyQt6', 'PyQt5', 'magicgui') "
        "if m in sys.modules); print(dt); print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[1] == "", f"import nanoro_optics imported heavy modules: {out[1]}"


def test_cli_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from nanoro_optics.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "dof" in capsys.readouterr().out


def test_every_export_resolves() -> None:
    for name in nanoro_optics.__all__:
        assert getattr(nanoro_optics, name) is not None, name


# Private names used across parts: (importing file, "module:name") pairs known today. The
# rule holds for new code; each entry here is a debt to pay by giving the part a public
# name for what is used.
PRIVATE_IMPORTS_ALLOWED: set[tuple[str, str]] = {
    # the first-run warm-up compiles fusion's numba kernels by importing them directly
    ("cli/_first_run.py", "fusion:_kernels"),
    ("cli/_first_run.py", "fusion:_zmap_kernels"),
    # batch fusion reuses io's glob test and natural sort of file names
    ("distributed/batch.py", "io:_is_glob"),
    ("distributed/batch.py", "io:_natural_key"),
    # the MDA adapter resolves an objective as zscan's limits do
    ("mmcore/mda.py", "zscan._limits:_resolve_objective"),
    # the MDA adapter relabels depth maps with fusion's kernel
    ("mmcore/mda.py", "fusion._zmap_kernels:relabel"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_imports(path: Path, source: str | None = None) -> set[str]:
    """``"module:name"`` of each private name (or name from a private module) that ``path``
    imports from another top-level part of the package.

    The shared helper modules at the root (``_validation``, ``_text``, ``_numba``,
    ``_lazy``, ``_png``) are parts of their own whose public names every part may use;
    their private names are not.
    """
    text = path.read_text() if source is None else source
    tree = ast.parse(text, filename=str(path))
    rel_parts = path.relative_to(PKG).parts
    depth = len(rel_parts) - 1
    own = _top(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                mod = node.module or ""
                if not (mod == "nanoro_optics" or mod.startswith("nanoro_optics.")):
                    continue
                target = mod.split(".")[1:]
            else:
                up = node.level - 1
                if up > depth:
                    continue
                target = list(rel_parts[: depth - up]) + (
                    node.module.split(".") if node.module else []
                )
                target = [t.removesuffix(".py") for t in target]
            for alias in node.names:
                parts = [*target, alias.name]
                if parts[0] == own:
                    continue
                if any(_private(p) for p in parts[1:]):
                    found.add(f"{'.'.join(target)}:{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "nanoro_optics" or len(parts) < 2 or parts[1] == own:
                    continue
                if any(_private(p) for p in parts[2:]):
                    found.add(f"{'.'.join(parts[1:-1])}:{parts[-1]}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_private_name_crosses_parts(path: Path) -> None:
    rel = str(path.relative_to(PKG))
    bad = {f for f in _private_imports(path) if (rel, f) not in PRIVATE_IMPORTS_ALLOWED}
    assert not bad, (
        f"{rel} imports private names of other parts: {sorted(bad)}; give the part a public "
        "name for what is used"
    )


def test_the_private_import_check_sees_a_violation() -> None:
    # as the first autofocus session imported the executor's private checks
    probe = PKG / "autofocus" / "probe.py"
    src = (
        "from ..acquire import MotionGuard, _ReadingCheck\n"
        "from .measures import _grey\n"  # the same part: allowed
        "from .. import _validation\n"  # a shared helper module: allowed
        "import nanoro_optics.fusion._kernels\n"
        "def f():\n    from nanoro_optics.io import _natural_key\n"
    )
    assert _private_imports(probe, src) == {
        "acquire:_ReadingCheck",
        "fusion:_kernels",
        "io:_natural_key",
    }


def test_the_private_import_allow_list_has_no_stale_entry() -> None:
    seen = {(str(p.relative_to(PKG)), f) for p in SOURCES for f in _private_imports(p)}
    stale = PRIVATE_IMPORTS_ALLOWED - seen
    assert not stale, f"these allowed private imports are gone; remove them: {sorted(stale)}"
