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
    "_numba": {"_validation"},
    "_lazy": set(),
    "_text": set(),
    "optics": {"_validation"},
    "psf": {"_validation", "_numba", "optics", "psf"},
    "beamtilt": {"_validation", "_numba", "optics", "beamtilt"},
    "zscan": {"_validation", "optics", "zscan"},
    # (psf: the index-mismatch correction; optics: the defocus blur disc of the halo scenes;
    # pipeline: fuse_stack's lazy delegate for paths)
    "fusion": {"_validation", "_numba", "_lazy", "fusion", "optics", "psf", "pipeline"},
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
    "distributed": {
        "_validation",
        "_numba",
        "_text",
        "_lazy",
        "fusion",
        "io",
        "distributed",
        "pipeline",
    },
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
