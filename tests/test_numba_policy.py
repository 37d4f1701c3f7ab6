"""The package's numba policy: the one thread-count policy
(:func:`nanoro_optics._numba.fusion_threads`), the command line's kernels loaded
without numba's BLAS probe (:func:`nanoro_optics._numba.without_blas_probe`), and the
kernels' on-disk cache stamped with every kernel source (:func:`_stamp_kernel_caches`).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanoro_optics._numba import fusion_threads, max_threads


@given(busy=st.integers(0, 64), limit=st.none() | st.integers(1, 64))
def test_policy_stays_between_one_and_the_machine(busy: int, limit: int | None) -> None:
    n = fusion_threads(busy=busy, limit=limit)
    assert 1 <= n <= max_threads()
    if limit is not None:
        assert n <= limit
    # each busy thread takes one core away, down to the floor of one
    most = max_threads() if limit is None else min(limit, max_threads())
    assert n == max(1, most - busy)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"busy": -1}, ValueError, "busy"),
        ({"busy": 1.0}, TypeError, "busy"),
        ({"limit": 0}, ValueError, "limit"),
        ({"limit": True}, TypeError, "limit"),
    ],
)
def test_policy_refuses_bad_counts(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        fusion_threads(**kwargs)


def test_live_fusion_default_follows_the_policy() -> None:
    pytest.importorskip("pymmcore_plus")
    from nanoro_optics.mmcore import LiveFusion

    assert LiveFusion().threads == fusion_threads(busy=1)
    assert LiveFusion(threads=1).threads == 1


def test_numba_loads_without_scipy_linalg_in_the_command_line(tmp_path) -> None:
    # numba's BLAS probe (scipy.linalg and its OpenBLAS: ~30 MB, 0.2-0.3 s) is refused in
    # the command line, and only the probe: the package's own import of it goes through
    import subprocess
    import sys

    import numpy as np

    from nanoro_optics.io import write_image

    for k in range(3):
        write_image(tmp_path / f"f{k}.png", np.full((16, 20, 3), 40 * k, np.uint8))
    code = (
        "import sys\n"
        "from nanoro_optics.cli import main\n"
        f"status = main(['fuse', {str(tmp_path)!r}, '-o', {str(tmp_path / 'o.tif')!r}, '-q'])\n"
        "import numba.np.arraymath as am\n"
        "print(status, 'scipy.linalg' in sys.modules, am._HAVE_BLAS)\n"
        "from nanoro_optics._numba import without_blas_probe\n"
        "with without_blas_probe():\n"
        "    import scipy.linalg\n"
        "print(scipy.linalg.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "False", "False", "scipy.linalg"]
    assert (tmp_path / "o.tif").exists()


# -- the kernels' cache stamp -----------------------------------------------------------------
def test_package_kernels_carry_the_package_wide_stamp() -> None:
    from nanoro_optics import _numba
    from nanoro_optics.fusion import _zmap_kernels

    locator = _zmap_kernels.index_to_z._cache._impl._locator
    assert type(locator).__name__.startswith("PackageStamped")
    own, digest = locator.get_source_stamp()
    assert digest == _numba._kernel_digest()
    assert own  # numba's stamp of the kernel's own file is kept beside it


def test_kernel_modules_import_only_kernel_sources() -> None:
    # what the stamp covers: a kernel module's relative imports are kernel sources too
    import ast

    from nanoro_optics import _numba

    sources = set(_numba._kernel_sources())
    assert {p.name for p in sources} >= {"_blend_kernels.py", "_kernel_common.py", "_codes.py"}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                target = path.parent / f"{node.module}.py"
                assert target in sources, f"{path.name} imports {node.module}, not stamped"


def test_digest_follows_every_kernel_source_and_nothing_else(tmp_path, monkeypatch) -> None:
    from nanoro_optics import _numba

    (tmp_path / "sub").mkdir()
    files = {
        "sub/_a_kernels.py": "X = 1\n",
        "sub/_kernel_common.py": "Y = 2\n",
        "sub/_codes.py": "Z = 3\n",
        "sub/other.py": "W = 4\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(_numba, "_PACKAGE_DIR", tmp_path)
    assert [p.name for p in _numba._kernel_sources()] == [
        "_a_kernels.py",
        "_codes.py",
        "_kernel_common.py",
    ]
    seen = {_numba._kernel_digest()}
    for name in ("sub/_a_kernels.py", "sub/_kernel_common.py", "sub/_codes.py"):
        (tmp_path / name).write_text(files[name] + "# changed\n")
        seen.add(_numba._kernel_digest())
    assert len(seen) == 4  # each change gave a new digest
    before = _numba._kernel_digest()
    (tmp_path / "sub/other.py").write_text("W = 5\n")
    assert _numba._kernel_digest() == before


def test_functions_outside_the_package_keep_numbas_stamp(tmp_path, monkeypatch) -> None:
    import importlib

    (tmp_path / "user_kernel_mod.py").write_text(
        "from nanoro_optics._numba import njit\n\n@njit()\ndef f(x):\n    return x + 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("user_kernel_mod")
    locator = mod.f._cache._impl._locator
    assert not type(locator).__name__.startswith("PackageStamped")


def test_a_changed_kernel_source_recompiles_instead_of_loading_stale_code(tmp_path) -> None:
    # three runs on one cache: the second sees other kernel sources (the digest faked), so the
    # cached code is stale and compiled anew; the third, with the same sources, loads it
    import os
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "import nanoro_optics._numba as n\n"
        "n._kernel_digest = lambda: sys.argv[1].encode()\n"
        "from nanoro_optics.fusion import _zmap_kernels as z\n"
        "out = np.zeros((2, 3), np.float32)\n"
        "z.index_to_z(np.ones((2, 3), np.float32), np.arange(3.0), out)\n"
        "s = z.index_to_z.stats\n"
        "print(sum(s.cache_hits.values()), sum(s.cache_misses.values()), float(out[0, 0]))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for digest in ("sources-A", "sources-B", "sources-B", "sources-A"):
        done = subprocess.run(
            [sys.executable, "-c", code, digest], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(done.stdout.split())
    # (hits, misses, value): compiled, compiled again (stale), loaded, compiled again
    assert [r[:2] for r in runs] == [["0", "1"], ["0", "1"], ["1", "0"], ["0", "1"]]
    assert all(r[2] == "1.0" for r in runs)
