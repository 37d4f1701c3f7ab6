"""Benchmark of the focus fuser against installed peers on synthetic stacks with ground truth.

Cases (``--quick`` shrinks every one):

* quality, 1024^2 x 15 RGB: clean, noisy (3 DN), breathing (+-1.4 %, aligned), 16-bit;
  PSNR and SSIM against the all-in-focus truth, depth RMSE (frames) where depth is defined;
* speed, 4000 x 3000 x 20 RGB: this fuser from uint8 arrays in memory, and every tool from
  PNG files (this one through ``python -m nanoro_optics fuse``), wall time and peak RSS;
* memory against the number of frames: the CLI on 10 and on 40 frames (files cycled);
* hard scenes (:mod:`nanoro_optics.fusion.scenes`, pillbox defocus, photon and read noise):
  12-bit RGB fluorescence, 8-bit occlusion with glow, 12-bit grey thick sample at 15 and 40
  frames; PSNR, SSIM, halo-band PSNR, flat-region PSNR, depth RMSE and coverage beside the
  peers and a plain max-abs Laplacian pyramid (the yardstick, written in ``_hard.py``);
  on the scenes with object edges also the oracle selection of ``_hard.py``, which picks
  per coefficient the frame nearest the truth: not a fuser, the bound of any rule that
  picks among the frames' coefficients;
* halo (:func:`nanoro_optics.fusion.scenes.occlusion_stack`), 512^2 x 11 RGB: every
  occlusion variant (opaque, fibres, holes, dim, translucent, three layers, breathing; 8-
  and 12-bit) under every PSF family (pillbox, Gaussian, vectorial with index mismatch),
  and two rendered ray by ray (``render="rays"``, geometric families; slow to make):
  halo-band PSNR and whole-image PSNR of this fuser (with ``halo="off"`` and ``"auto"``
  when :class:`~nanoro_optics.fusion.FusionOptions` has that field, else its default),
  the yardstick, enfuse and focusweave; the best peer per scene and the margins of ours
  over it in dB (the aim: band >= best peer + 3 dB, whole >= best peer + 1.5 dB), and the
  time the correction costs; beside them two bounds that know the answer (not peers): the
  oracle selection and the layered inversion with the true layers and PSFs
  (``_hard.oracle_inversion``); then the scenes without occlusion (clean, noisy, breathing,
  16-bit, thick, fluorescence), whole-image PSNR of ours off and auto (the aim: within
  0.05 dB).

Peers found on the machine are run in the same run: ``enfuse`` (Debian package,
``--contrast-weight=1 --hard-mask``), ``focusweave`` and ``openfocus`` (PyPI). Wall times are
medians of ``--repeats`` runs, the tools (or settings) alternating run by run; the machine is
shared, so read the ratios.

Usage: ``python benchmarks/bench_fusion.py [--quick] [--json PATH]``; the halo section
alone: ``python benchmarks/bench_fusion.py --only-halo [--halo off|auto|both]
[--halo-psf pillbox,...] [--halo-variants opaque,...] [--halo-seed 3]``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from nanoro_optics.fusion import fuse_stack, synthetic_stack
from nanoro_optics.fusion.scenes import PSF_FAMILIES
from nanoro_optics.fusion.synthetic import _magnify

# the command-line runs this benchmark starts import the same checkout
os.environ["PYTHONPATH"] = os.pathsep.join(
    [
        str(Path(__file__).resolve().parents[1]),
        *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p],
    ]
)


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


def ours_cli(
    files: list[Path],
    out: Path,
    align: bool,
    depth_map: Path | None = None,
    halo: str | None = None,
) -> list[str]:
    cmd = [sys.executable, "-m", "nanoro_optics", "fuse", *map(str, files), "-o", str(out), "-q"]
    cmd += ["--overwrite"]  # repeated runs write the same outputs
    if depth_map is not None:
        cmd += ["--depth-map", str(depth_map)]
    if halo is not None:
        cmd += ["--halo", halo]
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
            wall_s=float(np.median(wall)),
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


# --- halo: layered occlusion scenes, band and whole-image PSNR ------------------------------
#: (case name, variant, bit depth, breathing, render) of the halo section, each under every
#: PSF family (the ray-rendered ones under the geometric families only)
HALO_CASES = (
    ("opaque", "opaque", 8, 0.0, "layered"),
    ("fibres", "fibres", 8, 0.0, "layered"),
    ("holes", "holes", 8, 0.0, "layered"),
    ("dim", "dim", 12, 0.0, "layered"),
    ("translucent", "translucent", 12, 0.0, "layered"),
    ("layers3", "layers3", 12, 0.0, "layered"),
    ("breathing", "opaque", 8, 0.014, "layered"),
    ("rays", "opaque", 8, 0.0, "rays"),
    ("rays-layers3", "layers3", 12, 0.0, "rays"),
)
#: the aims of the halo correction (dB over the best peer; dB from ours without it)
HALO_BAND_MARGIN_DB = 3.0
HALO_WHOLE_MARGIN_DB = 1.5
HALO_NEUTRAL_DB = 0.05
#: tools that are not this fuser: the best of them per scene is "the best peer"
PEER_TOOLS = ("max-abs pyramid (yardstick)", "enfuse", "focusweave")


def halo_modes(wanted: str) -> list[str | None]:
    """This fuser's halo settings to run: ``[None]`` (its default) until the option exists."""
    from nanoro_optics.fusion import FusionOptions

    if "halo" not in FusionOptions.__dataclass_fields__:
        return [None]
    return ["off", "auto"] if wanted == "both" else [wanted]


def ours_tool(mode: str | None) -> str:
    return "nanoro_optics" if mode is None else f"nanoro_optics halo={mode}"


def fuse_ours(frames: np.ndarray, mode: str | None, align: bool) -> tuple[Any, float]:
    """This fuser with the halo setting ``mode`` (None: its defaults); (result, wall s)."""
    from nanoro_optics.fusion import FusionOptions

    options = None if mode is None else FusionOptions(halo=mode)  # type: ignore[call-arg]
    t0 = time.perf_counter()
    res = fuse_stack(frames, options, align=align)
    return res, time.perf_counter() - t0


#: kinds of stack (dtype, ndim, align) the fuser has already run on: its kernels compiled
_WARM: set[tuple[str, int, bool]] = set()


def alternating_settings(
    frames: np.ndarray, modes: list[str | None], align: bool, repeats: int
) -> tuple[dict[str | None, Any], dict[str | None, float]]:
    """Each halo setting ``repeats`` times, the settings alternating: results, median wall s.

    The first stack of a kind (dtype, channels, alignment) is preceded by an untimed run
    of every setting on a 96 px corner, so that compiling kernels is not timed.
    """
    results: dict[str | None, Any] = {}
    times: dict[str | None, list[float]] = {m: [] for m in modes}
    kind = (frames.dtype.str, frames.ndim, align)
    if kind not in _WARM:
        for mode in modes:
            fuse_ours(np.ascontiguousarray(frames[:, :96, :96]), mode, align)
        _WARM.add(kind)
    for _ in range(repeats):
        for mode in modes:
            results[mode], wall = fuse_ours(frames, mode, align)
            times[mode].append(wall)
    return results, {m: float(np.median(t)) for m, t in times.items()}


def halo_report(res: Any, band: np.ndarray | None = None) -> dict[str, Any]:
    """What the fuser's result tells of its halo correction.

    Scalars of ``res.halo`` (a frozen dataclass, e.g. the corrected fraction and the check's
    residual) as ``halo_<field>``, arrays as their mean; with ``band``, the shares of the
    band and of the rest of the image that ``res.halo.corrected`` marks.
    """
    import dataclasses

    out: dict[str, Any] = {}
    report = getattr(res, "halo", None)
    if report is None or not dataclasses.is_dataclass(report):
        return out
    for f in dataclasses.fields(report):
        v = getattr(report, f.name)
        if isinstance(v, np.ndarray):
            out[f"halo_{f.name}_mean"] = float(np.mean(v)) if v.size else float("nan")
        elif isinstance(v, (int, float, str, bool)):
            out[f"halo_{f.name}"] = v
    corrected = getattr(report, "corrected", None)
    if band is not None and isinstance(corrected, np.ndarray) and corrected.shape == band.shape:
        out["corrected_in_band"] = float(np.mean(corrected[band])) if band.any() else 0.0
        out["corrected_off_band"] = float(np.mean(corrected[~band])) if (~band).any() else 0.0
    return out


def halo_scorer(scene: Any, align: bool) -> Any:
    """Score function (img -> band PSNR, whole PSNR) against the truth.

    A margin of 8 px (3 % of the side with breathing) is left out of both; with
    breathing the truth and its band are also tried at the first and last frames'
    magnifications (the geometry an aligner may keep) and the best geometry is taken.
    """
    from _hard import psnr

    from nanoro_optics.fusion.synthetic import _magnify

    h, w = scene.truth.shape[:2]
    m = max(8, int(0.03 * max(h, w))) if align else 8
    sl = (slice(m, h - m), slice(m, w - m))
    geoms = [(scene.truth, scene.band)]
    if align and scene.magnification is not None:
        for mag in (float(scene.magnification[0]), float(scene.magnification[-1])):
            t = _magnify(scene.truth, mag, 3)
            b = _magnify(scene.band.astype(np.float64), mag, 1) > 0.5
            geoms.append((t, b))
    full = float(scene.white_level)

    def score(img: np.ndarray) -> tuple[float, float]:
        img = np.asarray(img, np.float64)
        best = max(geoms, key=lambda g: psnr(img[sl], g[0][sl], full))
        t, b = best[0][sl], best[1][sl]
        return psnr(img[sl], t, full, b), psnr(img[sl], t, full)

    return score


def halo_case(
    name: str,
    variant: str,
    psf: str,
    bits: int,
    breathing: float,
    size: int,
    n: int,
    tmp: Path,
    peers: bool,
    modes: list[str | None],
    repeats: int = 1,
    render: str = "layered",
    seed: int = 3,
) -> list[dict[str, Any]]:
    """One occlusion scene: this fuser (each halo mode), the yardstick and the peers."""
    import _hard

    from nanoro_optics.fusion.scenes import occlusion_stack

    t0 = time.perf_counter()
    scene = occlusion_stack(
        (size, size),
        n,
        variant=variant,
        psf=psf,
        bit_depth=bits,
        breathing=breathing,
        seed=seed,
        render=render,
    )
    case = f"halo {name} {psf}" + ("" if seed == 3 else f" seed {seed}")
    print(
        f"  made {case} {size}^2 x {n} ({bits}-bit, band {scene.band_px:.1f} px, "
        f"{100 * scene.band.mean():.1f} % of the image) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    align = breathing > 0
    score = halo_scorer(scene, align)
    common = dict(
        case=case, variant=variant, psf=psf, bits=bits, render=render, band_px=scene.band_px
    )
    rows = []
    first = None
    results, walls = alternating_settings(scene.frames, modes, align, repeats)
    for mode in modes:
        res, wall = results[mode], walls[mode]
        first = res.image if first is None else first
        band, whole = score(res.image)
        rows.append(
            dict(
                common,
                tool=ours_tool(mode),
                band_psnr_db=band,
                psnr_db=whole,
                wall_s=wall,
                **halo_report(res, scene.band),
            )
        )
    t0 = time.perf_counter()
    band, whole = score(_hard.maxabs_pyramid(scene.frames))
    rows.append(
        dict(
            common,
            tool=PEER_TOOLS[0],
            band_psnr_db=band,
            psnr_db=whole,
            wall_s=time.perf_counter() - t0,
        )
    )
    # not a peer: a perfect model of the scene inverted in the band, ours elsewhere
    t0 = time.perf_counter()
    bound = _hard.oracle_inversion(scene, first)
    if bound is not None:
        band, whole = score(bound)
        rows.append(
            dict(
                common,
                tool="oracle inversion (knows layers and PSFs)",
                band_psnr_db=band,
                psnr_db=whole,
                wall_s=time.perf_counter() - t0,
            )
        )
    if not align:  # not a peer: the bound of any rule that picks among the frames' coefficients
        t0 = time.perf_counter()
        band, whole = score(_hard.oracle_selection(scene.frames, scene.truth))
        rows.append(
            dict(
                common,
                tool="oracle selection (knows the truth)",
                band_psnr_db=band,
                psnr_db=whole,
                wall_s=time.perf_counter() - t0,
            )
        )
    if peers:
        label = case.replace(" ", "_")
        for tool, (img, wall_s, err) in _hard.peer_images(
            scene, tmp, name=label, align=align
        ).items():
            if img is None:
                rows.append(dict(common, tool=tool, error=err))
                continue
            if img.shape != scene.truth.shape:
                rows.append(dict(common, tool=tool, error=f"output shape {img.shape}"))
                continue
            band, whole = score(img)
            rows.append(dict(common, tool=tool, band_psnr_db=band, psnr_db=whole, wall_s=wall_s))
    return rows


def halo_summary(rows: list[dict[str, Any]], modes: list[str | None]) -> list[dict[str, Any]]:
    """Per halo scene: ours (off, auto), the best peer per metric, the margins, the aims."""
    out = []
    mine = ours_tool(modes[-1])  # "auto" when it exists, else the default
    base = ours_tool(modes[0])
    for case in dict.fromkeys(r["case"] for r in rows if r["case"].startswith("halo ")):
        got = {r["tool"]: r for r in rows if r["case"] == case and "psnr_db" in r}
        peer = {t: got[t] for t in PEER_TOOLS if t in got}
        if mine not in got or not peer:
            continue
        best_band = max(peer, key=lambda t: peer[t]["band_psnr_db"])
        best_whole = max(peer, key=lambda t: peer[t]["psnr_db"])
        band_margin = got[mine]["band_psnr_db"] - peer[best_band]["band_psnr_db"]
        whole_margin = got[mine]["psnr_db"] - peer[best_whole]["psnr_db"]
        row = dict(
            case=case,
            ours=mine,
            ours_band_db=got[mine]["band_psnr_db"],
            ours_whole_db=got[mine]["psnr_db"],
            best_peer_band=best_band,
            best_peer_band_db=peer[best_band]["band_psnr_db"],
            best_peer_whole=best_whole,
            best_peer_whole_db=peer[best_whole]["psnr_db"],
            band_margin_db=band_margin,
            whole_margin_db=whole_margin,
            meets_aim=bool(
                band_margin >= HALO_BAND_MARGIN_DB and whole_margin >= HALO_WHOLE_MARGIN_DB
            ),
        )
        for k in ("corrected_in_band", "corrected_off_band", "halo_residual_dn"):
            if k in got[mine]:
                row[k] = got[mine][k]
        if mine != base and base in got:
            row["off_band_db"] = got[base]["band_psnr_db"]
            row["off_whole_db"] = got[base]["psnr_db"]
            row["correction_s"] = got[mine]["wall_s"] - got[base]["wall_s"]
            row["correction_share"] = row["correction_s"] / got[base]["wall_s"]
        out.append(row)
    return out


def halo_neutral_cases(
    size: int, n: int, modes: list[str | None], repeats: int = 1
) -> list[dict[str, Any]]:
    """Scenes without occlusion: whole-image PSNR of ours with each halo mode."""
    from _hard import psnr

    from nanoro_optics.fusion import scene_stack

    scenes: list[tuple[str, Any, float, bool]] = [
        ("clean", synthetic_stack((size, size), n, seed=11), 255.0, False),
        ("noisy3DN", synthetic_stack((size, size), n, seed=11, noise_dn=3.0), 255.0, False),
        ("breathing1.4%", synthetic_stack((size, size), n, seed=11, breathing=0.014), 255.0, True),
        ("16bit", synthetic_stack((size, size), n, seed=11, dtype=np.uint16), 65535.0, False),
    ]
    for kind in ("thick", "fluorescence"):
        s = scene_stack(kind, (size, size), n, seed=3)
        scenes.append((kind, s, float(s.white_level), False))
    rows = []
    for name, stack, full, align in scenes:
        m = int(0.03 * size) if align else 0
        sl = (slice(m, size - m), slice(m, size - m))
        row: dict[str, Any] = dict(case=f"no occlusion {name}")
        results, walls = alternating_settings(stack.frames, modes, align, repeats)
        for mode in modes:
            res, wall = results[mode], walls[mode]
            truth = stack.truth
            if align:  # the geometry the aligner keeps: the truth or the first frame's
                from nanoro_optics.fusion.synthetic import _magnify

                alt = _magnify(np.asarray(truth, np.float64), float(stack.magnification[0]), 3)
                truth = max((truth, alt), key=lambda t: psnr(res.image[sl], t[sl], full))
            key = mode or "default"
            row[f"psnr_{key}_db"] = psnr(res.image[sl], truth[sl], full)
            row[f"wall_{key}_s"] = wall
            corrected = halo_report(res).get("halo_corrected_fraction")
            if corrected is not None:
                row[f"corrected_{key}"] = corrected
        if len(modes) == 2:
            row["auto_minus_off_db"] = row["psnr_auto_db"] - row["psnr_off_db"]
            row["correction_share"] = row["wall_auto_s"] / row["wall_off_s"] - 1.0
            row["meets_aim"] = bool(abs(row["auto_minus_off_db"]) <= HALO_NEUTRAL_DB)
        print("  ", json.dumps(row, default=float), flush=True)
        rows.append(row)
    return rows


def halo_real_case(
    folder: Path, modes: list[str | None], crops: Path, crop_px: int = 256, align: bool = True
) -> dict[str, Any]:
    """A real stack (a folder of frames, sorted by name): ours with each halo setting.

    Reports each setting's wall time and what its result tells of the correction; with
    two settings also where they differ (share of pixels more than 2 DN apart, the largest
    difference) and writes side-by-side crops (off | auto, ``crop_px`` square) of the
    three places they differ most to ``crops`` for a look: no truth here.
    """
    import imageio.v3 as iio

    names = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif")
    )
    frames = np.stack([read_image(p) for p in names])
    row: dict[str, Any] = dict(case=f"real {folder.name}", frames=len(names), align=align)
    images = {}
    for mode in modes:
        res, wall = fuse_ours(frames, mode, align)
        key = mode or "default"
        images[key] = np.asarray(res.image, np.float64)
        row[f"wall_{key}_s"] = wall
        row.update({f"{k}_{key}": v for k, v in halo_report(res).items()})
    if len(images) == 2:
        diff = np.abs(images["auto"] - images["off"])
        diff = diff.max(-1) if diff.ndim == 3 else diff
        row["changed_share_2dn"] = float(np.mean(diff > 2.0))
        row["max_change_dn"] = float(diff.max())
        crops.mkdir(parents=True, exist_ok=True)
        h, w = diff.shape
        c = min(crop_px, h, w)
        score = diff.copy()
        for k in range(3):
            if score.max() <= 0:  # no more places where they differ
                break
            y, x = np.unravel_index(int(np.argmax(score)), score.shape)
            y0, x0 = int(np.clip(y - c // 2, 0, h - c)), int(np.clip(x - c // 2, 0, w - c))
            pair = [images[m][y0 : y0 + c, x0 : x0 + c] for m in ("off", "auto")]
            side = np.concatenate([pair[0], np.zeros_like(pair[0][:, :4]), pair[1]], axis=1)
            out = crops / f"{folder.name}_{k}_y{y0}_x{x0}.png"
            iio.imwrite(out, np.clip(np.rint(side), 0, 255).astype(np.uint8))
            score[max(y0 - c // 2, 0) : y0 + 3 * c // 2, max(x0 - c // 2, 0) : x0 + 3 * c // 2] = -1
        row["crops"] = str(crops)
    print("  ", json.dumps(row, default=float), flush=True)
    return row


def print_table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    print(" | ".join(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.2f}" if isinstance(v, float) else str(v))
        print(" | ".join(cells))


def speed_case(
    shape: tuple[int, int], n: int, tmp: Path, repeats: int, peers: bool
) -> list[dict[str, Any]]:
    """The 12 MP case: in memory, then every tool from PNG files in alternating rounds.

    Each round runs this CLI, the CLI with a depth map, both again with ``--halo auto``,
    then every peer found, once each (at least 3 rounds, after one run of our commands on
    tiny frames, which fills numba's cache); a row gives the median wall time
    and the largest peak RSS of its runs, a peer's row ``ratio_to_ours_median`` (the median
    over rounds of the peer's wall time divided by this CLI's in the same round) and each
    round's ratio, and a ``--halo auto`` row ``halo_cost_median`` (the median over rounds
    of its wall time over the same command's without it, less 1).
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
            wall_s=float(np.median(wall)),
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
    # the halo correction's cost, alone and beside a depth map (both track the depth)
    ours_h = "nanoro_optics (CLI, --halo auto)"
    ours_dh = "nanoro_optics (CLI, --depth-map --halo auto)"
    cmds = {
        ours: ours_cli(files, out, False),
        ours_d: ours_cli(files, out, False, tmp / "d.tif"),
        ours_h: ours_cli(files, out, False, halo="auto"),
        ours_dh: ours_cli(files, out, False, tmp / "d.tif", halo="auto"),
    }
    outputs = {ours: out}
    if peers:
        for tool, (cmd, pout) in peer_commands(files, folder, tmp / "large_out", False).items():
            cmds[tool] = cmd
            outputs[tool] = pout
    # each of our commands once on tiny frames first: a fresh checkout's first run compiles
    # the kernels (numba's cache), whose time and memory are not the fusion's
    tiny = write_frames(synthetic_stack((64, 64), 3, seed=1).frames, tmp / "tiny")
    for depth_map, halo in ((None, None), (tmp / "tiny_d.tif", None), (None, "auto")):
        timed_run(ours_cli(tiny, tmp / "tiny.png", False, depth_map, halo))
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
        if tool in (ours_h, ours_dh):  # against the same command with --halo off
            base = [w for w, _ in runs[ours if tool == ours_h else ours_d]]
            ratios = [w / o for w, o in zip(walls, base, strict=False)]
            row.update(halo_cost_median=float(np.median(ratios)) - 1.0, halo_cost_runs=ratios)
        elif tool not in (ours, ours_d):
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
    ap.add_argument("--repeats", type=int, default=None, help="repeats (the median is reported)")
    ap.add_argument("--no-peers", action="store_true", help="run only this fuser")
    ap.add_argument("--no-large", action="store_true", help="skip the 12 MP speed case")
    ap.add_argument("--no-quality", action="store_true", help="skip the 1024^2 quality cases")
    ap.add_argument("--no-hard", action="store_true", help="skip the hard scenes")
    ap.add_argument("--only-hard", action="store_true", help="only the hard scenes")
    ap.add_argument("--no-halo", action="store_true", help="skip the halo section")
    ap.add_argument("--only-halo", action="store_true", help="only the halo section")
    ap.add_argument(
        "--halo",
        choices=("off", "auto", "both"),
        default="both",
        help="this fuser's halo setting(s) in the halo section (when the option exists)",
    )
    ap.add_argument(
        "--halo-psf",
        default=",".join(PSF_FAMILIES),
        help="comma-separated PSF families of the halo scenes",
    )
    ap.add_argument(
        "--halo-variants",
        default=",".join(c[0] for c in HALO_CASES),
        help="comma-separated halo cases (" + ", ".join(c[0] for c in HALO_CASES) + ")",
    )
    ap.add_argument(
        "--halo-seed",
        type=int,
        default=3,
        help="seed of the halo scenes (default 3, the figures the README quotes)",
    )
    ap.add_argument("--no-neutral", action="store_true", help="skip the no-occlusion check")
    ap.add_argument(
        "--real",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of a real stack's frames for the halo section (repeatable)",
    )
    ap.add_argument(
        "--crops", default="bench_results/halo_crops", help="where the real stacks' crops go"
    )
    ap.add_argument(
        "--real-align",
        choices=("on", "off"),
        default="on",
        help="align the real stacks' frames (default on)",
    )
    args = ap.parse_args(argv)
    halo_psfs = [p for p in args.halo_psf.split(",") if p]
    halo_names = [v for v in args.halo_variants.split(",") if v]
    for p in halo_psfs:
        if p not in PSF_FAMILIES:
            ap.error(f"--halo-psf: {p!r} is not one of {PSF_FAMILIES}")
    for v in halo_names:
        if v not in [c[0] for c in HALO_CASES]:
            ap.error(f"--halo-variants: {v!r} is not one of {[c[0] for c in HALO_CASES]}")
    repeats = args.repeats or (1 if args.quick else 2)
    size, n = (384, 9) if args.quick else (1024, 15)
    halo_size, halo_n = (256, 7) if args.quick else (512, 11)
    modes = halo_modes(args.halo)
    print("halo settings of this fuser:", ", ".join(ours_tool(m) for m in modes))
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
            args.no_quality = args.no_large = args.no_halo = True
        if args.only_halo:
            args.no_quality = args.no_large = args.no_hard = True
        for name, variant, bits, breathing, render in [] if args.no_halo else HALO_CASES:
            if name not in halo_names:
                continue
            for psf in halo_psfs:
                if render == "rays" and psf == "vectorial":
                    continue  # the rays need a geometric aperture
                print(f"case halo {name} {psf}", flush=True)
                new = halo_case(
                    name,
                    variant,
                    psf,
                    bits,
                    breathing,
                    halo_size,
                    halo_n,
                    tmp,
                    peers,
                    modes,
                    repeats,
                    render,
                    args.halo_seed,
                )
                for r in new:
                    print("  ", json.dumps(r, default=float), flush=True)
                rows += new
        neutral: list[dict[str, Any]] = []
        if not args.no_halo and not args.no_neutral:
            print(f"case no occlusion {halo_size}^2 x {halo_n}", flush=True)
            neutral = halo_neutral_cases(halo_size, halo_n, modes, repeats)
        real = [
            halo_real_case(Path(d), modes, Path(args.crops), align=args.real_align == "on")
            for d in args.real
        ]
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
        "halo_cost_median",
        "depth_rmse_frames",
        "depth_coverage",
        "wrong_told",
        "right_told",
        "band_psnr_db",
        "flat_psnr_db",
        "error",
    ]
    print()
    print_table(rows, cols)
    summary = halo_summary(rows, modes)
    if summary:
        print(
            f"\nhalo: ours ({summary[0]['ours']}) against the best peer per scene; aim band >= "
            f"+{HALO_BAND_MARGIN_DB} dB and whole >= +{HALO_WHOLE_MARGIN_DB} dB"
        )
        print_table(
            summary,
            [
                "case",
                "ours_band_db",
                "best_peer_band",
                "best_peer_band_db",
                "band_margin_db",
                "ours_whole_db",
                "best_peer_whole",
                "best_peer_whole_db",
                "whole_margin_db",
                "off_band_db",
                "off_whole_db",
                "correction_s",
                "correction_share",
                "corrected_in_band",
                "corrected_off_band",
                "meets_aim",
            ],
        )
        print(f"scenes meeting the aim: {sum(r['meets_aim'] for r in summary)} of {len(summary)}")
    if neutral:
        print(f"\nno occlusion: ours, whole-image PSNR (aim: auto within {HALO_NEUTRAL_DB} dB)")
        print_table(neutral, list(dict.fromkeys(k for r in neutral for k in r)))
    if real:
        print("\nreal stacks: ours with each halo setting (crops of where they differ)")
        print_table(real, list(dict.fromkeys(k for r in real for k in r)))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                peers_found=found,
                quick=args.quick,
                halo_modes=[ours_tool(m) for m in modes],
                rows=rows,
                halo_summary=summary,
                halo_neutral=neutral,
                halo_real=real,
            ),
            indent=1,
            default=float,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
