"""``nanoro-optics fuse-batch``: fuse many focus stacks on a dask cluster, resumably."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._text import plural
from ._first_run import compile_notice
from ._fusion_options import (
    add_fusion_arguments,
    check_output_options,
    fusion_options,
    unused_option_notes,
)

COMMAND = "fuse-batch"
HELP = "Fuse many focus stacks (folders or multi-page TIFFs) on a dask cluster; reruns resume."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options to ``parser``."""
    parser.add_argument(
        "stacks",
        nargs="+",
        metavar="STACK",
        help="a folder of frames or a multi-page TIFF per stack, or glob patterns of them "
        "(quoted or not: 'runs/*/'); outputs are named after each folder or file",
    )
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask scheduler of a running cluster (tcp://host:8786); default: start a local "
        "cluster",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: one per core)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="scheduler connect timeout (s)"
    )
    parser.add_argument(
        "--format", choices=(".tif", ".png"), default=".tif", help="fused image format"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="fuse again stacks finished by an earlier run"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_fusion_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Fuse the stacks; exit 0 if all are fused, 1 if any failed, 2 on bad input."""
    from ..distributed import fuse_many

    check_output_options(args)
    options = fusion_options(args)
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("--workers sizes the local cluster; it cannot be used with --scheduler")
    for text in unused_option_notes(args, depth_written=True):
        print(f"nanoro-optics {COMMAND}: note: {text}", file=sys.stderr)
    quiet = bool(args.json)

    def on_start(link: str, n_workers: int, n_todo: int) -> None:
        if not quiet:
            where = f"; dashboard {link}" if link else ""
            workers = plural(n_workers, "dask worker")
            print(f"{plural(n_todo, 'stack')} to fuse on {workers}{where}", flush=True)

    def progress(rec: Any, done: int, total: int) -> None:
        if quiet:
            return
        if rec.status == "failed":
            what = f"FAILED: {rec.error}"
        elif rec.status == "skipped":
            what = "already done"
        else:
            what = f"fused {plural(rec.n_frames, 'frame')} in {rec.seconds:.1f} s on {rec.worker}"
        print(f"[{done}/{total}] {rec.name}: {what}", flush=True)

    if not quiet:
        print(f"fusing into {args.out} ...", flush=True)
    try:
        # a local cluster's kernels compile here, before it starts: said if they do
        with compile_notice(sys.stderr, enabled=args.scheduler is None):
            report = fuse_many(
                args.stacks,
                args.out,
                options,
                client=args.scheduler,
                n_workers=args.workers,
                image_suffix=args.format,
                overwrite=args.overwrite,
                timeout_s=args.timeout,
                progress=progress,
                on_start=on_start,
            )
    except ConnectionError as exc:
        print(f"nanoro-optics {COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    if quiet:
        payload = {
            "out_dir": report.out_dir,
            "seconds": report.seconds,
            "n_workers": report.n_workers,
            "dashboard_link": report.dashboard_link,
            "records": [r.to_json() for r in report.records],
        }
        print(json.dumps(payload, indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1
