"""Benchmark: batch fusion on a dask LocalCluster (1 vs 2 workers) and tiled fusion.

Part 1: N synthetic stacks (default 40 of 2048 x 2048 RGB x 15 frames, ~4.2 MP) written as
multi-page TIFFs; fused by ``fuse_many`` on a LocalCluster of 1 and of 2 single-threaded worker
processes in the same run (throughput, ratio, peak RSS per worker), and checked against
sequential ``fuse_stack`` in this process. Peer: ``enfuse`` (Debian) on one stack, if found.

Part 2: a large stack (default 10000 x 10000 RGB uint16 x 10 frames, 6 GB) written as an
uncompressed multi-page TIFF, fused by ``fuse_tiled`` from the memory map into memory-mapped
TIFFs in a child process whose peak RSS is reported; tiled == untiled is checked on a 4 MP
crop of it in the same run.

Synthetic frames are mirror-free tilings of a smaller ``synthetic_stack`` (generating 4 MP
directly takes minutes); only the work per pixel matters here.

Usage: python benchmarks/bench_batch.py [--quick] [--json PATH] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _peak_rss_mb() -> float:
    """Peak RSS of this process (MB).

    Read from ``VmHWM`` in /proc/self/status: ``ru_maxrss`` of a process started by
    fork + exec (multiprocessing's spawn, dask's nanny) starts at its parent's RSS at the fork,
    which is not this process's own peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _make_stack(shape: tuple[int, int], n_frames: int, seed: int, dtype: Any) -> np.ndarray:
    from nanoro_optics.fusion import synthetic_stack

    base = 512
    s = synthetic_stack((base, base), n_frames, seed=seed, dtype=dtype, noise_dn=2.0)
    reps = (-(-shape[0] // base), -(-shape[1] // base))
    return np.ascontiguousarray(np.tile(s.frames, (1, *reps, 1))[:, : shape[0], : shape[1]])


def _write_batch(root: Path, n_stacks: int, side: int, n_frames: int, n_unique: int) -> dict:
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    uniques = []
    for u in range(n_unique):
        path = root / f"unique{u}.tif"
        frames = _make_stack((side, side), n_frames, seed=u, dtype=np.uint8)
        tifffile.imwrite(path, frames, photometric="rgb")
        uniques.append(path)
    stacks = {}
    for k in range(n_stacks):
        path = root / f"stack{k:03d}.tif"
        if not path.exists():
            os.link(uniques[k % n_unique], path)  # same bytes, separate stacks
        stacks[f"stack{k:03d}"] = str(path)
    return {"stacks": stacks, "uniques": [str(p) for p in uniques]}


def _worker_peak_rss_mb() -> float:
    return _peak_rss_mb()


def _cluster_run(
    data: dict, refs: list[np.ndarray], n_unique: int, n_workers: int, work: Path
) -> dict[str, Any]:
    import logging

    import distributed

    from nanoro_optics.distributed import fuse_many
    from nanoro_optics.distributed.batch import _warm_kernels
    from nanoro_optics.io import read_image

    cluster = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    try:
        # one-time cost per worker process (numba loads the cached kernels), kept out of
        # the throughput and reported on its own
        t = time.perf_counter()
        client.run(_warm_kernels)
        warm = time.perf_counter() - t
        out = work / f"batch_out_{n_workers}"
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        report = fuse_many(data["stacks"], out, client=client, overwrite=True)
        wall = time.perf_counter() - t
        load1 = os.getloadavg()[0]
        rss = client.run(_worker_peak_rss_mb)
    finally:
        client.close()
        cluster.close()
    equal = True
    for k, rec in enumerate(report.records):
        if rec.status != "done":
            equal = False
            continue
        equal &= bool(np.array_equal(read_image(rec.image_path), refs[k % n_unique]))
    return {
        "wall_s": wall,
        "stacks_per_s": len(report.records) / wall,
        "failed": len(report.failed),
        "equal_to_sequential": equal,
        "peak_rss_mb_per_worker": sorted(rss.values()),
        "mean_task_s": float(np.mean([r.seconds for r in report.records])),
        "mean_task_cpu_s": float(np.mean([r.cpu_seconds for r in report.records])),
        "worker_warmup_s": warm,
        "load_average_1min_before_after": [load0, load1],
    }


def bench_batch(args: argparse.Namespace, work: Path) -> dict:
    from nanoro_optics.distributed.batch import _warm_kernels
    from nanoro_optics.fusion import fuse_stack
    from nanoro_optics.io import iter_stack

    t0 = time.perf_counter()
    data = _write_batch(work / "batch_in", args.stacks, args.side, args.frames, args.unique)
    t_write = time.perf_counter() - t0
    _warm_kernels()

    # sequential reference, one thread, in this process
    import numba

    numba.set_num_threads(1)
    refs = []
    seq_times = []
    for path in data["uniques"]:
        t = time.perf_counter()
        refs.append(fuse_stack(iter_stack(path)).image)
        seq_times.append(time.perf_counter() - t)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    seq_per_stack = min(seq_times)

    runs: dict[int, dict[str, Any]] = {}
    for _ in range(args.repeats):
        for n_workers in (1, 2):
            run = _cluster_run(data, refs, args.unique, n_workers, work)
            best = runs.get(n_workers)
            if best is None or run["stacks_per_s"] > best["stacks_per_s"]:
                runs[n_workers] = run
    speedup = runs[2]["stacks_per_s"] / runs[1]["stacks_per_s"]

    peer: dict[str, Any] = {"enfuse": None}
    enfuse = shutil.which("enfuse")
    if enfuse:
        import tifffile

        frames = tifffile.imread(data["uniques"][0])
        pdir = work / "enfuse_frames"
        pdir.mkdir(exist_ok=True)
        files = []
        for k, f in enumerate(frames):
            files.append(str(pdir / f"f{k:02d}.tif"))
            tifffile.imwrite(files[-1], f, photometric="rgb")
        cmd = [
            enfuse,
            "--exposure-weight=0",
            "--saturation-weight=0",
            "--contrast-weight=1",
            "--hard-mask",
            "-o",
            str(pdir / "out.tif"),
            *files,
        ]
        t = time.perf_counter()
        ok = subprocess.run(cmd, capture_output=True).returncode == 0
        t_enfuse = time.perf_counter() - t
        peer["enfuse"] = {"s_per_stack": t_enfuse, "ok": ok}
    return {
        "n_stacks": args.stacks,
        "stack": f"{args.side}x{args.side} RGB uint8 x {args.frames}",
        "write_s": t_write,
        "sequential_s_per_stack_1thread": seq_per_stack,
        "runs": {str(k): v for k, v in sorted(runs.items())},
        "repeats": args.repeats,
        "speedup_2_vs_1_workers": speedup,
        "peers": peer,
    }


def _tiled_child(conn: Any, src: str, out_dir: str, tile_px: int) -> None:
    from nanoro_optics.distributed import fuse_tiled

    t = time.perf_counter()
    res = fuse_tiled(
        src,
        tile_px=tile_px,
        image_path=Path(out_dir) / "fused.tif",
        depth_path=Path(out_dir) / "depth.tif",
        confidence_path=Path(out_dir) / "confidence.tif",
    )
    conn.send(
        {
            "wall_s": time.perf_counter() - t,
            "peak_rss_mb": _peak_rss_mb(),
            "levels": res.levels,
            "margin_px": res.margin_px,
            "n_tiles": res.n_tiles,
            "tile_px": res.tile_px,
        }
    )
    conn.close()


def bench_tiled(args: argparse.Namespace, work: Path) -> dict:
    import tifffile

    from nanoro_optics.distributed import fuse_tiled
    from nanoro_optics.fusion import fuse_stack

    side = args.tiled_side
    n = args.tiled_frames
    src = work / "big.tif"
    t = time.perf_counter()
    small = _make_stack((1024, 1024), n, seed=11, dtype=np.uint16)
    reps = -(-side // 1024)
    mm = tifffile.memmap(src, shape=(n, side, side, 3), dtype=np.uint16, photometric="rgb")
    for k in range(n):
        mm[k] = np.tile(small[k], (reps, reps, 1))[:side, :side]
        mm.flush()
    del mm
    t_write = time.perf_counter() - t
    stack_gb = n * side * side * 3 * 2 / 1e9

    out = work / "tiled_out"
    out.mkdir(exist_ok=True)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_tiled_child, args=(child, str(src), str(out), args.tile_px))
    proc.start()
    result = parent.recv()
    proc.join()

    # tiled == untiled, on a 2048 x 2048 crop (the untiled fusion of the whole stack would
    # need several GB)
    crop = tifffile.memmap(src, mode="r")[:, :2048, :2048]
    crop = np.ascontiguousarray(crop)
    ref = fuse_stack(crop, levels=result["levels"])
    tiled = fuse_tiled(crop, levels=result["levels"], tile_px=512)
    equal = bool(
        np.array_equal(tiled.image, ref.image)
        and np.array_equal(tiled.depth, ref.depth, equal_nan=True)
    )
    mem = _total_memory_gb()
    return {
        "stack": f"{side}x{side} RGB uint16 x {n}",
        "stack_gb": stack_gb,
        "machine_memory_gb": mem,
        "stack_fraction_of_memory": stack_gb / mem if mem else None,
        "write_s": t_write,
        **result,
        "mp_frames_per_s": side * side * n / 1e6 / result["wall_s"],
        "tiled_equals_untiled_2048_crop": equal,
    }


def _total_memory_gb() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().total) / 1e9
    except ImportError:
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument("--json", default="bench_results/batch.json", help="JSON output path")
    parser.add_argument("--workdir", help="folder for the data (default: a temporary folder)")
    parser.add_argument("--stacks", type=int, default=40)
    parser.add_argument("--side", type=int, default=2048, help="stack frame side (px)")
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--unique", type=int, default=4, help="distinct stacks generated")
    parser.add_argument("--tiled-side", type=int, default=10000)
    parser.add_argument("--tiled-frames", type=int, default=10)
    parser.add_argument("--tile-px", type=int, default=2048)
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate 1- and 2-worker runs; keep the best"
    )
    parser.add_argument("--skip-tiled", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.stacks, args.side, args.frames, args.unique = 8, 1024, 8, 2
        args.tiled_side, args.tiled_frames, args.tile_px = 3000, 4, 1024

    tmp = None
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="bench_batch_")
        work = Path(tmp)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": args.quick,
    }
    try:
        if not args.skip_batch:
            b = bench_batch(args, work)
            results["batch"] = b
            print(f"\nBatch: {b['n_stacks']} stacks of {b['stack']}")
            print(
                f"{'workers':>8} {'wall s':>8} {'stacks/s':>9} {'peak RSS/worker MB':>22} "
                f"{'== sequential':>14} {'failed':>7}"
            )
            for k, r in b["runs"].items():
                rss = ", ".join(f"{v:.0f}" for v in r["peak_rss_mb_per_worker"])
                print(
                    f"{k:>8} {r['wall_s']:8.1f} {r['stacks_per_s']:9.3f} {rss:>22} "
                    f"{r['equal_to_sequential']!s:>14} {r['failed']:>7}"
                )
            for k, r in b["runs"].items():
                print(
                    f"  {k} worker(s): mean task {r['mean_task_s']:.2f} s, worker warm-up "
                    f"{r['worker_warmup_s']:.1f} s (not in the throughput)"
                )
            print(f"speedup 2 vs 1 workers: {b['speedup_2_vs_1_workers']:.2f}x (target >= 1.6)")
            seq = b["sequential_s_per_stack_1thread"]
            print(f"sequential fuse_stack, 1 thread, in-process: {seq:.2f} s/stack")
            peer = b["peers"]["enfuse"]
            if peer is None:
                print("peer enfuse: not found")
            else:
                print(
                    f"peer enfuse (one stack, its own threads): {peer['s_per_stack']:.2f} s "
                    f"-> ratio enfuse / fuse_stack(1 thread) = {peer['s_per_stack'] / seq:.2f}"
                )
        if not args.skip_tiled:
            t = bench_tiled(args, work)
            results["tiled"] = t
            print(
                f"\nTiled: {t['stack']} ({t['stack_gb']:.1f} GB; machine "
                f"{t['machine_memory_gb']:.1f} GB)"
            )
            print(
                f"levels {t['levels']}, margin {t['margin_px']} px, {t['n_tiles']} tiles of "
                f"{t['tile_px']} px: {t['wall_s']:.1f} s ({t['mp_frames_per_s']:.1f} "
                f"MP-frames/s), peak RSS {t['peak_rss_mb']:.0f} MB"
            )
            print(f"tiled == untiled on a 2048 px crop: {t['tiled_equals_untiled_2048_crop']}")
            print(
                "peers: none found that fuse a focus stack out of core (enfuse, focus-stack "
                "hold whole frames)"
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
