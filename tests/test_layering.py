"""The layering of the rooms, by walking the imports: fusion sees arrays only; no private
name of one part is used by another (apart from the few listed, each with its reason)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nanoro_optics

PKG = Path(nanoro_optics.__file__).parent
SOURCES = sorted(PKG.rglob("*.py"))

#: what the fusion package must never import: files, front ends, hardware
NOT_IN_FUSION = {"io", "cli", "hardware", "mmcore", "napari", "distributed", "acquire", "demo"}

#: private names used across parts today, and why; a new one fails the test
KNOWN_PRIVATE: dict[tuple[str, str], str] = {}


def _part(path: Path) -> str:
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """``(module, names, lazy)`` of every package import (module relative to the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(PKG)
    folder = list(rel.parts[:-1])
    out = []
    top_level = {id(n) for n in tree.body}

    def lazy(node: ast.AST) -> bool:
        return id(node) not in top_level

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("nanoro_optics"):
                    continue
                mod = (node.module or "").split(".")[1:]
            else:
                base = folder[: len(folder) - (node.level - 1)] if node.level > 1 else folder
                mod = base + (node.module.split(".") if node.module else [])
            out.append((".".join(mod), [a.name for a in node.names], lazy(node)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nanoro_optics."):
                    out.append((alias.name.split(".", 1)[1], [], lazy(node)))
    return out


@pytest.mark.parametrize("path", [p for p in SOURCES if _part(p) == "fusion"],
                         ids=lambda p: str(p.relative_to(PKG)))  # fmt: skip
def test_fusion_imports_nothing_of_files_front_ends_or_hardware(path: Path) -> None:
    for module, names, lazy in _imports(path):
        mod = module or (names[0] if names else "")
        top = mod.split(".")[0]
        assert top not in NOT_IN_FUSION, f"{path.relative_to(PKG)} imports {mod}"
        if top == "pipeline":  # fuse_stack's documented delegate for paths, and only that
            assert lazy and path.name == "fuse.py", f"{path.relative_to(PKG)} imports pipeline"


def test_fusion_runs_without_io(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from nanoro_optics.fusion import fuse_stack, FusionOptions; "
        "r = fuse_stack(np.zeros((2, 16, 16), np.uint8), FusionOptions(levels=2)); "
        "print(sorted(m for m in sys.modules if m.startswith('nanoro_optics.') and "
        "m.split('.')[1] in ('io', 'pipeline', 'cli', 'hardware', 'mmcore')))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=PKG.parent,
        timeout=120,
        check=True,
    )
    assert res.stdout.strip() == "[]"


def _private_uses(path: Path) -> set[str]:
    """``part.name`` of private names of other parts that ``path`` imports or reads."""
    own = _part(path)
    found = set()
    aliases: dict[str, str] = {}
    for module, names, _ in _imports(path):
        parts = module.split(".") if module else []
        if parts and parts[0] != own:
            for i, piece in enumerate(parts[1:], start=1):
                if piece.startswith("_") and not piece.startswith("__"):
                    found.add(".".join(parts[: i + 1]))
                    break
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    found.add(f"{parts[0]}.{name}")
        elif not parts:  # "from .. import io as nio"
            for name in names:
                if name != own:
                    aliases[name] = name
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):  # nio._name through "from . import io as nio"
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in {"io", "zscan", "fusion", "psf", "optics", "hardware"}:
                    if alias.name != own:
                        aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.add(f"{aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_is_used_across_parts() -> None:
    used = {}
    for path in SOURCES:
        for name in _private_uses(path):
            used[(str(path.relative_to(PKG)), name)] = True
    new = sorted(set(used) - set(KNOWN_PRIVATE))
    assert not new, f"private names used across parts: {new}"
    gone = sorted(set(KNOWN_PRIVATE) - set(used))
    assert not gone, f"no longer used, drop them from KNOWN_PRIVATE: {gone}"
