"""The package's numba policy: the one thread-count policy
(:func:`nanoro_optics._numba.fusion_threads`), and the command line's kernels loaded
without numba's BLAS probe (:func:`nanoro_optics._numba.without_blas_probe`).
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
