"""Benchmark of nanoro_optics.autofocus on the simulated microscope, beside two yardsticks.

Trials (each with its own seed: specimen, position, noise):

- *focus*: a flat specimen (1/f texture, sparse fluorescence, low contrast, noisy, blank)
  at a random height in a search range of 30 depths of field (DoF); ``find_focus`` vs
  (a) an exhaustive sweep at DoF/2 scored by the variance of the Laplacian, argmax with a
  parabola through its neighbours, and (b) a Brent search of the normalised variance
  (variance / mean) over the range, as Micro-Manager's software autofocus (OughtaFocus)
  describes it (``scipy.optimize.minimize_scalar(method="bounded")``, Brent's method,
  ``xatol`` = DoF/4). Error |found - true| in DoF; frames; a blank field "found" by a
  method is a false find (the yardsticks have no refusal).
- *range*: a specimen with relief (tilted, bump, two layers, sparse fluorescence on a
  tilt, low contrast, noisy, blank); ``find_sample_range`` vs the exhaustive DoF/2 sweep
  reading each 16 px tile's variance-of-Laplacian peak (tiles whose peak is at least 1.5 x
  their curve's median). A trial passes when the top is found within [-DoF/2, +1.5 DoF] of
  the true top and the bottom within [-1.5 DoF, +DoF/2] of the true bottom (for sparse
  fluorescence the true extremes are those of the spots, not of the dark plane).
- *faults*: >= 1000 randomized searches (``find_focus``, and ``find_sample_range``) with
  injected stage/camera faults (nanoro_optics.testing.autofocus_scenarios); counts moves
  outside the search range or the limits and errors without a curve.

Objectives: 40x/0.65 (DoF 1.71 um, relief 4 DoF) and 10x/0.25 (DoF 11.8 um, relief
2 DoF); 128 x 128 px frames at 6.5 um / M.

Slopes covered (printed by the benchmark as "surface slopes", |grad height| of the
specimens over the trials' seeds): the relief at 40x was reduced from 8 to 4 DoF because
the simulator renders each pixel with the defocus of its own height (a layered model),
which is only sound where the surface is not steeper than the objective's acceptance cone
(half-angle asin(NA): 40.5 deg, slope 0.86, at 40x; 14.5 deg, slope 0.26, at 10x); at
8 DoF the 40x hills reached slope 3.2 (73 deg). At 4 DoF, at 40x: the tilted and sparse
planes slope 0.24-0.26 (13-15 deg), inside the cone; the bump 0.53 median, 0.90 at most
(3.6 % of its area beyond the cone); the hills (two layers, low contrast, noisy) 0.30
median, 1.25 at the 99th percentile, 1.61 (58 deg) at most (8.9 % beyond). At 10x (2 DoF)
the tilted and sparse planes (0.20-0.22) are inside the narrow cone, the bump (74 %) and
the hills (50 %) largely outside it. So the 40x relief trials cover gentle to moderate
slopes; surfaces mostly steeper than ~40 deg are not covered, and where the hills and the
10x trials pass the cone the simulator is least faithful.

Sparse fluorescence at 40x is the weak case. Its failures come from spotless tiles on
the field's border: the simulator renders the field periodically (FFT), so the blur discs
of bright spots at the opposite border, up to 3 DoF away on the tilt, wrap in, and their
rims read as structure above the top or below the bottom. The same happens with bright
objects just outside a real field, which no in-field test can see. (On seeds 100-119, not
used here, the rings of border tiles left out and the truth taken inside them, 18 of 20
trials pass; with them, 11.)

Run ``python benchmarks/bench_autofocus.py [--trials N] [--faults N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from nanoro_optics import optics
from nanoro_optics.autofocus import (
    FocusNotFoundError,
    find_focus,
    find_sample_range,
    tile_scores,
)
from nanoro_optics.hardware import MockZStage, SimulatedCamera
from nanoro_optics.hardware.specimen_kinds import specimen_of_kind

OBJECTIVES = ("Nikon MRP70401", "Nikon MRP70101")
SHAPE = (128, 128)
RANGE_DOF = 30.0
FOCUS_KINDS = ("texture", "sparse", "low_contrast", "noisy", "blank")
RANGE_KINDS = ("tilted", "bump", "two_layers", "sparse", "low_contrast", "noisy", "blank")
#: relief in DoF: 4 DoF (6.9 um) on the 40x's 21 um field keeps most of the surface's
#: slopes inside the objective's acceptance cone (tan 40.5 deg = 0.86), where the
#: simulator's layered defocus model holds; at 8 DoF the hills reached 3.2 (73 deg). See
#: slope_table() for what each kind covers (the hills still pass the cone in places).
RELIEF_DOF = {"Nikon MRP70401": 4.0, "Nikon MRP70101": 2.0}
NOISY_SIGNAL_E_PER_MS = 20.0  # 100x fewer photons than the default camera


def _specimen_kind(kind: str) -> str:
    return {"texture": "flat", "noisy": "hills"}.get(kind, kind)


def rig(obj: optics.Objective, kind: str, *, relief: float, seed: int, search: float):
    d = obj.depth_of_field()
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.25 * search, 0.75 * search - relief)
    px = 6.5 / obj.magnification
    spec_kind = _specimen_kind(kind)
    if kind in ("noisy", "low_contrast") and relief == 0.0:
        spec_kind = "flat" if kind == "noisy" else "low_contrast"
    spec = specimen_of_kind(
        spec_kind,
        SHAPE,
        relief_um=relief,
        base_um=base,
        feature_px=max(1.0, obj.lateral_resolution() / px),
        seed=seed,
    )
    stage = MockZStage(limits_um=(-50.0, search + 50.0), position_um=search + 10.0)
    cam_opts: dict[str, Any] = {"seed": seed}
    if kind == "noisy":
        cam_opts["signal_e_per_ms"] = NOISY_SIGNAL_E_PER_MS
    cam = SimulatedCamera(stage, spec, objective=obj, **cam_opts)
    del d
    return stage, cam, spec


def cone_slope(obj: optics.Objective) -> float:
    """tan of the objective's acceptance half-angle asin(NA) (in air)."""
    return obj.na / math.sqrt(1.0 - obj.na**2)


#: seed of the first trial (``--first-seed``): other seeds check that figures are not tuned
FIRST_SEED = 0


def slope_table(n: int) -> dict[str, Any]:
    """Surface slopes of the relief trials' specimens against the acceptance cone."""
    out: dict[str, Any] = {}
    print("\nsurface slopes of the relief specimens (|grad height|, over the trials' seeds)")
    print(
        f"{'objective':16}{'kind':14}{'median':>8}{'p99':>8}{'max':>8}{'max deg':>9}{'> cone':>9}"
    )
    for name in OBJECTIVES:
        obj = optics.OBJECTIVES[name]
        d = obj.depth_of_field()
        px = 6.5 / obj.magnification
        cone = cone_slope(obj)
        for kind in RANGE_KINDS:
            if kind == "blank":
                continue
            grads = []
            for seed in range(FIRST_SEED, FIRST_SEED + n):
                _, _, spec = rig(
                    obj, kind, relief=RELIEF_DOF[name] * d, seed=seed, search=RANGE_DOF * d
                )
                gy, gx = np.gradient(spec.height_um, px)
                grads.append(np.hypot(gx, gy).ravel())
            g = np.concatenate(grads)
            row = {
                "median": float(np.median(g)),
                "p99": float(np.percentile(g, 99)),
                "max": float(g.max()),
                "fraction_beyond_cone": float(np.mean(g > cone)),
                "cone": cone,
            }
            out[f"{name}/{kind}"] = row
            print(
                f"{name:16}{kind:14}{row['median']:8.2f}{row['p99']:8.2f}{row['max']:8.2f}"
                f"{math.degrees(math.atan(row['max'])):9.0f}{row['fraction_beyond_cone']:9.1%}"
            )
        print(
            f"{'':16}(acceptance cone of {name}: slope {cone:.2f}, "
            f"{math.degrees(math.atan(cone)):.1f} deg; relief {RELIEF_DOF[name]:g} DoF)"
        )
    return out


def true_range(spec, kind: str) -> tuple[float, float]:
    """Highest and lowest point with something to see (sparse: the spots' pixels)."""
    if kind == "sparse":
        h = spec.height_um[spec.texture > 0.1]
        return float(h.max()), float(h.min())
    return spec.top_um, spec.bottom_um


def snap_at(stage, cam, z: float) -> np.ndarray:
    stage.move_to_um(z)
    stage.wait_until_idle()
    return cam.snap()


def vol(frame: np.ndarray) -> float:
    g = frame.astype(np.float64)
    from scipy import ndimage

    return float(np.var(ndimage.laplace(g)))


def parabola_peak(z: np.ndarray, v: np.ndarray) -> float:
    j = int(np.argmax(v))
    if 0 < j < len(v) - 1:
        a, b, _ = np.polyfit(z[j - 1 : j + 2] - z[j], v[j - 1 : j + 2], 2)
        if a < 0:
            return float(z[j] - b / (2 * a))
    return float(z[j])


def exhaustive_focus(stage, cam, lo: float, hi: float, d: float) -> tuple[float, int]:
    zs = np.arange(hi, lo - 1e-9, -d / 2)
    v = np.array([vol(snap_at(stage, cam, z)) for z in zs])
    return parabola_peak(zs[::-1], v[::-1]), len(zs)


def brent_focus(stage, cam, lo: float, hi: float, d: float) -> tuple[float, int]:
    from scipy.optimize import minimize_scalar

    count = 0

    def neg_sharpness(z: float) -> float:
        nonlocal count
        count += 1
        g = snap_at(stage, cam, float(z)).astype(np.float64)
        return -float(np.var(g) / max(np.mean(g), 1e-12))

    res = minimize_scalar(
        neg_sharpness, bounds=(lo, hi), method="bounded", options={"xatol": d / 4}
    )
    return float(res.x), count


def exhaustive_range(stage, cam, lo: float, hi: float, d: float) -> tuple[float, float, int]:
    zs = np.arange(hi, lo - 1e-9, -d / 2)
    frames = [snap_at(stage, cam, z) for z in zs]
    from nanoro_optics.autofocus import frame_noise

    sigma = float(np.median([frame_noise(f) for f in frames]))
    tiles = np.stack([tile_scores(f, tile_px=16, noise_dn=sigma) for f in frames])
    zs_up, t_up = zs[::-1], tiles[::-1]
    heights = []
    for idx in np.ndindex(tiles.shape[1:]):
        v = t_up[:, idx[0], idx[1]]
        if v.max() >= 1.5 * np.median(v):  # the tile's curve stands out
            heights.append(parabola_peak(zs_up, v))
    if not heights:
        return math.nan, math.nan, len(zs)
    return max(heights), min(heights), len(zs)


def focus_trials(n: int) -> list[dict[str, Any]]:
    rows = []
    for name in OBJECTIVES:
        obj = optics.OBJECTIVES[name]
        d = obj.depth_of_field()
        search = RANGE_DOF * d
        for kind in FOCUS_KINDS:
            for seed in range(FIRST_SEED, FIRST_SEED + n):
                row: dict[str, Any] = {"objective": name, "kind": kind, "seed": seed}
                stage, cam, spec = rig(obj, kind, relief=0.0, seed=seed, search=search)
                truth = float(spec.height_um.mean())
                t = time.perf_counter()
                try:
                    res = find_focus(stage, cam, search_um=(0.0, search), objective=obj)
                    row["ours_err_dof"] = abs(res.z_um - truth) / d
                    row["ours_frames"] = res.frames
                except FocusNotFoundError as exc:
                    row["ours_err_dof"] = math.nan
                    row["ours_frames"] = len(exc.curve)
                row["ours_s"] = time.perf_counter() - t
                stage, cam, _ = rig(obj, kind, relief=0.0, seed=seed, search=search)
                z, f = exhaustive_focus(stage, cam, 0.0, search, d)
                row["sweep_err_dof"], row["sweep_frames"] = abs(z - truth) / d, f
                stage, cam, _ = rig(obj, kind, relief=0.0, seed=seed, search=search)
                z, f = brent_focus(stage, cam, 0.0, search, d)
                row["brent_err_dof"], row["brent_frames"] = abs(z - truth) / d, f
                rows.append(row)
    return rows


def range_trials(n: int) -> list[dict[str, Any]]:
    rows = []
    for name in OBJECTIVES:
        obj = optics.OBJECTIVES[name]
        d = obj.depth_of_field()
        search = RANGE_DOF * d
        relief = RELIEF_DOF[name] * d
        for kind in RANGE_KINDS:
            for seed in range(FIRST_SEED, FIRST_SEED + n):
                row: dict[str, Any] = {"objective": name, "kind": kind, "seed": seed}
                stage, cam, spec = rig(obj, kind, relief=relief, seed=seed, search=search)
                top, bottom = true_range(spec, kind)
                t = time.perf_counter()
                try:
                    r = find_sample_range(stage, cam, search_um=(0.0, search), objective=obj)
                    row["ours_top_dof"] = (r.top_um - top) / d
                    row["ours_bottom_dof"] = (r.bottom_um - bottom) / d
                    row["ours_frames"] = r.frames
                except FocusNotFoundError as exc:
                    row["ours_top_dof"] = row["ours_bottom_dof"] = math.nan
                    row["ours_frames"] = len(exc.curve)
                row["ours_s"] = time.perf_counter() - t
                stage, cam, _ = rig(obj, kind, relief=relief, seed=seed, search=search)
                t_, b_, f = exhaustive_range(stage, cam, 0.0, search, d)
                row["sweep_top_dof"], row["sweep_bottom_dof"] = (t_ - top) / d, (b_ - bottom) / d
                row["sweep_frames"] = f
                rows.append(row)
    return rows


def fault_run(n: int) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings

    from nanoro_optics.testing import autofocus_scenarios, check_autofocus_scenario

    counts: dict[str, int] = {"searches": 0, "violations": 0, "errors": 0, "no_curve": 0}
    outcomes: dict[str, int] = {}
    first: list[str] = []
    searches = {
        "find_focus": functools.partial(find_focus, spacing_um=1.0),
        "find_sample_range": functools.partial(find_sample_range, spacing_um=1.0),
    }

    def runner(name: str, count: int) -> Any:
        @settings(
            max_examples=count,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(sc=autofocus_scenarios())
        def run(sc: Any) -> None:
            counts["searches"] += 1
            try:
                out = check_autofocus_scenario(searches[name], sc)
            except AssertionError as exc:
                counts["violations"] += 1
                if len(first) < 3:
                    first.append(str(exc))
                return
            key = f"{name}:{type(out).__name__}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if isinstance(out, BaseException):
                counts["errors"] += 1
                if not (hasattr(out, "curve") or hasattr(out, "partial")):
                    counts["no_curve"] += 1

        return run

    for name, share in (("find_focus", 0.7), ("find_sample_range", 0.3)):
        runner(name, max(1, round(n * share)))()
    return {**counts, "outcomes": outcomes, "first_violations": first}


def _pct(x: list[bool]) -> str:
    return f"{100.0 * np.mean(x):5.1f} %" if x else "  -  "


def summarise(focus: list[dict[str, Any]], rng: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"focus": {}, "range": {}}
    print("\nfind_focus (flat specimens, search range 30 DoF)")
    print(
        f"{'objective':16}{'kind':14}{'method':8}{'<=DoF/4':>9}{'median err':>12}"
        f"{'median fr':>11}{'found':>8}"
    )
    for name in OBJECTIVES:
        for kind in FOCUS_KINDS:
            rows = [r for r in focus if r["objective"] == name and r["kind"] == kind]
            for m in ("ours", "sweep", "brent"):
                err = np.array([r[f"{m}_err_dof"] for r in rows], dtype=float)
                fr = np.array([r[f"{m}_frames"] for r in rows], dtype=float)
                found = np.isfinite(err)
                ok = (err <= 0.25) if kind != "blank" else ~found
                key = f"{name}/{kind}/{m}"
                out["focus"][key] = {
                    "pass_fraction": float(np.mean(ok)),
                    "median_err_dof": float(np.nanmedian(err)) if found.any() else None,
                    "median_frames": float(np.median(fr)),
                    "found_fraction": float(np.mean(found)),
                }
                med = f"{np.nanmedian(err):.3f}" if found.any() else "-"
                print(
                    f"{name:16}{kind:14}{m:8}{_pct(list(ok)):>9}{med:>12}"
                    f"{np.median(fr):>11.0f}{np.mean(found):>8.2f}"
                )
    print(
        "\nfind_sample_range (relief; pass: top in [-DoF/2, +1.5 DoF], bottom in "
        "[-1.5 DoF, +DoF/2])"
    )
    print(
        f"{'objective':16}{'kind':14}{'method':8}{'pass':>9}{'top err':>10}{'bot err':>10}"
        f"{'median fr':>11}"
    )
    for name in OBJECTIVES:
        for kind in RANGE_KINDS:
            rows = [r for r in rng if r["objective"] == name and r["kind"] == kind]
            for m in ("ours", "sweep"):
                t = np.array([r[f"{m}_top_dof"] for r in rows], dtype=float)
                b = np.array([r[f"{m}_bottom_dof"] for r in rows], dtype=float)
                fr = np.array([r[f"{m}_frames"] for r in rows], dtype=float)
                if kind == "blank":
                    ok = ~np.isfinite(t)
                else:
                    ok = (t >= -0.5) & (t <= 1.5) & (b <= 0.5) & (b >= -1.5)
                key = f"{name}/{kind}/{m}"
                out["range"][key] = {
                    "pass_fraction": float(np.mean(ok)),
                    "median_top_dof": float(np.nanmedian(t)) if np.isfinite(t).any() else None,
                    "median_bottom_dof": float(np.nanmedian(b)) if np.isfinite(b).any() else None,
                    "median_frames": float(np.median(fr)),
                }
                tm = f"{np.nanmedian(t):+.2f}" if np.isfinite(t).any() else "-"
                bm = f"{np.nanmedian(b):+.2f}" if np.isfinite(b).any() else "-"
                print(
                    f"{name:16}{kind:14}{m:8}{_pct(list(ok)):>9}{tm:>10}{bm:>10}"
                    f"{np.median(fr):>11.0f}"
                )
    flat_ok = [r["ours_err_dof"] <= 0.25 for r in focus if r["kind"] != "blank"]
    relief_ok = [
        (-0.5 <= r["ours_top_dof"] <= 1.5) and (-1.5 <= r["ours_bottom_dof"] <= 0.5)
        for r in rng
        if r["kind"] != "blank"
    ]
    blanks = [not math.isfinite(r["ours_err_dof"]) for r in focus if r["kind"] == "blank"] + [
        not math.isfinite(r["ours_top_dof"]) for r in rng if r["kind"] == "blank"
    ]
    ratio_f = np.median([r["ours_frames"] / r["sweep_frames"] for r in focus])
    ratio_r = np.median([r["ours_frames"] / r["sweep_frames"] for r in rng])
    out["acceptance"] = {
        "flat_within_dof_over_4": float(np.mean(flat_ok)),
        "relief_range_pass": float(np.mean(relief_ok)),
        "blank_refused": float(np.mean(blanks)),
        "median_frames_ratio_focus": float(ratio_f),
        "median_frames_ratio_range": float(ratio_r),
    }
    acc = out["acceptance"]
    print(
        f"\nacceptance: flat <= DoF/4 {acc['flat_within_dof_over_4']:.1%} (>= 95 %), relief "
        f"range {acc['relief_range_pass']:.1%} (>= 90 %), blanks refused "
        f"{acc['blank_refused']:.1%} (100 %), median frames / DoF/2 sweep: focus "
        f"{ratio_f:.2f}, range {ratio_r:.2f} (<= 0.33)"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10, help="trials per objective and kind")
    ap.add_argument("--faults", type=int, default=1000, help="randomized fault searches")
    ap.add_argument(
        "--first-seed", type=int, default=0, help="seed of the first trial (held-out checks)"
    )
    ap.add_argument("--json", default="bench_results/autofocus.json", help="output JSON path")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    global FIRST_SEED
    FIRST_SEED = args.first_seed
    focus = focus_trials(args.trials)
    rng = range_trials(args.trials)
    out = summarise(focus, rng)
    out["slopes"] = slope_table(args.trials)
    if args.faults > 0:
        faults = fault_run(args.faults)
        print(
            f"\nfaults: {faults['searches']} randomized searches, {faults['violations']} "
            f"rule violations (positions outside the range/limits, moves after stop, "
            f"errors without a curve), {faults['errors']} errors all with a curve: "
            f"{faults['no_curve'] == 0}"
        )
        out["faults"] = faults
    out["trials"] = {"focus": focus, "range": rng}
    out["seconds"] = time.perf_counter() - t0
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"\nwrote {path} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
