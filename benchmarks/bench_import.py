"""Time ``import nanoro_optics`` and a new user's first commands, cold and warm.

Two parts, each printed as a table and written to one JSON file (default
``bench_results/import.json``):

* ``import nanoro_optics`` in fresh interpreters, with any heavy module it loads. The target is
  an import under 0.3 s that loads no numba; it is compared with ``import numpy`` in the same
  run, since numpy is the floor every scientific package pays.
* ``nanoro-optics demo`` and a small ``nanoro-optics fuse`` (3 frames of 64 x 64 px, PNG), each
  first with an empty numba cache (a fresh ``NUMBA_CACHE_DIR``, so the fusion kernels compile:
  the first run on a new machine) and then warm (best of ``--repeats``, the cache filled by the
  cold run). The issue's targets: cold demo <= 30 s on 2 cores, warm <= 5 s.

``--skip-first-run`` times the import only; ``--first-run-only`` the commands only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("numba", "scipy", "skimage", "dask", "matplotlib", "tifffile", "imageio")
#: the worktree this file belongs to, first on the path of every timed command
ROOT = Path(__file__).resolve().parents[1]


def _time_import(module: str) -> tuple[float, list[str]]:
    code = (
        "import sys, time; t = time.perf_counter(); "
        f"import {module}; dt = time.perf_counter() - t; "
        f"print(dt); print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return float(out[0]), [m for m in out[1].split(",") if m]


def _imports(repeats: int) -> dict[str, object]:
    rows = {}
    for module in ("numpy", "nanoro_optics", "nanoro_optics.optics", "nanoro_optics.zscan"):
        times, heavy = [], []
        for _ in range(repeats):
            dt, heavy = _time_import(module)
            times.append(dt)
        rows[module] = {
            "min_s": min(times),
            "median_s": sorted(times)[len(times) // 2],
            "heavy": heavy,
        }
    ratio = rows["nanoro_optics"]["min_s"] / rows["numpy"]["min_s"]
    print(f"{'module':<22}{'min s':>10}{'median s':>10}  heavy modules loaded")
    for name, r in rows.items():
        print(f"{name:<22}{r['min_s']:>10.3f}{r['median_s']:>10.3f}  {','.join(r['heavy']) or '-'}")
    print(f"nanoro_optics / numpy import time: {ratio:.2f}x (target: < 0.3 s, no numba)")
    return {"rows": rows, "ratio_to_numpy": ratio}


def _run_cli(argv: list[str], cache_dir: Path) -> tuple[float, str]:
    """Run ``python -m nanoro_optics ARGV`` on numba cache ``cache_dir``; (wall s, stderr)."""
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nanoro_optics", *argv], capture_output=True, text=True, env=env
    )
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"nanoro-optics {' '.join(argv)} failed:\n{proc.stderr}")
    return dt, proc.stderr


def _first_runs(repeats: int, work: Path) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from nanoro_optics.fusion import synthetic_stack
    from nanoro_optics.io import write_image

    frames = work / "frames"
    frames.mkdir()
    for k, frame in enumerate(synthetic_stack((64, 64), 3, dtype="uint8", seed=0).frames):
        write_image(frames / f"f{k}.png", frame)
    cases = {
        "demo": ["demo", "--out", str(work / "demo")],
        "fuse 3 x 64x64 png": [
            "fuse",
            str(frames),
            "-o",
            str(work / "fused.png"),
            "--overwrite",
        ],
    }
    rows: dict[str, dict[str, object]] = {}
    for name, argv in cases.items():
        cache = work / f"numba_cache_{len(rows)}"  # fresh and empty: every kernel compiles
        cold, stderr = _run_cli(argv, cache)
        warm = min(_run_cli(argv, cache)[0] for _ in range(repeats))
        rows[name] = {
            "cold_s": cold,
            "warm_s": warm,
            "compile_notice": "compiling fast kernels" in stderr,
        }
    print(f"\n{'command':<22}{'cold s':>10}{'warm s':>10}  notice on cold run")
    for name, r in rows.items():
        print(f"{name:<22}{r['cold_s']:>10.1f}{r['warm_s']:>10.2f}  {r['compile_notice']}")
    print(f"cores: {os.cpu_count()}; targets: cold demo <= 30 s, warm demo <= 5 s")
    return {"rows": rows, "cpu_count": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="runs of each warm case")
    parser.add_argument("--json", type=Path, default=Path("bench_results/import.json"))
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--skip-first-run", action="store_true", help="time the import only")
    parts.add_argument("--first-run-only", action="store_true", help="time the commands only")
    args = parser.parse_args()
    out: dict[str, object] = {}
    if not args.first_run_only:
        out["import"] = _imports(args.repeats)
    if not args.skip_first_run:
        with tempfile.TemporaryDirectory(prefix="nanoro_first_run_") as tmp:
            out["first_run"] = _first_runs(min(args.repeats, 3), Path(tmp))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
