"""Benchmark: does the napari viewer stay responsive while the EDF widget fuses a stack?

A ``QTimer`` ticks every 10 ms on the GUI thread of a napari viewer (not shown, offscreen
Qt) while the plugin's :class:`~nanoro_optics.napari._widget.FusionWidget` fuses a
``--frames`` x ``--side``^2 uint16 z-stack layer (default 20 x 2048^2, the issue's
acceptance case), from *Run* until its result layers are in the viewer. The event loop's
latency is the gap between consecutive ticks beyond the 10 ms interval: its median, 95th
and 99th percentiles and maximum, per run and as medians over ``--repeats`` runs. Two
references in the same process:

- *idle*: the same timer with nothing running, for as long as one fusion takes (the floor:
  the timer's own jitter on this machine);
- *on the GUI thread*: ``fuse_stack`` called from a timer callback, as a widget without a
  worker would (the viewer is frozen for the whole fusion: the largest gap is its length);
- the fusion's wall time through the widget vs ``fuse_stack`` directly (the cost of the
  frame-by-frame worker, its progress signals and the result layers).

numba's kernels are compiled (or loaded from the cache) by a small warm-up fusion first.
With ``--cold`` there is no warm-up and numba's cache is an empty folder, as on the first run
on a machine: the widget's first run then compiles the kernels in its worker thread (about a
minute on 2 cores), and the table shows how long the GUI thread waits for the GIL meanwhile
(numba's compiler is Python, llvmlite's passes release the GIL).

For the widget the largest gap is split into the fusion (up to the worker's result) and the
adding of the result layers on the GUI thread (napari's own cost of adding a layer: its Qt
controls and vispy node; the widget adds one layer per turn of the event loop).

Usage: python benchmarks/bench_napari_latency.py [--side 2048] [--frames 20] [--repeats 3]
[--cold] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TICK_MS = 10


def gap_stats(ticks: list[float]) -> dict[str, float]:
    """Latency of the event loop from tick times (s): the gaps beyond the interval, in ms."""
    if len(ticks) < 2:
        return {
            "ticks": len(ticks),
            "median_ms": float("nan"),
            "p95_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
        }
    gaps = np.diff(np.asarray(ticks)) * 1e3
    late = np.maximum(gaps - TICK_MS, 0.0)
    return {
        "ticks": len(ticks),
        "median_ms": float(np.median(late)),
        "p95_ms": float(np.percentile(late, 95)),
        "p99_ms": float(np.percentile(late, 99)),
        "max_ms": float(late.max()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="empty numba cache, no warm-up")
    ap.add_argument("--json", default="bench_results/napari_latency.json")
    args = ap.parse_args()
    if args.cold:  # before numba is imported: it reads the cache folder then
        import tempfile

        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")

    import napari
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from nanoro_optics.fusion import fuse_stack, synthetic_stack
    from nanoro_optics.napari._headless import answer_gl_queries, opengl_available
    from nanoro_optics.napari._widget import FusionWidget

    app = QApplication.instance() or QApplication([])
    gl_ok = opengl_available()
    if not gl_ok:
        answer_gl_queries()
    viewer = napari.Viewer(show=False)

    t = time.perf_counter()
    frames = synthetic_stack(
        (args.side, args.side), args.frames, seed=7, channels=1, dtype=np.uint16, noise_dn=20
    ).frames
    print(f"stack {frames.shape} {frames.dtype} made in {time.perf_counter() - t:.1f} s")
    if not args.cold:
        fuse_stack(frames[:3, :256, :256])  # warm-up: numba kernels compiled or loaded
    layer = viewer.add_image(frames, name="stack", contrast_limits=(0, 65535))
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer_box.value = layer
    widget.keep_earlier.value = True  # every repeat adds its layers (a re-run would replace)

    def run_timed(start: Any) -> tuple[list[float], float]:
        """Tick a timer while ``start(loop)`` runs something that quits ``loop`` at the end."""
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(TICK_MS)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        loop = QEventLoop()
        timer.start()
        t0 = time.perf_counter()
        QTimer.singleShot(0, lambda: start(loop))
        loop.exec()
        wall = time.perf_counter() - t0
        timer.stop()
        return ticks, wall

    watchers: list[Any] = []
    returned_at: list[float] = []

    def via_widget(loop: Any) -> None:
        """Run the widget; quit ``loop`` once its result layers are all in the viewer."""
        worker = widget.run()
        assert worker is not None, widget.message.value
        worker.returned.connect(lambda _run: returned_at.append(time.perf_counter()))
        watch = QTimer()
        watch.setInterval(5)
        watch.timeout.connect(lambda: None if widget.running else loop.quit())
        watch.start()
        watchers[:] = [watch]

    rows: list[dict[str, Any]] = []
    for r in range(args.repeats):
        n_before = len(viewer.layers)
        ticks, wall = run_timed(via_widget)
        assert len(viewer.layers) == n_before + 2, widget.message.value
        run = widget.last_run
        assert run is not None
        t_ret = returned_at[-1]  # the fusion is done; the result layers go in after
        late = np.maximum(np.diff(np.asarray(ticks)) * 1e3 - TICK_MS, 0.0)
        ends = np.asarray(ticks[1:])
        phases = {
            "fusing_max_ms": float(late[ends <= t_ret].max(initial=0.0)),
            "adding_max_ms": float(late[ends > t_ret].max(initial=0.0)),
        }
        cold = args.cold and r == 0
        rows.append(
            {
                "case": "widget, first run, cold numba" if cold else "widget (worker thread)",
                "repeat": r,
                "wall_s": wall,
                "fusion_s": run.seconds,
                **gap_stats(ticks),
                **phases,
            }
        )
        for layer_ in list(viewer.layers)[n_before:]:
            viewer.layers.remove(layer_)
        t = time.perf_counter()
        fuse_stack(frames)
        rows.append(
            {
                "case": "fuse_stack, no GUI",
                "repeat": r,
                "wall_s": time.perf_counter() - t,
                "fusion_s": time.perf_counter() - t,
            }
        )

    widget_walls = [row["wall_s"] for row in rows if row["case"] == "widget (worker thread)"]
    idle_s = statistics.median(widget_walls or [rows[0]["wall_s"]])
    ticks, wall = run_timed(lambda loop: QTimer.singleShot(int(idle_s * 1e3), loop.quit))
    rows.append({"case": "idle event loop", "repeat": 0, "wall_s": wall, **gap_stats(ticks)})

    def blocking(loop: Any) -> None:
        ticks_blocked.append(time.perf_counter())  # as if the timer ticked right before
        fuse_stack(frames)
        loop.quit()

    ticks_blocked: list[float] = []

    ticks, wall = run_timed(blocking)
    # the tick that waited for the whole fusion: the gap from the callback's start to the end
    ticks = sorted([*ticks_blocked, *ticks, time.perf_counter()])
    rows.append(
        {"case": "fuse_stack on the GUI thread", "repeat": 0, "wall_s": wall, **gap_stats(ticks)}
    )

    cases = list(dict.fromkeys(row["case"] for row in rows))
    summary = []
    for case in cases:
        sel = [row for row in rows if row["case"] == case]
        med = {
            k: statistics.median(row[k] for row in sel)
            for k in sel[0]
            if k not in ("case", "repeat")
        }
        summary.append({"case": case, "runs": len(sel), **med})
    direct = next(s["wall_s"] for s in summary if s["case"] == "fuse_stack, no GUI")
    print(
        f"\n{args.frames} x {args.side}^2 uint16, timer {TICK_MS} ms, medians of "
        f"{args.repeats} runs; OpenGL: {'yes' if gl_ok else 'no (GL queries answered)'}"
    )
    head = (
        f"{'case':32s} {'wall s':>7s} {'ratio':>6s} {'ticks':>6s} {'late median':>11s} "
        f"{'p95':>7s} {'p99':>7s} {'max ms':>8s} {'max fusing':>10s} {'max adding':>10s}"
    )
    print(head)
    print("-" * len(head))
    for s in summary:
        lat = "".join(
            f" {s[k]:{w}.1f}" if k in s else f" {'-':>{w}s}"
            for k, w in (
                ("median_ms", 11),
                ("p95_ms", 7),
                ("p99_ms", 7),
                ("max_ms", 8),
                ("fusing_max_ms", 10),
                ("adding_max_ms", 10),
            )
        )
        ticks_s = f"{int(s['ticks']):6d}" if "ticks" in s else f"{'-':>6s}"
        print(f"{s['case']:32s} {s['wall_s']:7.2f} {s['wall_s'] / direct:6.2f} {ticks_s}{lat}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "napari_latency",
        "side": args.side,
        "frames": args.frames,
        "tick_ms": TICK_MS,
        "opengl": gl_ok,
        "cold": args.cold,
        "python": platform.python_version(),
        "napari": napari.__version__,
        "cpus": os.cpu_count(),
    }
    out.write_text(json.dumps({**meta, "summary": summary, "rows": rows}, indent=1))
    print(f"\nwrote {out}")
    viewer.close()
    del app
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
