"""Fault injection: many random Z scans on misbehaving stages and cameras, audited.

Each scan draws a rig and a plan (limits, start, spacing, 0 to 25 steps, the executor's
backlash overshoot, the stage's play and noise, a start given or read, return to start or
not) and one misbehaviour of :data:`nanoro_optics.testing.doubles.FAULT_SCAN_KINDS`: none,
a stage that fails, hangs (simulated), reads NaN, overshoots below its target, is slow and
ignores its timeout (simulated), reports idle while moving, moves opposite to the command,
or reports idle late in real time; a camera that fails, or blocks in real time. The fault
strikes at move, reading or snap 1 to 6 (a reversed stage at 1: every move goes the wrong
way). :func:`~nanoro_optics.testing.doubles.run_fault_scan` runs
:func:`~nanoro_optics.acquire.run_zscan` with ``timeout_s`` and audits it against the
stage's log and the camera's delivered frames:

- positions reached below the start by more than one move: moves commanded while the stage
  stood below the start (beyond the readout tolerance);
- moves outside the limits: commands outside the stage's travel;
- frames lost: frames the camera delivered in time that the stack (or ``err.partial``)
  lacks or holds altered;
- hangs: scans that took longer than ``timeout_s`` per blocked call plus 1 s;
- defects: any outcome other than a complete scan, a stopped one (``AcquisitionError``) or
  a refusal before motion.

It prints a table per fault kind and writes JSON. The acceptance is 0 in every column but
the outcome counts.

Usage: python benchmarks/fault_injection.py [--scans 1100] [--seed 0] [--timeout-s 0.2]
[--kinds reversed late ...] [--json bench_results/fault_injection.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoro_optics.testing.doubles import (
    FAULT_SCAN_KINDS,
    FaultScan,
    FaultScanOutcome,
    run_fault_scan,
)

COUNTS = ("moves_from_below_start", "moves_outside_limits", "frames_lost")


def draw_scan(rng: np.random.Generator, kind: str, timeout_s: float) -> FaultScan:
    """Draw one random scan with the fault ``kind``."""
    count = int(rng.integers(0, 26))
    spacing = float(rng.choice([0.05, 0.5, 1.0, 3.0, 10.0]))
    backlash = float(rng.choice([0.0, 0.5, 3.0]))
    lo = float(rng.uniform(-1000.0, 500.0))
    height = spacing * count + backlash
    if rng.integers(0, 5):  # four in five fit the travel, the rest may not
        width = float(max(rng.uniform(1.0, 1500.0), height + 1.0))
        start = float(rng.uniform(lo, lo + width - height))
    else:
        width = float(rng.uniform(1.0, 1500.0))
        start = float(rng.uniform(lo, lo + width))
    return FaultScan(
        kind=kind,
        at=int(rng.integers(1, 7)),
        size=float(rng.choice([0.05, 0.3, 2.0, 30.0])),
        limits_um=(lo, lo + width),
        start_um=start,
        spacing_um=spacing,
        count=count,
        backlash_um=backlash,
        stage_backlash_um=float(rng.choice([0.0, 0.5])),
        noise_um=float(rng.choice([0.0, 0.01])),
        plan_has_start=bool(rng.integers(0, 2)),
        return_to_start=bool(rng.integers(0, 2)),
        timeout_s=timeout_s,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=1100, help="number of scans (all kinds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=0.2, help="run_zscan's timeout_s")
    ap.add_argument(
        "--kinds",
        nargs="+",
        default=list(FAULT_SCAN_KINDS),
        choices=FAULT_SCAN_KINDS,
        help="fault kinds to draw from (default all, in turn)",
    )
    ap.add_argument("--json", default="bench_results/fault_injection.json")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    kinds = [args.kinds[i % len(args.kinds)] for i in range(args.scans)]
    by_kind: dict[str, list[FaultScanOutcome]] = defaultdict(list)
    t0 = time.perf_counter()
    for kind in kinds:
        out = run_fault_scan(draw_scan(rng, kind, args.timeout_s))
        by_kind[kind].append(out)
    wall_s = time.perf_counter() - t0

    header = (
        f"{'fault':<10} {'scans':>5} {'complete':>8} {'stopped':>7} {'refused':>7} "
        f"{'defects':>7} {'below>1':>7} {'outside':>7} {'lost':>4} {'hangs':>5} "
        f"{'max s':>6}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for kind in args.kinds:
        outs = by_kind[kind]
        outcomes = Counter(o.outcome for o in outs)
        row = {
            "fault": kind,
            "scans": len(outs),
            "complete": outcomes["complete"],
            "stopped": outcomes["stopped"],
            "refused": outcomes["refused"],
            "defects": len(outs) - outcomes["complete"] - outcomes["stopped"] - outcomes["refused"],
            **{name: sum(getattr(o, name) for o in outs) for name in COUNTS},
            "hangs": sum(o.hung for o in outs),
            "max_elapsed_s": max((o.elapsed_s for o in outs), default=0.0),
            "causes": dict(Counter(o.cause for o in outs if o.cause)),
        }
        rows.append(row)
        print(
            f"{kind:<10} {row['scans']:>5} {row['complete']:>8} {row['stopped']:>7} "
            f"{row['refused']:>7} {row['defects']:>7} {row['moves_from_below_start']:>7} "
            f"{row['moves_outside_limits']:>7} {row['frames_lost']:>4} {row['hangs']:>5} "
            f"{row['max_elapsed_s']:>6.3f}"
        )
    total = {
        key: sum(r[key] for r in rows)
        for key in ("scans", "complete", "stopped", "refused", "defects", *COUNTS, "hangs")
    }
    print("-" * len(header))
    print(
        f"{'all':<10} {total['scans']:>5} {total['complete']:>8} {total['stopped']:>7} "
        f"{total['refused']:>7} {total['defects']:>7} {total['moves_from_below_start']:>7} "
        f"{total['moves_outside_limits']:>7} {total['frames_lost']:>4} {total['hangs']:>5}"
    )
    unsafe = [o for outs in by_kind.values() for o in outs if not o.safe]
    print(
        f"\n{total['scans']} scans in {wall_s:.1f} s (timeout_s={args.timeout_s}); "
        f"unsafe: {len(unsafe)}"
    )
    for o in unsafe[:10]:
        print("  ", o)

    result = {
        "benchmark": "fault_injection",
        "seed": args.seed,
        "timeout_s": args.timeout_s,
        "wall_s": wall_s,
        "total": total,
        "unsafe": len(unsafe),
        "rows": rows,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {path}")
    if unsafe:
        sys.exit(1)


if __name__ == "__main__":
    main()
