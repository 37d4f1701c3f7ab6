"""Benchmark: what one ``StackFuser.add`` costs, in units of the memory's own speed.

The unit is one float32 read + write pass over the frame (``np.multiply(a, 1.0, out=b)`` on
two ``H x W`` float32 arrays), timed in the same process between the fusion runs: the
machine may be shared, so only ratios measured side by side mean something. A Laplacian
pyramid step must at least read the frame, write its level-0 band and read and write the
accumulators and the depth tracker once: some 6 to 10 such passes.

Each configuration adds the same ``--frames`` frames (2048 x 2048 mono uint16, 12-bit, by default;
``--channels 3`` for RGB)
to a fresh fuser after a warm-up fuser has compiled the kernels; a round's figure is
the median over frames 2 to N of one ``add``, with numba limited to ``--threads`` (1, and
all); the configurations alternate within each round and the table gives the median over
``--rounds`` rounds (the shares below are differences of medians: on a noisy machine a small
one can come out negative, which says it is within the noise).
The configurations differ in one thing each, so their differences split the cost by stage:

============  ==============================================================================
full          the default fuser (depth tracking on): what ``LiveFusion`` and ``fuse`` pay
no_depth      ``depth=False``: the depth tracker's share is ``full - no_depth``
levels_1      ``levels=1`` without depth: level 0 is then the coarsest level, so this is the
              intake (range; the planar copy of a colour frame) and the weights and blend at
              full size, with no band-pass or activity of level 0's own
levels_2      ``levels=2`` without depth: ``levels_2 - levels_1`` is what level 0's band
              (REDUCE, EXPAND, its energy, window and activity) adds, with level 1 as the
              quarter-size coarsest level; the coarser levels' share is ``no_depth - levels_2``
float32_in    frames given as float32 instead of uint16: the input conversion's share
hard          ``sharpness=None`` (the hard rule) without depth: the soft weights' share
============  ==============================================================================

A second table times every kernel call inside the ``full`` configuration's adds (the
intake sweep, each level's REDUCE and blend), in ms and passes, alternating with the pass,
and the ``result()`` that ends the stack (the image, the depth map and its confidence: what
a live MDA pays at the end of every z-loop before the group's file is written).

Prints a table and writes JSON (``--json``). Usage:
``python benchmarks/bench_add_profile.py [--side 2048] [--frames 8] [--rounds 3] [--threads 1 2]
[--clock cpu]`` (``--clock cpu`` on a machine other jobs share: one thread's figures then do
not count the time the process waits for a core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from nanoro_optics.fusion import FusionOptions, StackFuser, synthetic_stack

#: the clock every figure is read from (``--clock``): wall time, or the process's CPU time
CLOCK = [time.perf_counter]

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_depth": {"depth": False},
    "levels_1": {"depth": False, "levels": 1},
    "levels_2": {"depth": False, "levels": 2},
    "float32_in": {"float32": True},
    "hard": {"depth": False, "sharpness": None},
}


def pass_time_s(h: int, w: int, repeats: int = 15) -> float:
    """Median time of one float32 read + write pass over an ``h x w`` frame."""
    a = np.random.default_rng(0).random((h, w), dtype=np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(repeats):
        t0 = CLOCK[0]()
        np.multiply(a, 1.0, out=b)
        times.append(CLOCK[0]() - t0)
    return statistics.median(times)


def add_times_s(frames: np.ndarray, config: dict[str, Any]) -> list[float]:
    """Times of every ``add`` but the first (which sets the fuser up) of a fresh fuser."""
    cfg = dict(config)
    as_float = cfg.pop("float32", False)
    depth = cfg.pop("depth", True)
    opts = FusionOptions(bit_depth=None if as_float else 12, **cfg)
    data = frames.astype(np.float32) if as_float else frames
    fuser = StackFuser(opts, depth=depth)
    times = []
    for k, frame in enumerate(data):
        t0 = CLOCK[0]()
        fuser.add(frame)
        if k > 0:
            times.append(CLOCK[0]() - t0)
    return times


class _Timed:
    """A kernel module whose named kernels record the time of each call (per call index)."""

    def __init__(self, module: Any, names: tuple[str, ...], log: dict[str, list[float]]) -> None:
        self._module = module
        self._log = log
        self._calls = dict.fromkeys(names, 0)

    def new_add(self) -> None:
        self._calls = dict.fromkeys(self._calls, 0)

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._module, name)
        if name not in self._calls:
            return fn

        def timed(*args: Any) -> Any:
            t0 = CLOCK[0]()
            out = fn(*args)
            key = f"{name}[{self._calls[name]}]"
            self._calls[name] += 1
            self._log.setdefault(key, []).append(CLOCK[0]() - t0)
            return out

        return timed


def stage_times_s(frames: np.ndarray) -> dict[str, float]:
    """Median time of each kernel call in the ``full`` fuser's adds (frames 2 to N)."""
    fuser = StackFuser(FusionOptions(bit_depth=12))
    log: dict[str, list[float]] = {}
    fuser.add(frames[0])
    fuser.add(frames[1])
    pyr = _Timed(fuser._pyr(), ("intake", "reduce_level"), log)
    kern = _Timed(fuser._kern(), ("fuse_level",), log)
    fuser._pyr_kernels, fuser._kernels = pyr, kern
    adds = []
    for frame in frames[2:]:
        pyr.new_add()
        kern.new_add()
        t0 = CLOCK[0]()
        fuser.add(frame)
        adds.append(CLOCK[0]() - t0)
    out = {key: statistics.median(v) for key, v in log.items()}
    out["add"] = statistics.median(adds)
    t0 = CLOCK[0]()
    fuser.result()  # the stack's end: the image collapsed, the depth map and confidence
    out["result"] = CLOCK[0]() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=2048, help="frame side in px")
    ap.add_argument("--frames", type=int, default=8, help="frames per configuration (>= 3)")
    ap.add_argument(
        "--threads", type=int, nargs="+", default=None, help="numba thread counts (default 1, all)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per configuration")
    ap.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=1,
        help="1: a mono camera's frame (default, what a live MDA delivers); 3: RGB. The pass "
        "unit covers the same frame (all its channels)",
    )
    ap.add_argument("--json", default="bench_results/add_profile.json", help="output JSON path")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default), or the process's CPU time: on a shared machine time "
        "the process waits for a core does not count (with more than one thread it adds "
        "up the threads' time, spinning included: use it for one thread)",
    )
    args = ap.parse_args(argv)
    CLOCK[0] = time.perf_counter if args.clock == "wall" else time.process_time
    if args.frames < 3 or args.side < 64 or args.rounds < 1:
        ap.error("--frames must be >= 3, --side >= 64 and --rounds >= 1")
    import numba

    all_threads = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    thread_counts = args.threads or sorted({1, all_threads})
    stack = synthetic_stack(
        (args.side, args.side), args.frames, seed=1, dtype=np.uint16, channels=args.channels
    )
    frames = (stack.frames >> 4).astype(np.uint16)  # 12-bit data in 16-bit frames
    unit_w = args.side * args.channels  # the pass unit: the whole frame, every channel
    for config in CONFIGS.values():  # compile (or load) every kernel first
        add_times_s(frames[:3, :128, :128], config)
    rows = []
    print(
        f"one add on {args.side} x {args.side} x {args.channels} uint16 (12-bit): median over "
        f"{args.rounds} rounds (configurations alternating) of the median of {args.frames - 1} adds"
    )
    print(f"{'threads':>7}  {'config':<11} {'add ms':>8} {'passes':>7} {'pass ms':>8}")
    names = list(CONFIGS)
    for n_threads in thread_counts:
        numba.set_num_threads(n_threads)
        per: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                before = pass_time_s(args.side, unit_w)
                t = statistics.median(add_times_s(frames, CONFIGS[name]))
                unit = statistics.median([before, pass_time_s(args.side, unit_w)])
                per[name].append((t, unit))
        for name in names:
            t = statistics.median(v[0] for v in per[name])
            unit = statistics.median(v[1] for v in per[name])
            passes = statistics.median(v[0] / v[1] for v in per[name])
            rows.append(
                {
                    "threads": n_threads,
                    "config": name,
                    "add_ms": 1e3 * t,
                    "pass_ms": 1e3 * unit,
                    "passes": passes,
                    "passes_by_round": [v[0] / v[1] for v in per[name]],
                }
            )
            print(f"{n_threads:>7}  {name:<11} {1e3 * t:>8.1f} {passes:>7.1f} {1e3 * unit:>8.2f}")
    stages = []
    for n_threads in thread_counts:
        numba.set_num_threads(n_threads)
        per_stage: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            before = pass_time_s(args.side, unit_w)
            times = stage_times_s(frames)
            unit = statistics.median([before, pass_time_s(args.side, unit_w)])
            for key, t in times.items():
                per_stage.setdefault(key, []).append((t, unit))
        print(f"\nkernel calls in one add ({n_threads} thread(s), full): ms, passes")
        coarse = [0.0, 0.0]
        for key, v in per_stage.items():
            t = statistics.median(x[0] for x in v)
            passes = statistics.median(x[0] / x[1] for x in v)
            stages.append({"threads": n_threads, "stage": key, "ms": 1e3 * t, "passes": passes})
            level = int(key.split("[")[1].rstrip("]")) if "[" in key else -1
            if key.startswith(("fuse_level", "reduce_level")) and level >= 2:
                coarse[0] += 1e3 * t
                coarse[1] += passes
                continue
            print(f"  {key:<16} {1e3 * t:>7.2f} {passes:>6.1f}")
        print(f"  {'levels >= 2':<16} {coarse[0]:>7.2f} {coarse[1]:>6.1f}")
    by = {(r["threads"], r["config"]): r["passes"] for r in rows}
    print("\nshares (in passes), from the differences:")
    for n_threads in thread_counts:

        def p(name: str, n: int = n_threads) -> float:
            return by[(n, name)]

        print(
            f"  {n_threads} thread(s): intake and full-size blend {p('levels_1'):.1f}, level "
            f"0's band and activity {p('levels_2') - p('levels_1'):.1f}, coarser levels "
            f"{p('no_depth') - p('levels_2'):.1f}, depth tracking "
            f"{p('full') - p('no_depth'):.1f}, float32 input vs uint16 "
            f"{p('float32_in') - p('full'):+.1f}, soft vs hard weights "
            f"{p('no_depth') - p('hard'):+.1f}"
        )
    out = {
        "side": args.side,
        "frames": args.frames,
        "numba_threads_max": all_threads,
        "clock": args.clock,
        "load_average": list(os.getloadavg()),
        "rows": rows,
        "stages": stages,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
