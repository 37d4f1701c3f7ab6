"""Focal shift in index-mismatched samples: D. P. Hoffman's figures, with the correct indices.

Saves PNGs into the output folder (default ``out/focal_shift``):

1. ``glycerol_axial.png`` -- confocal on-axis intensity of an oil objective (n 1.518,
   NA 1.3, 0.514 / 0.59 um) focusing into glycerol (n 1.473), for NFP 0 ... 50 um;
2. ``water_axial.png`` -- the same into water (n 1.33; Hoffman's notebook passed
   (1.33, 1.473) here by mistake);
3. ``ice_axial.png`` -- widefield on-axis intensity of an air objective (NA 0.85, 0.52 um)
   into vitreous ice (n 1.3), NFP 0 ... 8 um (the notebook's negative NFPs would put the focus
   above the interface, which the model excludes);
4. ``ice_geometric_vs_vectorial.png`` -- AFP against NFP, vectorial vs the geometric
   (critical) ratio, and their difference;
5. ``scaling_models.png`` -- AFP/NFP against depth for oil -> water: wave optics, Loginov's
   depth-dependent model and the constant models.

It also prints the focal shifts next to Egner & Hell's Table 20.1.

Run ``python examples/plot_focal_shift.py [OUTDIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nanoro_optics import psf

OIL, GLYCEROL, WATER, ICE = 1.518, 1.473, 1.33, 1.3
EGNER_NFP = np.array([0.0, 5, 10, 15, 20, 25, 30, 50])
EGNER = {
    "glycerol": (GLYCEROL, [0, -0.28, -0.55, -0.83, -1.10, -1.33, -1.54, -2.30]),
    "water": (WATER, [0, -1.0, -1.83, -2.57, -3.3, -4.02, -4.72, -7.57]),
}


def axial_family(ax: plt.Axes, nfps: np.ndarray, width_um: float, title: str, **kw: float) -> None:
    """On-axis intensity against the deviation from the NFP, one curve per NFP."""
    cmap = plt.get_cmap("inferno")
    for i, nfp in enumerate(nfps):
        afp = psf.apparent_focal_position(float(nfp), **kw).afp_um
        centre = afp - nfp
        z = np.linspace(max(-nfp, centre - width_um), centre + width_um, 400)
        ax.plot(
            z,
            psf.axial_intensity(z, nfp_um=float(nfp), **kw),
            color=cmap(0.1 + 0.8 * i / max(1, len(nfps) - 1)),
            label=f"{nfp:g}",
        )
    ax.set_xlabel("deviation from nominal focal position z (µm)")
    ax.set_ylabel("intensity / interface focus")
    ax.set_title(title)
    ax.legend(title="NFP (µm)", fontsize="small")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path("out/focal_shift")
    out.mkdir(parents=True, exist_ok=True)
    confocal = dict(na=1.3, n_immersion=OIL, wavelength_um=0.514, emission_wavelength_um=0.59)

    # 1-2: oil objective into glycerol and into water (confocal), with Table 20.1
    for name, (n2, table) in EGNER.items():
        kw = dict(n_sample=n2, **confocal)
        fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
        axial_family(
            ax,
            EGNER_NFP,
            2.0 if name == "glycerol" else 3.0,
            f"Oil objective (n {OIL}, NA 1.3) in {name} (n {n2}), confocal",
            **kw,
        )
        fig.tight_layout()
        fig.savefig(out / f"{name}_axial.png")
        plt.close(fig)
        res = psf.apparent_focal_position(EGNER_NFP, **kw)
        shift = res.afp_um - EGNER_NFP
        print(f"\n{name}: NFP, focal shift (this library / Egner & Hell), rel. diff, peak")
        for nfp, s, t, p in zip(EGNER_NFP, shift, table, res.peak_intensity, strict=True):
            rel = f"{100 * (s - t) / t:+6.2f}%" if t else "     --"
            print(f"  {nfp:5.1f} um  {s:7.3f} / {t:6.2f} um  {rel}  {p:5.3f}")

    # 3: air objective into ice (widefield)
    ice = dict(na=0.85, n_immersion=1.0, n_sample=ICE, wavelength_um=0.52)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    axial_family(ax, np.array([0.0, 2, 4, 6, 8]), 3.0, "Air objective (NA 0.85) into ice", **ice)
    fig.tight_layout()
    fig.savefig(out / "ice_axial.png")
    plt.close(fig)

    # 4: geometric vs vectorial
    nfp = np.linspace(0.0, 8.0, 33)
    afp = psf.apparent_focal_position(nfp, **ice).afp_um
    geom = psf.axial_scaling_factor(0.85, n_immersion=1.0, n_sample=ICE, model="critical")
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(6, 8), dpi=120, sharex=True)
    a1.plot(nfp, afp, "o", ms=3, label="vectorial")
    a1.plot(nfp, geom * nfp, label=f"geometric ({geom:.3f} x NFP)")
    a1.set_ylabel("actual focal position (µm)")
    a1.legend()
    a1.set_title("Air objective into ice: geometric vs vectorial")
    a2.plot(nfp, afp - geom * nfp, "o", ms=3)
    a2.set_ylabel("Δ (µm)")
    a3.plot(nfp[1:], 100 * (afp[1:] - geom * nfp[1:]) / afp[1:], "o", ms=3)
    a3.set_ylabel("Δ (%)")
    a3.set_xlabel("nominal focal position (µm)")
    fig.tight_layout()
    fig.savefig(out / "ice_geometric_vs_vectorial.png")
    plt.close(fig)
    ratio = np.mean(afp[1:] / nfp[1:]) / geom
    print(f"\nice: mean slope ratio vectorial / geometric = {ratio:.1%} (Hoffman: 99%)")

    # 5: scaling models against depth, oil -> water
    sk = dict(n_immersion=OIL, n_sample=WATER)
    depth = np.geomspace(0.5, 100.0, 40)
    wave = psf.axial_scaling_factor(1.3, model="wave", nfp_um=depth, wavelength_um=0.52, **sk)
    lg = psf.axial_scaling_factor(1.3, model="loginov", nfp_um=depth, wavelength_um=0.52, **sk)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(depth, wave, "k-", lw=2, label="wave optics (this library)")
    ax.plot(depth, lg, "k--", label="Loginov 2024 (depth-dependent)")
    for model in psf.SCALING_MODELS[:7]:
        sf = psf.axial_scaling_factor(1.3, model=model, **sk)
        if model != "visser":  # 0.358: off the scale
            ax.axhline(
                sf,
                lw=1,
                alpha=0.7,
                color=plt.get_cmap("tab10")(len(ax.lines) % 10),
                label=f"{model} {sf:.3f}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("nominal focal position (µm)")
    ax.set_ylabel("AFP / NFP")
    ax.set_title("Oil objective NA 1.3 into water: axial scaling factor")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(out / "scaling_models.png")
    plt.close(fig)
    print(f"\nwrote {sorted(p.name for p in out.glob('*.png'))} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
