"""``nanoro-optics demo``: plan, acquire (simulated), fuse and score a focus stack end to end."""

from __future__ import annotations

import argparse
import json

from .._text import plural

COMMAND = "demo"
HELP = (
    "Run the whole pipeline on a simulated specimen: plan, acquire, fuse while acquiring, "
    "write the fused image and depth map, report PSNR and depth error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options to ``parser``."""
    from ..optics import OBJECTIVES

    parser.add_argument(
        "--out",
        metavar="DIR",
        default="nanoro_demo",
        help="folder for fused.tif, depth_um.tif and summary.json (default ./nanoro_demo)",
    )
    parser.add_argument(
        "--objective",
        metavar="NAME",
        default="Nikon MRP70401",
        help=f"objective (default 'Nikon MRP70401'); one of {', '.join(map(repr, OBJECTIVES))}",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", type=int, default=512, metavar="PX", help="frame size in pixels (default 512)"
    )
    parser.add_argument(
        "--relief-um", type=float, default=15.0, help="specimen height in um (default 15)"
    )
    parser.add_argument("--colour", action="store_true", help="simulate an RGB camera")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--auto-range",
        action="store_true",
        help="find the specimen's top and bottom by image (autofocus), plan and scan that "
        "range; report found vs true (writes no files)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier demo in --out (default: refuse, write nothing)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its summary."""
    import sys

    from ..demo import run_demo
    from ._first_run import compile_notice

    if args.auto_range:
        return _run_auto_range(args)
    try:
        with compile_notice(sys.stderr):
            s = run_demo(
                args.out,
                seed=args.seed,
                objective=args.objective,
                shape=(args.size, args.size),
                relief_um=args.relief_um,
                colour=args.colour,
                overwrite=args.overwrite,
            )
    except FileExistsError as exc:
        print(f"nanoro-optics {COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(s.to_dict(), indent=2))
        return 0
    plan = s.plan
    print(f"objective        {s.objective}  (depth of field {s.depth_of_field_um:.3g} um)")
    print(
        f"specimen         {s.specimen_bottom_um:.3g} .. {s.specimen_top_um:.3g} um, "
        f"{s.shape[1]} x {s.shape[0]} px"
    )
    print(
        f"plan             {plural(plan['image_count'], 'image')}, "
        f"spacing {plan['spacing_um']:.4g} um, distance {plan['distance_um']:.4g} um, "
        f"from {s.commanded_um[0]:.4g} down to {plan['start_um']:.4g} um"
    )
    print(
        f"fused PSNR       {s.psnr_db:.2f} dB vs the all-in-focus truth (peak = white); "
        f"best single frame {s.best_frame_psnr_db:.2f} dB"
    )
    print(
        f"depth error      {s.depth_rmse_um:.3f} um RMS  "
        f"({100 * s.depth_nan_fraction:.2f}% of pixels without a depth)"
    )
    print(f"time             {s.seconds:.1f} s")
    for key, path in s.files.items():
        print(f"{key:<16} {path}")
    return 0


def _run_auto_range(args: argparse.Namespace) -> int:
    """``demo --auto-range``: autofocus finds the range, then the plan and the scan."""
    from dataclasses import asdict

    from ..demo import run_auto_range_demo

    s = run_auto_range_demo(
        seed=args.seed,
        objective=args.objective,
        shape=(args.size, args.size),
        relief_um=args.relief_um,
    )
    if args.json:
        print(json.dumps(asdict(s), indent=2))
        return 0
    d = s.depth_of_field_um
    print(f"objective        {s.objective}  (depth of field {d:.3g} um)")
    print(f"search range     {s.search_um[0]:.4g} .. {s.search_um[1]:.4g} um")
    for name, found, true in (
        ("top", s.found_top_um, s.true_top_um),
        ("bottom", s.found_bottom_um, s.true_bottom_um),
    ):
        print(
            f"{name:<16} found {found:.4g} um, true {true:.4g} um "
            f"({(found - true) / d:+.2f} depth of field)"
        )
    print(
        f"search           {plural(s.search_frames, 'frame')} "
        f"(a sweep at half the depth of field: {s.sweep_frames})"
    )
    plan = s.plan
    print(
        f"plan             {plural(plan['image_count'], 'image')}, spacing "
        f"{plan['spacing_um']:.4g} um, from {plan['start_um'] + plan['distance_um']:.4g} down "
        f"to {plan['start_um']:.4g} um; fused PSNR {s.psnr_db:.2f} dB"
    )
    print(f"time             {s.seconds:.1f} s")
    return 0
