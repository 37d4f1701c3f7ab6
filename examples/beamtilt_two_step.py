"""Two-step beam-tilt autofocus (Leginon's "Optimizing Autofocus"), on a simulated microscope.

A specimen starts 80 um away from eucentric focus, more than a fine focus step can measure.
With a tilt separation of 10 mrad (pairs at -5 and +5 mrad):

1. "Z focus": 1k x 1k binned by 4 at 20 nm pixels (256 x 256 here); one pixel of shift is
   2 um of defocus, the measurable range is ~1/4 of the image (~130 um). Correct by moving
   the stage (here with a 3 % stage error), which should bring focus within ~2 um.
2. "Focus": 1 nm pixels (512 x 512 here); one pixel is 0.1 um, so 0.1 px is 10 nm. Correct
   with the objective focus.

Each step builds its Leginon-style calibration from the model (as a calibration run on the
microscope would), measures the shift with ``measure_shift``, and solves for defocus with
the Cs term modelled. A figure with both pairs and the remaining error is saved.

Run ``python examples/beamtilt_two_step.py [OUTDIR]`` (default ``out/beamtilt_two_step``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nanoro_optics.beamtilt import (
    BeamTiltCalibration,
    defocus_error_budget,
    displacement_px,
    measure_shift,
    simulate_tilt_pair,
    solve_defocus_stig,
    tilt_pair_displacement,
)

CS_MM = 2.7
TILT_MRAD = 5.0  # half the separation: images at -5 and +5 mrad
STAGE_ERROR = 0.03  # the stage lands 3 % short


def calibration(pixel_size_nm: float) -> BeamTiltCalibration:
    """Leginon-style calibration of one magnification, from two defoci."""

    def model(tilt: complex, z: float, stig: tuple[float, float]) -> np.ndarray:
        d = tilt_pair_displacement(tilt, defocus_um=z)
        return displacement_px(d, pixel_size_nm=pixel_size_nm)

    return BeamTiltCalibration.measure(model, tilt_mrad=TILT_MRAD, defocus_um=(-2.0, 2.0))


def autofocus_step(
    defocus_um: float, *, pixel_size_nm: float, size: int, dose: float, seed: int, limit: float
) -> tuple[float, object, object]:
    pair = simulate_tilt_pair(
        tilt_mrad=TILT_MRAD,
        shape=(size, size),
        pixel_size_nm=pixel_size_nm,
        defocus_um=defocus_um,
        cs_mm=CS_MM,
        dose_e_per_px=dose,
        seed=seed,
    )
    shift = measure_shift(pair.reference, pair.moving, max_shift_px=size / 4)
    if not shift.reliable:
        raise RuntimeError(f"unreliable correlation: {shift.reason}")
    res = solve_defocus_stig(
        [shift.shift_px], [TILT_MRAD], calibration(pixel_size_nm), cs_mm=CS_MM, fit_limit_um=limit
    )
    return res.defocus_um, pair, shift


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", nargs="?", default="out/beamtilt_two_step")
    args = ap.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)

    z = -80.0  # um from eucentric focus
    history = [("start", z)]
    steps = [
        ("Z focus (20 nm px, stage)", dict(pixel_size_nm=20.0, size=256, dose=50.0, limit=2.0)),
        ("Focus (1 nm px, defocus)", dict(pixel_size_nm=1.0, size=512, dose=20.0, limit=0.1)),
    ]
    pairs = []
    print(f"{'step':<28} {'measured um':>12} {'remaining um':>13} {'1 px = um':>10}")
    for k, (name, opts) in enumerate(steps):
        measured, pair, shift = autofocus_step(
            z,
            pixel_size_nm=opts["pixel_size_nm"],
            size=int(opts["size"]),
            dose=opts["dose"],
            seed=k,
            limit=opts["limit"],
        )
        if k == 0:
            z = z - measured * (1.0 - STAGE_ERROR)  # stage move, lands short
        else:
            z = z - measured  # objective focus change
        per_px = defocus_error_budget(
            1.0, pixel_size_nm=opts["pixel_size_nm"], tilt_difference_mrad=2 * TILT_MRAD
        )
        print(f"{name:<28} {measured:>12.3f} {z:>13.4f} {per_px:>10.3f}")
        history.append((name, z))
        pairs.append((name, pair, shift))

    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    for col, (name, pair, shift) in enumerate(pairs):
        for j, (img, label) in enumerate(((pair.reference, "-t"), (pair.moving, "+t"))):
            ax = axes[2 * col + j]
            ax.imshow(img, cmap="gray")
            ax.set_title(f"{name.split(' (')[0]}, tilt {label}", fontsize=9)
            ax.axis("off")
        axes[2 * col + 1].text(
            2, 12, f"shift {shift.shift_px[1]:.2f} px", color="yellow", fontsize=8
        )
    ax = axes[4]
    labels = [h[0].split(" (")[0] for h in history]
    ax.bar(labels, [abs(h[1]) for h in history], color=["0.6", "tab:orange", "tab:green"])
    ax.set_yscale("log")
    ax.set_ylabel("|defocus| (um)")
    ax.set_title("remaining defocus", fontsize=9)
    fig.tight_layout()
    path = out / "beamtilt_two_step.png"
    fig.savefig(path, dpi=110)
    print(f"final defocus {z * 1e3:.1f} nm; figure: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
