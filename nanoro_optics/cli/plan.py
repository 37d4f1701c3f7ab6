"""``nanoro-optics plan``: a Z-scan plan covering a sample, its positions and its problems."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._text import plural

COMMAND = "plan"
HELP = "Plan a focus-stacking Z scan over a sample: spacing, count, positions and problems."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options to ``parser``."""
    from ..optics import OBJECTIVES

    parser.add_argument(
        "--top", type=float, required=True, metavar="UM", help="stage Z at the sample's top (um)"
    )
    parser.add_argument(
        "--bottom",
        type=float,
        required=True,
        metavar="UM",
        help="stage Z at the sample's bottom (um)",
    )
    parser.add_argument(
        "--spacing", type=float, metavar="UM", help="largest spacing between images (um)"
    )
    parser.add_argument(
        "--objective",
        metavar="NAME",
        help="objective preset; its depth of field is the default spacing and sets the limits "
        f"({', '.join(repr(k) for k in OBJECTIVES)})",
    )
    parser.add_argument(
        "--margin-steps",
        type=int,
        default=1,
        metavar="N",
        help="extra steps below the bottom and above the top (default 1)",
    )
    parser.add_argument(
        "--rounding",
        choices=("cover", "extend"),
        default="cover",
        help="when the depth is not a whole number of spacings: shrink the spacing (cover, "
        "default) or keep it and scan a little further (extend)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """Return the plan, its positions and its problems as a JSON-ready dict."""
    from ..zscan import ZScanLimits, plan_for_sample

    if args.spacing is None and args.objective is None:
        raise ValueError("give --spacing UM or --objective NAME (or both)")
    plan = plan_for_sample(
        args.top,
        args.bottom,
        spacing_um=args.spacing,
        objective=args.objective,
        margin_steps=args.margin_steps,
        rounding=args.rounding,
    )
    limits = None if args.objective is None else ZScanLimits.for_objective(args.objective)
    return {
        "top_um": args.top,
        "bottom_um": args.bottom,
        "objective": args.objective,
        "requested_spacing_um": args.spacing
        if args.spacing is not None
        else (limits.default_spacing_um if limits is not None else None),
        "margin_steps": args.margin_steps,
        "rounding": args.rounding,
        "plan": plan.to_dict(),
        "positions_um": plan.positions_um().tolist(),
        "limits": None
        if limits is None
        else {
            "min_spacing_um": limits.min_spacing_um,
            "default_spacing_um": limits.default_spacing_um,
            "max_spacing_um": limits.max_spacing_um,
            "max_distance_um": limits.max_distance_um,
            "max_count": limits.max_count,
        },
        "problems": plan.problems(limits),
    }


def run(args: argparse.Namespace) -> int:
    """Print the plan; return 0 if it may run, 1 if it has problems."""
    out = compute(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return 1 if out["problems"] else 0
    plan = out["plan"]
    print(
        f"sample {out['bottom_um']:g} .. {out['top_um']:g} um, spacing <= "
        f"{out['requested_spacing_um']:.6g} um"
        + (f" ({out['objective']})" if out["objective"] else "")
    )
    print(
        f"plan: start {plan['start_um']:.6g} um, distance {plan['distance_um']:.6g} um = "
        f"{plural(plan['count'], 'step')} x {plan['spacing_um']:.6g} um, "
        f"{plural(plan['image_count'], 'image')}"
    )
    print("positions (capture order, top to bottom), um:")
    print("  " + ", ".join(f"{z:.6g}" for z in out["positions_um"]))
    if out["problems"]:
        print("problems (the plan must not run):")
        for problem in out["problems"]:
            print(f"  - {problem}")
        return 1
    print("problems: none")
    return 0
