"""Focus stacking: fuse a stack into one sharp image and a depth map.

A synthetic stack (tissue texture on a tilted, bumped surface; every frame sharp only near its
own depth) is fused frame by frame with :class:`nanoro_optics.fusion.StackFuser`, as a camera
would deliver it. The figure shows one frame, the fused image, the true and the estimated depth
and the confidence. Pass image files (in focus order) to fuse your own stack instead.

Usage: ``python examples/plot_fusion.py [FRAME ...] [-o out/plot_fusion.png]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nanoro_optics.fusion import StackFuser, synthetic_stack


def psnr(a: np.ndarray, b: np.ndarray, full: float = 255.0) -> float:
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(full**2 / err))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("frames", nargs="*", help="image files in focus order (default: synthetic)")
    ap.add_argument("-o", "--output", default="out/plot_fusion.png", help="figure path")
    args = ap.parse_args()

    truth_depth = None
    if args.frames:
        import imageio.v3 as iio

        frames = [np.asarray(iio.imread(p)) for p in args.frames]
        title = f"{len(frames)} frames from {Path(args.frames[0]).parent}"
    else:
        stack = synthetic_stack((384, 512), 12, noise_dn=2.0, seed=0)
        frames = list(stack.frames)
        truth_depth = stack.depth
        title = "synthetic stack, 12 frames, 2 DN noise"

    fuser = StackFuser()
    for frame in frames:  # as a camera would deliver them
        fuser.add(frame)
    res = fuser.result()

    panels = 5 if truth_depth is not None else 4
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.6), constrained_layout=True)
    mid = frames[len(frames) // 2]
    axes[0].imshow(mid, cmap="gray")
    axes[0].set_title("middle frame")
    axes[1].imshow(res.image, cmap="gray")
    label = "fused"
    if truth_depth is not None:
        label += f" ({psnr(res.image, stack.truth):.1f} dB vs truth)"
    axes[1].set_title(label)
    vmax = len(frames) - 1
    k = 2
    if truth_depth is not None:
        im = axes[k].imshow(truth_depth, vmin=0, vmax=vmax, cmap="viridis")
        axes[k].set_title("true depth (frames)")
        k += 1
    im = axes[k].imshow(res.depth, vmin=0, vmax=vmax, cmap="viridis")
    title_depth = "estimated depth (frames)"
    if truth_depth is not None:
        ok = ~np.isnan(res.depth)
        rmse = np.sqrt(np.mean((res.depth[ok] - truth_depth[ok]) ** 2))
        title_depth += f"\nRMSE {rmse:.2f} frame, NaN {100 * (1 - ok.mean()):.1f} %"
    axes[k].set_title(title_depth)
    fig.colorbar(im, ax=axes[k], shrink=0.8)
    im = axes[k + 1].imshow(res.confidence, vmin=0, vmax=1, cmap="magma")
    axes[k + 1].set_title("confidence")
    fig.colorbar(im, ax=axes[k + 1], shrink=0.8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
