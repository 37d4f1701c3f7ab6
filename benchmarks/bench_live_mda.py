"""Benchmark: the wall-time cost of live fusion (``LiveFusion``) in a pymmcore-plus MDA.

The same useq ``MDASequence`` (default 1 position x 1 channel x 20 z of 2048 x 2048 uint16;
``--positions``)
runs on ``UniMMCore`` with and without :class:`nanoro_optics.mmcore.LiveFusion` as its output,
alternating, ``--repeats`` times each; the overhead is the ratio of the median wall times
of ``core.mda.run`` (which returns only once the handler has handled every frame, the
last group's result and its OME-TIFF included). With ``--background`` the handler is
``LiveFusion(finish_in_background=True)``: ``core.mda.run`` then returns once the last
frame is fused, and the time until ``live.wait()`` returns (every output written) is
reported beside it, as ``overhead_to_outputs``.

The camera returns pre-rendered frames (tiles of a ``synthetic_stack``) after sleeping its
exposure, as a real camera leaves the CPU free while it exposes. The stage is the mock on a
simulated clock: by default its moves take no wall time, which no real stage does;
``--settle-ms`` makes every move that changes z sleep that long (a real focus drive takes
some 10 to 30 ms to move a few um and settle), the same in both runs. The overhead
therefore depends on the exposure (and the settling): fusion runs in pymmcore-plus' relay
thread while the next frames are exposed, and what shows is the fusion the exposures
cannot hide, plus the last group's result and file (the handler finishes a group in its
own thread, overlapping the next group's acquisition; only the last group's end adds).

``--threads`` is LiveFusion's ``threads`` (numba threads while the MDA acquires). The
environment (``OMP_WAIT_POLICY``, ``NUMBA_NUM_THREADS``) and the load average are recorded:
the machine may be shared, so compare runs made side by side.

Usage: python benchmarks/bench_live_mda.py [--side 2048] [--frames 20] [--positions 1]
[--exposure-ms 0 20 50 100] [--settle-ms 0] [--threads N] [--background] [--repeats 3]
[--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    from nanoro_optics.fusion import synthetic_stack

    base = 512
    s = synthetic_stack((base, base), n, dtype=np.uint16, channels=1, noise_dn=20.0, seed=0)
    f = s.frames if s.frames.ndim == 3 else s.frames[..., 0]
    reps = -(-side // base)
    return np.ascontiguousarray(np.tile(f, (1, reps, reps))[:, :side, :side])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--positions", type=int, default=1, help="stage positions (z-loops)")
    ap.add_argument("--exposure-ms", type=float, nargs="+", default=[0.0, 20.0, 50.0, 100.0])
    ap.add_argument("--settle-ms", type=float, default=0.0, help="stage move + settle time")
    ap.add_argument(
        "--threads", type=int, default=None, help="LiveFusion(threads=); default its own"
    )
    ap.add_argument(
        "--background",
        action="store_true",
        help="LiveFusion(finish_in_background=True): the MDA's time is until core.mda.run "
        "returns; the time until every output is written is reported beside it",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="bench_results/live_mda.json")
    args = ap.parse_args()

    import useq

    from nanoro_optics.hardware import MockZStage
    from nanoro_optics.mmcore import LiveFusion, simulated_core

    frames = _frames(args.side, args.frames)
    z0, step = 100.0, 2.0
    mock = MockZStage(position_um=z0, limits_um=(0.0, 1000.0))
    stage = SettlingStage(mock, args.settle_ms) if args.settle_ms > 0 else mock
    cam = ReplayCamera(mock, frames, z0, step)
    core = simulated_core(
        stage, cam, frame_shape=frames.shape[1:], channels=["A"], pixel_size_um=0.65
    )
    seq = useq.MDASequence(
        stage_positions=[(None, None, z0)] * args.positions,
        channels=["A"],
        z_plan=useq.ZRelativePositions(relative=[step * k for k in range(args.frames)]),
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # warm up: numba compiles (or loads its cache), pages of the first fuser
        opts = {} if args.threads is None else {"threads": args.threads}
        LiveFusion(out_dir=tmp, overwrite=True, **opts).run(
            core, seq, limits_um=mock.limits_um, objective="Nikon MRP70101"
        )
        for exposure in args.exposure_ms:
            cam.set_exposure_ms(exposure)
            plain, live_s, outputs_s = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                core.mda.run(seq)
                plain.append(time.perf_counter() - t0)
                live = LiveFusion(
                    out_dir=tmp, overwrite=True, finish_in_background=args.background, **opts
                )
                live.check(seq)
                t0 = time.perf_counter()
                core.mda.run(seq, output=live)  # (what live.run does, without its wait)
                live_s.append(time.perf_counter() - t0)
                live.wait()
                outputs_s.append(time.perf_counter() - t0)
                assert live.n_done == args.positions and not live.errors
            row = {
                "exposure_ms": exposure,
                "settle_ms": args.settle_ms,
                "background": args.background,
                "plain_s": statistics.median(plain),
                "live_s": statistics.median(live_s),
                "outputs_done_s": statistics.median(outputs_s),
            }
            row["overhead"] = row["live_s"] / row["plain_s"] - 1.0
            row["overhead_to_outputs"] = row["outputs_done_s"] / row["plain_s"] - 1.0
            rows.append(row)
            print(
                f"exposure {exposure:5.1f} ms, settle {args.settle_ms:g} ms: MDA "
                f"{row['plain_s']:.2f} s, with live fusion "
                f"{row['live_s']:.2f} s, overhead {100 * row['overhead']:+.1f} %; every "
                f"output written after {row['outputs_done_s']:.2f} s "
                f"({100 * row['overhead_to_outputs']:+.1f} %)",
                flush=True,
            )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "side": args.side,
        "frames": args.frames,
        "positions": args.positions,
        "settle_ms": args.settle_ms,
        "threads": args.threads,
        "background": args.background,
        "repeats": args.repeats,
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "NUMBA_NUM_THREADS")},
        "load_avg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    out.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
