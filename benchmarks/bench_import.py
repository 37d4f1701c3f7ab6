"""Time ``import nanoro_optics`` in fresh interpreters and list any heavy module it loads.

Prints a table and writes JSON (default ``bench_results/import.json``). The issue's target is
an import under 0.3 s that loads no numba. The figure is compared with ``import numpy`` in the
same run, since numpy is the floor every scientific package pays.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("numba", "scipy", "skimage", "dask", "matplotlib", "tifffile", "imageio")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("bench_results/import.json"))
    args = parser.parse_args()
    rows = {}
    for module in ("numpy", "nanoro_optics", "nanoro_optics.optics", "nanoro_optics.zscan"):
        times, heavy = [], []
        for _ in range(args.repeats):
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
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "ratio_to_numpy": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
