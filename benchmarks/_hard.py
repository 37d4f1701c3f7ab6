"""Hard-scene cases of ``bench_fusion.py``: metrics, the max-abs pyramid yardstick, peers.

Scenes come from :func:`nanoro_optics.fusion.scenes.scene_stack` (pillbox defocus, photon
and read noise, occlusion) and :func:`nanoro_optics.fusion.scenes.occlusion_stack` (layered
occlusion, pillbox, Gaussian or vectorial defocus). Metrics, all against the noise-free
all-in-focus truth:

* PSNR (full scale = the camera's white level) and SSIM;
* halo-band PSNR: the PSNR over the halo band alone (same full scale), the scene's own band
  (:attr:`SceneStack.band`: the background within the largest blur radius of an occluder)
  or, for the scenes without one, the pixels within ``HALO_BAND_PX`` of an object edge;
* flat-region PSNR (fluorescence): over the background, farther than ``FAR_PX`` from objects;
* depth RMSE (frames) over every pixel with a defined true depth, after no fit, and the
  coverage (finite fraction of those pixels); pixels of a depth map left NaN count as
  uncovered, not as errors.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

HALO_BAND_PX = 10
FAR_PX = 30


def psnr(a: np.ndarray, b: np.ndarray, full: float, mask: np.ndarray | None = None) -> float:
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        d = d[mask]
    return float(10 * np.log10(full**2 / max(float(np.mean(d)), 1e-30)))


def ssim(a: np.ndarray, b: np.ndarray, full: float) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.asarray(a, np.float64),
            np.asarray(b, np.float64),
            data_range=full,
            channel_axis=-1 if np.ndim(a) == 3 else None,
        )
    )


def maxabs_pyramid(frames: np.ndarray) -> np.ndarray:
    """The yardstick: Burt-Adelson pyramid, per channel max-|coefficient|, mean residual."""
    from nanoro_optics.fusion import collapse_pyramid, laplacian_pyramid

    fused: list[np.ndarray] | None = None
    best: list[np.ndarray] = []
    n = frames.shape[0]
    for f in frames:
        pyr = laplacian_pyramid(f)
        if fused is None:
            fused = [p.copy() for p in pyr]
            fused[-1] = pyr[-1] / n
            best = [np.abs(p) for p in pyr[:-1]]
            continue
        for k in range(len(pyr) - 1):
            a = np.abs(pyr[k])
            take = a > best[k]
            fused[k][take] = pyr[k][take]
            best[k] = np.maximum(best[k], a)
        fused[-1] += pyr[-1] / n
    assert fused is not None
    return collapse_pyramid(fused)


def oracle_selection(frames: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """A bound no selection rule can pass: per Laplacian coefficient, the frame nearest the truth.

    Every level (residual included) of the fused pyramid takes, at each coefficient, the
    frame whose coefficient vector (all channels) lies nearest the truth's, then the
    pyramid is collapsed and kept inside the frames' range, as the fuser's output is. It
    knows the answer, so it is not a fuser; it tells what picking among the frames' own
    coefficients can reach at best, e.g. next to occluding edges, where no frame holds the
    background unblurred and free of the foreground's glow.
    """
    from nanoro_optics.fusion import collapse_pyramid, laplacian_pyramid

    target = laplacian_pyramid(np.asarray(truth, np.float32))
    best: list[np.ndarray] = [np.zeros_like(t) for t in target]
    dist: list[np.ndarray] = [np.full(t.shape[:2], np.inf) for t in target]
    for f in frames:
        for k, lev in enumerate(laplacian_pyramid(np.asarray(f, np.float32))):
            d = (lev - target[k]) ** 2
            d = d.sum(-1) if d.ndim == 3 else d
            take = d < dist[k]
            best[k][take] = lev[take]
            dist[k] = np.minimum(dist[k], d)
    img = collapse_pyramid(best)
    return np.clip(img, frames.min(0), frames.max(0))


def halo_band(scene: Any) -> np.ndarray | None:
    """The scene's halo band, or the pixels within ``HALO_BAND_PX`` of its edges, or None."""
    from scipy import ndimage

    band = getattr(scene, "band", None)
    if band is not None:
        return np.asarray(band, bool)
    if not scene.edges.any():
        return None
    return np.asarray(ndimage.distance_transform_edt(~scene.edges) <= HALO_BAND_PX)


def scores(img: np.ndarray, scene: Any) -> dict[str, float]:
    from scipy import ndimage

    full = float(scene.white_level)
    img = np.asarray(img, np.float64)
    out = dict(psnr_db=psnr(img, scene.truth, full), ssim=ssim(img, scene.truth, full))
    band = halo_band(scene)
    if band is not None and band.any():
        out["band_psnr_db"] = psnr(img, scene.truth, full, band)
    if scene.edges.any():
        far = ndimage.distance_transform_edt(~scene.edges) > FAR_PX
        if scene.kind == "fluorescence":
            flat = far & np.isnan(scene.depth)
            out["flat_psnr_db"] = psnr(img, scene.truth, full, flat)
    return out


def depth_scores(
    depth: np.ndarray, scene: Any, confidence: np.ndarray | None = None
) -> dict[str, float]:
    """Depth RMSE (frames) and coverage over the pixels of known depth; with ``confidence``,
    the shares of the wrong pixels (off by more than 2 frames) and of the right ones (within
    1 frame) that it tells as weak (below 0.5)."""
    known = np.isfinite(scene.depth)
    got = np.isfinite(depth) & known
    cov = float(got.sum() / max(known.sum(), 1))
    rmse = float(np.sqrt(np.mean((depth[got] - scene.depth[got]) ** 2))) if got.any() else np.nan
    out = dict(depth_rmse_frames=rmse, depth_coverage=cov)
    if confidence is not None and got.any():
        err = np.abs(depth[got] - scene.depth[got])
        weak = confidence[got] < 0.5
        wrong, right = err > 2.0, err < 1.0
        out["wrong_told"] = float(weak[wrong].mean()) if wrong.any() else np.nan
        out["right_told"] = float(weak[right].mean()) if right.any() else np.nan
    return out


def write_tiffs(frames: np.ndarray, folder: Path) -> list[Path]:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, f in enumerate(frames):
        p = folder / f"frame_{k:03d}.tif"
        tifffile.imwrite(p, f, photometric="rgb" if f.ndim == 3 else "minisblack")
        paths.append(p)
    return paths


def enfuse_command(files: list[Path], out: Path, *, bits: int | None = None) -> list[str]:
    """enfuse as a focus stacker: contrast weight only, hard masks (its documented recipe)."""
    cmd = ["enfuse", "--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1"]
    cmd += ["--hard-mask"] + ([f"--depth={bits}"] if bits else [])
    return [*cmd, f"--output={out}", *map(str, files)]


def peer_images(
    scene: Any, tmp: Path, *, name: str | None = None, align: bool = False
) -> dict[str, tuple[np.ndarray | None, float, str]]:
    """Run every installed peer on the scene's frames: {tool: (image, wall s, error)}.

    ``name`` names the folder of the frames (default from the kind and the frame count);
    ``align`` lets the peers that can align do so (focusweave; enfuse cannot). Images come
    back in the scale of the scene's frames (a peer writing another integer type is
    rescaled by the types' ranges).
    """
    import tifffile

    folder = tmp / (name or f"{scene.kind}_{scene.n_frames}")
    files = write_tiffs(scene.frames, folder)
    out: dict[str, tuple[np.ndarray | None, float, str]] = {}
    cmds: dict[str, tuple[list[str], Path]] = {}
    if shutil.which("enfuse"):
        o = tmp / "enfuse.tif"
        cmds["enfuse"] = (enfuse_command(files, o, bits=scene.frames.dtype.itemsize * 8), o)
    if shutil.which("focusweave"):
        o = tmp / "fw.tif"
        cmds["focusweave"] = (
            ["focusweave", str(folder), "--output", str(o), "--keep-size"]
            + ([] if align else ["--no-align"]),
            o,
        )
    for tool, (cmd, path) in cmds.items():
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not path.exists():
            out[tool] = (None, wall, proc.stderr[-200:] or "no output")
            continue
        img = tifffile.imread(path)
        if img.ndim == 3 and scene.frames.ndim == 3:  # grey scene, RGB(A) output
            img = img[..., 0]
        if img.ndim == 3 and img.shape[-1] == 4:
            img = img[..., :3]
        if img.dtype != scene.frames.dtype and img.dtype.kind in "ui":
            scale = np.iinfo(scene.frames.dtype).max / np.iinfo(img.dtype).max
            img = img.astype(np.float64) * scale
        out[tool] = (img, wall, "")
    return out


def oracle_inversion(scene: Any, fused: np.ndarray, *, floor: float = 0.05) -> np.ndarray | None:
    """A bound for a halo correction: the layered inversion with the true layers and PSFs.

    In the frame focused on the background (frame 0), the occluders are peeled off front to
    back with their true colour, matte and kernel in that frame: ``J = (I - h*(F a)) / (1 -
    h*a)`` (where ``1 - h*a >= floor``), then the layers are composited again through their
    in-focus kernels. That replaces ``fused`` inside the halo band (where the background is
    seen); elsewhere ``fused`` is kept. It knows the answer's ingredients, so it is not a
    fuser: it tells what a correction with a perfect model of the scene reaches through the
    frame's noise (exact for the layered formation; for a ray-rendered frame 0 with two
    occluders out of focus, the layered peel is itself an approximation). None for scenes
    without layers or with focus breathing.
    """
    from nanoro_optics.fusion.scenes import _fold

    if not getattr(scene, "layers", ()) or scene.magnification is not None:
        return None
    layers, kernels = scene.layers, scene.kernels
    h, w = scene.truth.shape[:2]

    def conv(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        otf = np.fft.rfft2(_fold(kernel, (h, w)))
        if img.ndim == 3:
            return np.fft.irfft2(
                np.fft.rfft2(img, axes=(0, 1)) * otf[..., None], s=(h, w), axes=(0, 1)
            )
        return np.fft.irfft2(np.fft.rfft2(img) * otf, s=(h, w))

    j = scene.frames[0].astype(np.float64)
    ok = np.ones((h, w), bool)
    for i in range(len(layers) - 1, 0, -1):  # front to back
        lay, k = layers[i], kernels[i][0]
        d = 1.0 - conv(lay.matte, k)
        ok &= d >= floor
        j = (j - conv(lay.colour * lay.matte[..., None], k)) / np.maximum(d, floor)[..., None]
    est = j
    for i in range(1, len(layers)):  # back to front, each layer in focus
        lay = layers[i]
        k = kernels[i][int(lay.depth)]
        a = conv(lay.matte, k)
        est = conv(lay.colour * lay.matte[..., None], k) + (1.0 - a)[..., None] * est
    out = np.asarray(fused, np.float64).copy()
    use = scene.band & ok
    out[use] = est[use]
    return out
