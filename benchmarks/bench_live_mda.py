"""Benchmark: the wall-time cost of live fusion (``LiveFusion``) in a pymmcore-plus MDA.

A grid of cells, each one useq ``MDASequence`` (``--positions`` stage positions x 1
channel x ``--z`` slices of ``--side`` x ``--side`` uint16 frames holding 12-bit data,
fused with ``bit_depth=12``) at one camera exposure (``--exposure-ms``), run on
``UniMMCore`` without a handler and with :class:`nanoro_optics.mmcore.LiveFusion`,
alternating: each of ``--repeats`` rounds runs the plain MDA, then the handler with the
default finish, then with ``finish_in_background=True``. A cell's overhead is the ratio of
the medians of the wall times less 1:

- *default*: until ``core.mda.run`` returns, which is once every frame is fused and every
  group's result and OME-TIFF are written;
- *background*: until ``core.mda.run`` returns (the last frame fused; the microscope is
  free), and, beside it, until ``live.wait()`` returns (the last file written).

By default the handler is connected as ``LiveFusion.run`` connects it (``with
live.attached(core): core.mda.run(seq)``): when frames come faster than they fuse, the
acquisition waits once ``max_backlog_frames`` wait, so the MDA's time is the fusion's.
``--connect output`` uses ``core.mda.run(seq, output=live)`` instead (pymmcore-plus' relay
thread and its unbounded queue). The cells record the handler's backlog warnings (how many
runs warned) and its measured rates (``LiveFusion.arrival_fps`` and ``fusion_fps``).

The camera returns pre-rendered frames (tiles of a ``synthetic_stack``) after sleeping its
exposure, as a real camera leaves the CPU free while it exposes; the stage is the mock on a
simulated clock (``--settle-ms`` makes every z move sleep that long, in both runs). The
frame size is ``--side`` (default 2048 x 2048, the size of pymmcore-plus' demo camera
configuration); ``--quick`` runs a small grid (256 x 256, 1 round) as a smoke run. The
grid's time is estimated from the warm-up and printed before it starts.

The machine may be shared: the load average, the environment (``OMP_WAIT_POLICY``,
``NUMBA_NUM_THREADS``), numba's and the handler's thread counts and the pymmcore-plus
version are recorded with the table (printed, and as JSON with every run's times), and
so is, for every run, how many cores other processes kept busy meanwhile (Linux: the
machine's busy CPU time less this process's, over the run's wall time; the table gives a
cell's largest): a cell where it is well above 0 measured a contended machine, not the
handler, and is worth running again.

Usage: python benchmarks/bench_live_mda.py [--quick] [--side 2048] [--z 10]
[--positions 1 4] [--exposure-ms 0 10 20 50 100] [--repeats 3] [--settle-ms 0]
[--threads N] [--connect attached|output] [--json bench_results/live_mda.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: the grid of the issue: exposures (ms) and stage positions
EXPOSURES_MS = (0.0, 10.0, 20.0, 50.0, 100.0)
POSITIONS = (1, 4)
FINISHES = ("default", "background")
CONNECTS = ("attached", "output")
Z0_UM, STEP_UM = 100.0, 2.0
OBJECTIVE = "Nikon MRP70101"  # depth of field 11.8 um: 2 um steps pass the plan check


class ReplayCamera:
    """A Camera that returns the pre-rendered frame of the stage's z after its exposure."""

    def __init__(self, stage: Any, frames: np.ndarray, z0_um: float, step_um: float) -> None:
        self.stage, self.frames = stage, frames
        self.z0_um, self.step_um = z0_um, step_um
        self._exposure_ms = 10.0

    @property
    def exposure_ms(self) -> float:
        return self._exposure_ms

    def set_exposure_ms(self, ms: float) -> None:
        self._exposure_ms = float(ms)

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        k = round((self.stage.get_position_um() - self.z0_um) / self.step_um)
        time.sleep(self._exposure_ms / 1000.0)  # the exposure: the CPU is free meanwhile
        return self.frames[int(np.clip(k, 0, len(self.frames) - 1))]


class SettlingStage:
    """A ZStage wrapper whose moves sleep ``settle_ms`` of wall time (moves that change z)."""

    def __init__(self, stage: Any, settle_ms: float) -> None:
        self.stage, self.settle_s = stage, settle_ms / 1000.0

    def move_to_um(self, z_um: float) -> None:
        moved = z_um != self.stage.get_position_um()
        self.stage.move_to_um(z_um)
        if moved and self.settle_s > 0:
            time.sleep(self.settle_s)  # moving and settling: the CPU is free meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stage, name)


def _frames(side: int, n: int) -> np.ndarray:
    """``n`` frames of ``side`` x ``side`` uint16 holding 12-bit data (tiles of 512 x 512)."""
    from nanoro_optics.fusion import synthetic_stack

    base = min(512, side)
    s = synthetic_stack((base, base), n, dtype=np.uint16, channels=1, noise_dn=20.0, seed=0)
    f = s.frames if s.frames.ndim == 3 else s.frames[..., 0]
    reps = -(-side // base)
    tiled = np.tile(f >> 4, (1, reps, reps))[:, :side, :side]  # 12-bit data in 16 bits
    return np.ascontiguousarray(tiled, dtype=np.uint16)


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for name in ("pymmcore-plus", "pymmcore", "useq-schema", "numba", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    try:
        out["nanoro_optics_commit"] = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["nanoro_optics_commit"] = None
    return out


def _median(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(statistics.median(vals)) if vals else math.nan


def _busy_cpu_s() -> float:
    """CPU seconds every process of the machine has used since boot (Linux; NaN elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    busy = sum(ticks[:3]) + sum(ticks[5:8])  # user, nice, system, irq, softirq, steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _timed(run: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run ``run(*args)``; return its result and the cores other processes used meanwhile.

    The machine's busy CPU time less this process's, over the wall time: 0 on a quiet
    machine, about 1 when another program kept a core busy (NaN where unknown).
    """
    busy0, own0, t0 = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()
    out = run(*args)
    wall = time.perf_counter() - t0
    other = (_busy_cpu_s() - busy0) - (_own_cpu_s() - own0)
    return out, max(0.0, other / wall) if wall > 0 and math.isfinite(other) else math.nan


def run_grid(
    *,
    side: int = 2048,
    n_z: int = 10,
    exposures_ms: Sequence[float] = EXPOSURES_MS,
    positions: Sequence[int] = POSITIONS,
    finishes: Sequence[str] = FINISHES,
    repeats: int = 3,
    settle_ms: float = 0.0,
    threads: int | None = None,
    connect: str = "attached",
    progress: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the grid; return its settings, versions, machine state and one row per cell.

    Each row holds, for ``(positions, exposure_ms)``, every run's wall time in s
    (``plain_s`` and, per finish, ``mda_s`` and ``outputs_s``), their medians and the
    overheads in % (``overhead_pct``: until ``core.mda.run`` returns;
    ``overhead_outputs_pct``: until every output is written), and the handler's backlog
    warnings (runs that warned) and rates (median over the runs of the handler's
    ``arrival_fps`` and ``fusion_fps``: frames/s the acquisition delivered and the handler
    fused, over each sequence's last 16 frames), and the cores other processes kept busy
    during each run (``plain_other_cores``, each finish's ``other_cores``, and the cell's
    largest, ``other_cores_max``).
    """
    import useq

    from nanoro_optics._numba import max_threads
    from nanoro_optics.hardware import MockZStage
    from nanoro_optics.mmcore import LiveFusion, LiveFusionBacklogWarning, simulated_core

    if side < 8 or n_z < 2 or repeats < 1 or not positions or not exposures_ms:
        raise ValueError(
            f"need side >= 8, n_z >= 2, repeats >= 1 and a grid; got side={side}, "
            f"n_z={n_z}, repeats={repeats}, positions={positions}, exposures={exposures_ms}"
        )
    if connect not in CONNECTS or any(f not in FINISHES for f in finishes):
        raise ValueError(f"connect must be one of {CONNECTS}, finishes of {FINISHES}")
    say = progress or (lambda _msg: None)
    frames = _frames(side, n_z)
    mock = MockZStage(position_um=Z0_UM, limits_um=(0.0, 1000.0))
    stage = SettlingStage(mock, settle_ms) if settle_ms > 0 else mock
    cam = ReplayCamera(mock, frames, Z0_UM, STEP_UM)
    core = simulated_core(
        stage, cam, frame_shape=frames.shape[1:], channels=["A"], pixel_size_um=0.65
    )
    opts: dict[str, Any] = {"bit_depth": 12}
    if threads is not None:
        opts["threads"] = threads

    def sequence(n_pos: int) -> Any:
        return useq.MDASequence(
            stage_positions=[(None, None, Z0_UM)] * n_pos,
            channels=["A"],
            z_plan=useq.ZRelativePositions(relative=[STEP_UM * k for k in range(n_z)]),
        )

    def plain(seq: Any) -> float:
        t0 = time.perf_counter()
        core.mda.run(seq)
        return time.perf_counter() - t0

    def live_run(seq: Any, n_pos: int, finish: str, out: str) -> dict[str, Any]:
        live = LiveFusion(
            out_dir=out, overwrite=True, finish_in_background=finish == "background", **opts
        )
        live.check(seq)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LiveFusionBacklogWarning)  # kept in the reports
            t0 = time.perf_counter()
            if connect == "attached":
                with live.attached(core):  # what live.run does, without its checks
                    core.mda.run(seq)
            else:
                core.mda.run(seq, output=live)
            mda_s = time.perf_counter() - t0
            live.wait()
            outputs_s = time.perf_counter() - t0
        if live.n_done != n_pos or live.errors:
            raise RuntimeError(f"live fusion did not fuse every group: {live.errors}")
        return {
            "mda_s": mda_s,
            "outputs_s": outputs_s,
            "warned": bool(live.backlog_reports),
            "arrival_fps": live.arrival_fps,  # over the sequence's last 16 frames
            "fusion_fps": live.fusion_fps,
        }

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: numba compiles (or loads its cache), the first fuser's pages; it also
        # times one frame's fusion and the plain MDA's own time per frame for the estimate
        cam.set_exposure_ms(0.0)
        seq1 = sequence(1)
        plain(seq1)
        t_plain0 = plain(seq1) / n_z
        live_run(seq1, 1, "default", tmp)
        t_live0 = live_run(seq1, 1, "default", tmp)["mda_s"] / n_z
        est = 0.0
        for n_pos in positions:
            for e in exposures_ms:
                p_s = n_pos * n_z * (e / 1000.0 + t_plain0)
                est += repeats * (p_s + len(finishes) * max(p_s, n_pos * n_z * t_live0))
        say(
            f"{side} x {side} uint16 (12-bit), {n_z} z, positions {list(positions)}, "
            f"exposures {list(exposures_ms)} ms, {repeats} round(s), connect={connect}; "
            f"warm-up: plain MDA {1000 * t_plain0:.1f} ms/frame, with live fusion "
            f"{1000 * t_live0:.1f} ms/frame; estimated grid time {est / 60:.1f} min"
        )
        t_grid = time.perf_counter()
        for n_pos in positions:
            seq = sequence(n_pos)
            for e in exposures_ms:
                cam.set_exposure_ms(e)
                plain_s: list[float] = []
                other: list[float] = []
                runs: dict[str, list[dict[str, Any]]] = {f: [] for f in finishes}
                for _ in range(repeats):  # alternating: plain, then each finish
                    t_plain, o = _timed(plain, seq)
                    plain_s.append(t_plain)
                    other.append(o)
                    for f in finishes:
                        r, o = _timed(live_run, seq, n_pos, f, tmp)
                        runs[f].append({**r, "other_cores": o})
                        other.append(o)
                row: dict[str, Any] = {
                    "positions": n_pos,
                    "exposure_ms": e,
                    "frames": n_pos * n_z,
                    "plain_s": plain_s,
                    "plain_median_s": _median(plain_s),
                    "plain_other_cores": other[:: 1 + len(finishes)],
                    "other_cores_max": max(other) if other else math.nan,
                }
                for f, rs in runs.items():
                    mda = _median([r["mda_s"] for r in rs])
                    outs = _median([r["outputs_s"] for r in rs])
                    row[f] = {
                        "mda_s": [r["mda_s"] for r in rs],
                        "outputs_s": [r["outputs_s"] for r in rs],
                        "mda_median_s": mda,
                        "outputs_median_s": outs,
                        "overhead_pct": 100.0 * (mda / row["plain_median_s"] - 1.0),
                        "overhead_outputs_pct": 100.0 * (outs / row["plain_median_s"] - 1.0),
                        "runs_warned": sum(r["warned"] for r in rs),
                        "arrival_fps": _median([r["arrival_fps"] for r in rs]),
                        "fusion_fps": _median([r["fusion_fps"] for r in rs]),
                        "other_cores": [r["other_cores"] for r in rs],
                    }
                rows.append(row)
                say(_row_line(row, finishes))
        grid_s = time.perf_counter() - t_grid
    return {
        "side": side,
        "dtype": "uint16",
        "bit_depth": 12,
        "z": n_z,
        "exposures_ms": list(exposures_ms),
        "positions": list(positions),
        "finishes": list(finishes),
        "repeats": repeats,
        "settle_ms": settle_ms,
        "connect": connect,
        "handler_threads": threads if threads is not None else LiveFusion().threads,
        "numba_threads": max_threads(),
        "warmup_ms_per_frame": {"plain": 1000 * t_plain0, "live": 1000 * t_live0},
        "estimated_s": est,
        "grid_s": grid_s,
        "versions": _versions(),
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "NUMBA_NUM_THREADS")},
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "rows": rows,
    }


def _pct(x: float) -> str:
    return f"{x:+.1f} %" if math.isfinite(x) else "n/a"


def _cores(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "n/a"


def _row_line(row: dict[str, Any], finishes: Sequence[str]) -> str:
    parts = [
        f"{row['positions']} pos, {row['exposure_ms']:5.1f} ms: plain {row['plain_median_s']:.2f} s"
    ]
    for f in finishes:
        c = row[f]
        parts.append(
            f"{f} {c['mda_median_s']:.2f} s ({_pct(c['overhead_pct'])}; outputs "
            f"{_pct(c['overhead_outputs_pct'])}; warned {c['runs_warned']}/{len(c['mda_s'])})"
        )
    parts.append(f"other processes up to {_cores(row['other_cores_max'])} cores")
    return ", ".join(parts)


def format_table(result: dict[str, Any]) -> str:
    """Return the grid as a Markdown table with a one-line header of the conditions."""
    fin = result["finishes"]
    v = result["versions"]
    head = (
        f"Live fusion overhead on the MDA's wall time, {result['side']} x {result['side']} "
        f"uint16 (12-bit), {result['z']} z per position, median of {result['repeats']} "
        f"(alternating with the plain MDA); connect={result['connect']}, handler threads "
        f"{result['handler_threads']} of {result['numba_threads']}; pymmcore-plus "
        f"{v['pymmcore-plus']}, commit {v['nanoro_optics_commit']}; load "
        f"{result['load_avg_before'][0]:.2f} -> {result['load_avg_after'][0]:.2f} on "
        f"{result['cpus']} CPUs"
    )
    cols = ["positions", "exposure ms", "plain MDA s"]
    if "default" in fin:
        cols += ["default: core.mda.run"]
    if "background" in fin:
        cols += ["background: core.mda.run", "background: last file written"]
    cols += ["runs warned (" + "/".join(fin) + ")", "arrival frames/s", "fusion frames/s"]
    cols += ["other processes, cores (max)"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in result["rows"]:
        cells = [str(row["positions"]), f"{row['exposure_ms']:g}", f"{row['plain_median_s']:.2f}"]
        if "default" in fin:
            cells.append(_pct(row["default"]["overhead_pct"]))
        if "background" in fin:
            b = row["background"]
            cells += [_pct(b["overhead_pct"]), _pct(b["overhead_outputs_pct"])]
        warned = "/".join(f"{row[f]['runs_warned']}" for f in fin)
        cells.append(warned)
        for rate in ("arrival_fps", "fusion_fps"):
            fps = [row[f][rate] for f in fin if math.isfinite(row[f][rate])]
            cells.append(f"{statistics.median(fps):.1f}" if fps else "-")
        cells.append(_cores(row.get("other_cores_max", math.nan)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke grid (256 x 256)")
    ap.add_argument("--side", type=int, default=None, help="frame side (default 2048)")
    ap.add_argument("--z", type=int, default=None, help="z slices per position (default 10)")
    ap.add_argument("--positions", type=int, nargs="+", default=None)
    ap.add_argument("--exposure-ms", type=float, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 3)")
    ap.add_argument("--settle-ms", type=float, default=0.0, help="stage move + settle time")
    ap.add_argument("--threads", type=int, default=None, help="LiveFusion(threads=)")
    ap.add_argument("--connect", choices=CONNECTS, default="attached")
    ap.add_argument("--json", default="bench_results/live_mda.json")
    args = ap.parse_args(argv)
    quick: dict[str, Any] = {"side": 256, "z": 5, "positions": [1, 2], "repeats": 1}
    quick["exposure_ms"] = [0.0, 20.0]
    full: dict[str, Any] = {"side": 2048, "z": 10, "positions": list(POSITIONS), "repeats": 3}
    full["exposure_ms"] = list(EXPOSURES_MS)
    base = quick if args.quick else full
    pick = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}
    result = run_grid(
        side=pick["side"],
        n_z=pick["z"],
        exposures_ms=pick["exposure_ms"],
        positions=pick["positions"],
        repeats=pick["repeats"],
        settle_ms=args.settle_ms,
        threads=args.threads,
        connect=args.connect,
    )
    print()
    print(format_table(result))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\ngrid took {result['grid_s']:.0f} s (estimated {result['estimated_s']:.0f} s)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
