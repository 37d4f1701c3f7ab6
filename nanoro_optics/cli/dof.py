"""``nanoro-optics dof``: depth of field, resolution and the largest sensible Z spacing."""

from __future__ import annotations

import argparse
import json

COMMAND = "dof"
HELP = "Depth of field, axial and lateral resolution, and the recommended maximum Z spacing."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options to ``parser``."""
    from ..optics import DEFAULT_DETECTOR_UM, DEFAULT_WAVELENGTH_UM, OBJECTIVES

    parser.add_argument(
        "--objective",
        metavar="NAME",
        help=f"a preset objective: {', '.join(repr(k) for k in OBJECTIVES)}",
    )
    parser.add_argument("--na", type=float, help="numerical aperture")
    parser.add_argument("--magnification", type=float, help="lateral magnification")
    parser.add_argument("--n", type=float, help="immersion index (default 1.0, air)")
    parser.add_argument(
        "--wavelength-um",
        type=float,
        default=DEFAULT_WAVELENGTH_UM,
        help=f"vacuum wavelength in um (default {DEFAULT_WAVELENGTH_UM})",
    )
    parser.add_argument(
        "--detector-um",
        type=float,
        default=DEFAULT_DETECTOR_UM,
        help=f"detector resolution in the image plane, um (default {DEFAULT_DETECTOR_UM})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def compute(args: argparse.Namespace) -> dict[str, object]:
    """Return the figures the command prints, as a JSON-ready dict."""
    from .. import optics

    if args.objective is not None:
        if args.objective not in optics.OBJECTIVES:
            raise ValueError(
                f"unknown objective {args.objective!r}; known: {sorted(optics.OBJECTIVES)}"
            )
        given = [k for k in ("na", "magnification", "n") if getattr(args, k) is not None]
        if given:
            raise ValueError(f"--objective already sets the lens; do not also give --{given[0]}")
        obj = optics.OBJECTIVES[args.objective]
        name, na, mag, n = obj.name, obj.na, obj.magnification, obj.n_immersion
    else:
        if args.na is None:
            raise ValueError(
                "give --objective NAME, or --na (with --magnification for the full DoF)"
            )
        name, na, mag = "custom", args.na, args.magnification
        n = 1.0 if args.n is None else args.n
    lam = args.wavelength_um
    if mag is not None:
        dof = optics.depth_of_field(
            na, wavelength_um=lam, n=n, magnification=mag, detector_um=args.detector_um
        )
        definition = "lambda0 n / NA^2 + n e / (M NA)"
    else:
        dof = optics.depth_of_field(na, wavelength_um=lam, n=n)
        definition = "lambda0 n / NA^2 (wave-optical only: no magnification given)"
    return {
        "objective": name,
        "na": na,
        "magnification": mag,
        "n": n,
        "wavelength_um": lam,
        "detector_um": args.detector_um if mag is not None else None,
        "depth_of_field_um": dof,
        "depth_of_field_definition": definition,
        "axial_resolution_um": optics.axial_resolution(na, wavelength_um=lam, n=n),
        "lateral_resolution_um": optics.lateral_resolution(na, wavelength_um=lam),
        "max_z_spacing_um": dof,
    }


def run(args: argparse.Namespace) -> int:
    """Print the figures; return 0."""
    out = compute(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    mag = out["magnification"]
    lens = f"{out['objective']}: NA {out['na']}, n {out['n']}"
    if mag is not None:
        lens += f", {mag:g}x"
    print(lens)
    rows = [
        ("depth of field", "depth_of_field_um", str(out["depth_of_field_definition"])),
        ("axial resolution", "axial_resolution_um", "lambda0 / (n - sqrt(n^2 - NA^2))"),
        ("lateral resolution", "lateral_resolution_um", "Rayleigh, 0.61 lambda0 / NA"),
        ("max Z spacing", "max_z_spacing_um", "no larger than the depth of field"),
    ]
    for label, key, note in rows:
        print(f"  {label:<19} {out[key]:.4g} um  ({note})")
    return 0
