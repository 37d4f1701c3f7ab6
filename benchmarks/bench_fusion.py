"""Benchmark of the focus fuser against installed peers on synthetic stacks with ground truth.

Cases (``--quick`` shrinks every one):

* quality, 1024^2 x 15 RGB: clean, noisy (3 DN), breathing (+-1.4 %, aligned), 16-bit;
  PSNR and SSIM against the all-in-focus truth, depth RMSE (frames) where depth is defined;
* speed, 4000 x 3000 x 20 RGB: this fuser from uint8 arrays in memory, and every tool from
  PNG files (this one through ``python -m nanoro_optics fuse``), wall time and peak RSS;
* memory against the number of frames: the CLI on 10 and on 40 frames (files cycled);
* hard scenes (:mod:`nanoro_optics.fusion.scenes`, pillbox defocus, photon and read noise):
  12-bit RGB fluorescence, 8-bit occlusion with glow, 12-bit grey thick sample at 15 and 40
  frames; PSNR, SSIM, halo-band ratio, flat-region PSNR, depth RMSE and coverage beside the
  peers and a plain max-abs Laplacian pyramid (the yardstick, written in ``_hard.py``);
  on the scenes with object edges also the oracle selection of ``_hard.py``, which picks
  per coefficient the frame nearest the truth: not a fuser, the bound of any rule that
  picks among the frames' coefficients.

Peers found on the machine are run in the same run: ``enfuse`` (Debian package,
``--contrast-weight=1 --hard-mask``), ``focusweave`` and ``openfocus`` (PyPI). Wall times are
the minimum of ``--repeats`` runs; the machine is shared, so read the ratios.

Usage: ``python benchmarks/bench_fusion.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nanoro_optics.fusion import fuse_stack, synthetic_stack
from nanoro_optics.fusion.synthetic import _magnify


def psnr(a: np.ndarray, b: np.ndarray, full: float) -> float:
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(full**2 / max(err, 1e-30)))


def ssim(a: np.ndarray, b: np.ndarray, full: float) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            a.astype(np.float64), b.astype(np.float64), data_range=full, channel_axis=-1
        )
    )


def write_frames(frames: np.ndarray, folder: Path) -> list[Path]:
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, f in enumerate(frames):
        if f.dtype == np.uint8:
            p = folder / f"frame_{k:03d}.png"
            iio.imwrite(p, f)
        else:  # 16-bit RGB: TIFF (Pillow cannot write 16-bit RGB PNG)
            import tifffile

            p = folder / f"frame_{k:03d}.tif"
            tifffile.imwrite(p, f, photometric="rgb")
        paths.append(p)
    return paths


def timed_run(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall s, peak RSS MB, stderr tail) measured by /usr/bin/time."""
    tfile = tempfile.NamedTemporaryFile(suffix=".time", delete=False)
    tfile.close()
    full = ["/usr/bin/time", "-f", "%e %M", "-o", tfile.name, *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(full, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    try:
        parts = Path(tfile.name).read_text().split()
        rss = float(parts[-1]) / 1024.0
    except (OSError, ValueError, IndexError):
        rss = float("nan")
    os.unlink(tfile.name)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-400:]}")
    return wall, rss, proc.stderr[-200:]


def read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    if path.suffix in (".tif", ".tiff"):
        import tifffile

        img = tifffile.imread(path)
    else:
        img = iio.imread(path)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    return np.asarray(img)


# --- peers -----------------------------------------------------------------------------
def peer_commands(files: list[Path], folder: Path, out: Path, align: bool) -> dict[str, Any]:
    cmds: dict[str, Any] = {}
    if shutil.which("enfuse"):
        from _hard import enfuse_command

        cmds["enfuse"] = (
            enfuse_command(files, out.with_suffix(".enfuse.png")),
            out.with_suffix(".enfuse.png"),
        )
    if shutil.which("focusweave"):
        cmd = ["focusweave", str(folder), "--output", str(out.with_suffix(".fw.png"))]
        cmd += ["--keep-size"] + ([] if align else ["--no-align"])
        cmds["focusweave"] = cmd, out.with_suffix(".fw.png")
    if shutil.which("openfocus"):
        cmds["openfocus"] = (
            [
                "openfocus",
                str(folder),
                "-o",
                str(out.with_suffix(".of.png")),
            ],
            out.with_suffix(".of.png"),
        )
    return cmds


def ours_cli(files: list[Path], out: Path, align: bool, depth_map: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "nanoro_optics", "fuse", *map(str, files), "-o", str(out), "-q"]
    cmd += ["--overwrite"]  # repeated runs write the same outputs
    if depth_map is not None:
        cmd += ["--depth-map", str(depth_map)]
    return cmd + (["--align"] if align else [])


# --- cases -----------------------------------------------------------------------------
def quality_case(
    name: str, stack: Any, full: float, align: bool, tmp: Path, repeats: int, peers: bool
) -> list[dict[str, Any]]:
    rows = []
    truths = [stack.truth]
    margin = 0
    if align:
        truths.append(_magnify(stack.truth.astype(np.float64), float(stack.magnification[0]), 3))
        margin = int(0.03 * max(stack.truth.shape[:2]))

    def score(img: np.ndarray) -> tuple[float, float]:
        sl = (slice(margin, img.shape[0] - margin), slice(margin, img.shape[1] - margin))
        best = max(truths, key=lambda t: psnr(img[sl], t[sl], full))
        return psnr(img[sl], best[sl], full), ssim(img[sl], best[sl], full)

    wall = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fuse_stack(stack.frames, align=align)
        wall.append(time.perf_counter() - t0)
    p, s = score(res.image)
    ok = ~np.isnan(res.depth)
    depth_truth = stack.depth
    if align:
        depth_truth = _magnify(stack.depth.astype(np.float64), float(stack.magnification[0]), 1)
    rmse = float(np.sqrt(np.mean((res.depth[ok] - depth_truth[ok]) ** 2))) if ok.any() else np.nan
    rows.append(
        dict(
            case=name,
            tool="nanoro_optics",
            psnr_db=p,
            ssim=s,
            wall_s=min(wall),
            depth_rmse_frames=rmse,
            depth_coverage=float(ok.mean()),
        )
    )
    # the oracle: per pixel, the frame nearest the true depth
    if not align:
        k = np.clip(np.rint(stack.depth), 0, stack.n_frames - 1).astype(int)
        oracle = np.take_along_axis(stack.frames, k[None, ..., None], axis=0)[0]
        p, s = score(oracle)
        rows.append(dict(case=name, tool="oracle (true depth)", psnr_db=p, ssim=s))
    if peers:
        folder = tmp / name
        files = write_frames(stack.frames, folder)
        for tool, (cmd, out) in peer_commands(files, folder, tmp / f"{name}_out", align).items():
            try:
                wall_s, rss, _ = timed_run(cmd)
                img = read_image(out)
                if img.shape != stack.truth.shape:
                    raise RuntimeError(f"output shape {img.shape}")
                if img.dtype != stack.truth.dtype:
                    img = img.astype(np.float64) * (full / np.iinfo(img.dtype).max)
                p, s = score(img)
                rows.append(
                    dict(case=name, tool=tool, psnr_db=p, ssim=s, wall_s=wall_s, peak_rss_mb=rss)
                )
            except Exception as exc:  # a peer failing is reported, not fatal
                rows.append(dict(case=name, tool=tool, error=str(exc)[:200]))
    return rows


HARD_CASES = (("fluorescence", 15), ("occlusion", 15), ("thick", 15), ("thick", 40))


def hard_case(kind: str, n: int, size: int, tmp: Path, peers: bool) -> list[dict[str, Any]]:
    import _hard

    from nanoro_optics.fusion import scene_stack

    t0 = time.perf_counter()
    scene = scene_stack(kind, (size, size), n, seed=3)
    name = f"hard {kind} x{n}"
    print(f"  made {kind} {size}^2 x {n} in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    res = fuse_stack(scene.frames)
    wall = time.perf_counter() - t0
    rows = [
        dict(
            case=name,
            tool="nanoro_optics",
            wall_s=wall,
            **_hard.scores(res.image, scene),
            **_hard.depth_scores(res.depth, scene, res.confidence),
            weak_fraction=float(np.mean(res.confidence < 0.5)),
        )
    ]
    t0 = time.perf_counter()
    yard = _hard.maxabs_pyramid(scene.frames)
    rows.append(
        dict(
            case=name,
            tool="max-abs pyramid (yardstick)",
            wall_s=time.perf_counter() - t0,
            **_hard.scores(yard, scene),
        )
    )
    if scene.edges.any():  # what picking coefficients can reach next to the edges at best
        t0 = time.perf_counter()
        bound = _hard.oracle_selection(scene.frames, scene.truth)
        rows.append(
            dict(
                case=name,
                tool="oracle selection (knows the truth)",
                wall_s=time.perf_counter() - t0,
                **_hard.scores(bound, scene),
            )
        )
    if peers:
        for tool, (img, wall_s, err) in _hard.peer_images(scene, tmp).items():
            if img is None:
                rows.append(dict(case=name, tool=tool, error=err))
            else:
                rows.append(dict(case=name, tool=tool, wall_s=wall_s, **_hard.scores(img, scene)))
    return rows


def alternating_runs(
    cmds: dict[str, list[str]], rounds: int
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, str]]:
    """Run every command once per round, in turn: ``{name: [(wall s, peak RSS MB), ...]}``.

    On a shared machine the load drifts over minutes; runs of two tools side by side in the
    same round see about the same load, so the ratio of each round is steadier than the
    ratio of two separate minimums. A command that fails is dropped (its error returned).
    """
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    errors: dict[str, str] = {}
    for _ in range(rounds):
        for name, cmd in cmds.items():
            if name in errors:
                continue
            try:
                w, r, _ = timed_run(cmd)
            except Exception as exc:
                errors[name] = str(exc)[:200]
                continue
            runs[name].append((w, r))
    return runs, errors


def speed_case(
    shape: tuple[int, int], n: int, tmp: Path, repeats: int, peers: bool
) -> list[dict[str, Any]]:
    """The 12 MP case: in memory, then every tool from PNG files in alternating rounds.

    Each round runs this CLI, the CLI with a depth map, then every peer found, once each
    (at least 3 rounds); a row gives the median wall time and the largest peak RSS of its
    runs, and a peer's row ``ratio_to_ours_median`` (the median over rounds of the peer's
    wall time divided by this CLI's in the same round) and each round's ratio.
    """
    rows = []
    t0 = time.perf_counter()
    stack = synthetic_stack(shape, n, seed=7)
    print(f"  generated {shape[1]}x{shape[0]}x{n} in {time.perf_counter() - t0:.0f} s", flush=True)
    mp = shape[0] * shape[1] / 1e6
    wall = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        res = fuse_stack(stack.frames)
        wall.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu0
    rows.append(
        dict(
            case=f"{mp:.0f}MP x{n} memory",
            tool="nanoro_optics",
            wall_s=min(wall),
            cpu_s=cpu,
            psnr_db=psnr(res.image, stack.truth, 255.0),
        )
    )
    folder = tmp / "large"
    files = write_frames(stack.frames, folder)
    truth = stack.truth
    del stack, res
    out = tmp / "large_ours.png"
    ours, ours_d = "nanoro_optics (CLI)", "nanoro_optics (CLI, --depth-map)"
    cmds = {ours: ours_cli(files, out, False), ours_d: ours_cli(files, out, False, tmp / "d.tif")}
    outputs = {ours: out}
    if peers:
        for tool, (cmd, pout) in peer_commands(files, folder, tmp / "large_out", False).items():
            cmds[tool] = cmd
            outputs[tool] = pout
    rounds = max(3, repeats)
    runs, errors = alternating_runs(cmds, rounds)
    if ours in errors:
        raise RuntimeError(f"{ours}: {errors[ours]}")
    ours_walls = [w for w, _ in runs[ours]]
    for tool in cmds:
        row: dict[str, Any] = dict(case=f"{mp:.0f}MP x{n} files", tool=tool)
        if tool in errors:
            rows.append(dict(row, error=errors[tool]))
            continue
        walls = [w for w, _ in runs[tool]]
        peak = max(r for _, r in runs[tool])
        row.update(
            wall_s=float(np.median(walls)),
            wall_runs_s=walls,
            peak_rss_mb=peak,
            rss_mb_per_mp=peak / mp,
        )
        if tool not in (ours, ours_d):
            ratios = [w / o for w, o in zip(walls, ours_walls, strict=False)]
            row.update(ratio_to_ours_median=float(np.median(ratios)), ratio_runs=ratios)
        if tool in outputs:
            row["psnr_db"] = psnr(read_image(outputs[tool])[..., :3], truth, 255.0)
        rows.append(row)
    best = (float(np.median(ours_walls)), max(r for _, r in runs[ours]))
    # memory against the number of frames (files cycled)
    for count in (10, 40):
        cyc = [files[k % len(files)] for k in range(count)]
        w, r, _ = timed_run(ours_cli(cyc, tmp / "cyc.png", False))
        rows.append(
            dict(
                case=f"{mp:.0f}MP rss vs N",
                tool=f"nanoro_optics (CLI) N={count}",
                wall_s=w,
                peak_rss_mb=r,
                rss_mb_per_mp=r / mp,
            )
        )
    # memory against the frame size: the same CLI on tiny frames measures what the process
    # holds whatever the frames (interpreter, numpy, numba and LLVM, loaded kernels); the
    # rest of the peak grows with the frame size
    tiny = write_frames(synthetic_stack((64, 64), 3, seed=1).frames, tmp / "tiny")
    _, base, _ = timed_run(ours_cli(tiny, tmp / "tiny.png", False))
    rows.append(
        dict(
            case=f"{mp:.0f}MP rss vs size",
            tool="nanoro_optics (CLI) 64x64 frames: fixed part",
            peak_rss_mb=base,
        )
    )
    rows.append(
        dict(
            case=f"{mp:.0f}MP rss vs size",
            tool="nanoro_optics (CLI): part that grows with the frame",
            peak_rss_mb=best[1] - base,
            rss_mb_per_mp=(best[1] - base) / mp,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--json", default="bench_results/fusion.json", help="JSON output path")
    ap.add_argument("--repeats", type=int, default=None, help="repeats (min is reported)")
    ap.add_argument("--no-peers", action="store_true", help="run only this fuser")
    ap.add_argument("--no-large", action="store_true", help="skip the 12 MP speed case")
    ap.add_argument("--no-quality", action="store_true", help="skip the 1024^2 quality cases")
    ap.add_argument("--no-hard", action="store_true", help="skip the hard scenes")
    ap.add_argument("--only-hard", action="store_true", help="only the hard scenes")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    size, n = (384, 9) if args.quick else (1024, 15)
    large, n_large = ((1200, 900), 8) if args.quick else ((3000, 4000), 20)

    found = {t: shutil.which(t) for t in ("enfuse", "focusweave", "openfocus")}
    print("peers found:", ", ".join(t for t, p in found.items() if p) or "none")
    print("peers not found:", ", ".join(t for t, p in found.items() if not p) or "none")
    peers = not args.no_peers
    rows: list[dict[str, Any]] = []
    fuse_stack(synthetic_stack((64, 64), 3).frames)  # compile / load the kernels
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        cases = [
            ("clean", dict(), 255.0, False),
            ("noisy3DN", dict(noise_dn=3.0), 255.0, False),
            ("breathing1.4%", dict(breathing=0.014), 255.0, True),
            ("16bit", dict(dtype=np.uint16), 65535.0, False),
        ]
        if args.only_hard:
            args.no_quality = args.no_large = True
        for kind, n_hard in [] if args.no_hard else HARD_CASES:
            print(f"case hard {kind} x {n_hard}", flush=True)
            new = hard_case(kind, n_hard, size, tmp, peers)
            for r in new:
                print("  ", json.dumps(r, default=float), flush=True)
            rows += new
        for name, kw, full, align in [] if args.no_quality else cases:
            print(f"case {name} {size}^2 x {n}", flush=True)
            stack = synthetic_stack((size, size), n, seed=11, **kw)
            try:
                new = quality_case(name, stack, full, align, tmp, repeats, peers)
            except ImportError as exc:  # alignment not available
                new = [dict(case=name, tool="nanoro_optics", error=str(exc))]
            for r in new:
                print("  ", json.dumps(r, default=float), flush=True)
            rows += new
        if not args.no_large:
            print(f"case speed {large[1]}x{large[0]} x {n_large}", flush=True)
            new = speed_case(large, n_large, tmp, repeats, peers)
            for r in new:
                print("  ", json.dumps(r, default=float), flush=True)
            rows += new

    # ratios against this fuser, per case
    for r in rows:
        ours = [o for o in rows if o["case"] == r["case"] and o["tool"].startswith("nanoro")]
        if ours and "wall_s" in r and "wall_s" in ours[0]:
            r["time_vs_ours"] = r["wall_s"] / ours[0]["wall_s"]
    cols = [
        "case",
        "tool",
        "psnr_db",
        "ssim",
        "wall_s",
        "time_vs_ours",
        "peak_rss_mb",
        "rss_mb_per_mp",
        "depth_rmse_frames",
        "depth_coverage",
        "wrong_told",
        "right_told",
        "halo_ratio",
        "band_rmse_dn",
        "far_rmse_dn",
        "flat_psnr_db",
        "error",
    ]
    print()
    print(" | ".join(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        print(" | ".join(cells))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(dict(peers_found=found, quick=args.quick, rows=rows), indent=1, default=float)
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
