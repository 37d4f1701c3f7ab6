"""Every public function of optics, psf, beamtilt, zscan (and fusion's numeric options and
array helpers) under extreme arguments.

Each function is called with valid arguments, then with one argument at a time replaced by
an extreme value (NaN, +-inf, 0, the smallest subnormal, 1e308, negative, huge sizes, wrong
types). It must either return finite numbers, or raise ``ValueError`` / ``TypeError`` whose
message names the argument. Before, ``psf.actual_depth_um`` and
``psf.apparent_focal_position`` raised raw ZeroDivisionError / OverflowError at 5e-324 or
1e308, ``optics.depth_of_field(na=5e-324)`` returned inf, ``vectorial_psf(n_sample=5e-324)``
all NaN, and messages such as "Maximum allowed size exceeded" named no argument.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from nanoro_optics import beamtilt, optics, psf, zscan
from nanoro_optics.fusion import (
    FusionRule,
    collapse_pyramid,
    fuse_stack,
    gaussian_pyramid,
    laplacian_pyramid,
    synthetic_stack,
)
from nanoro_optics.fusion.depth import fill_depth, subframe_offset
from nanoro_optics.fusion.pyramid import auto_levels

#: values every numeric argument is tried with
EXTREMES: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    0.0,
    5e-324,
    -5e-324,
    1e-300,
    1e-9,
    -1.0,
    1e5,
    1e9,
    -1e9,
    1e12,
    1e300,
    1e308,
    -1e308,
    "x",
    None,
    1j,
    True,
    [[1.0, 2.0], [3.0]],
]
#: ... and every size (tuple) argument with these
SIZES: list[Any] = [(10**6, 10**6, 10**6), (10**12, 8), (0, 8, 8), (-1, 8, 8), (2.5, 8, 8), (3, 8)]
#: ... and every integer option with these
INTS: list[Any] = [10**18, 2**63, -1, 0]

PSF = {"na": 1.4, "n_immersion": 1.518, "n_sample": 1.33}
PSF_SMALL = {**PSF, "wavelength_um": 0.5, "n_nodes": 40}
CASES: dict[str, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = {
    "psf.actual_depth_um wave": (
        psf.actual_depth_um,
        (10.0,),
        {**PSF, "model": "wave", "wavelength_um": 0.5},
    ),
    "psf.actual_depth_um carlsson": (psf.actual_depth_um, (10.0,), {**PSF, "model": "carlsson"}),
    "psf.actual_depth_um loginov": (
        psf.actual_depth_um,
        (10.0,),
        {**PSF, "na": 1.2, "model": "loginov", "wavelength_um": 0.5},
    ),
    "psf.apparent_focal_position": (
        psf.apparent_focal_position,
        (10.0,),
        {**PSF, "wavelength_um": 0.5, "emission_wavelength_um": 0.6},
    ),
    "psf.axial_intensity": (
        psf.axial_intensity,
        ([-1.0, 0.0, 1.0],),
        {**PSF, "nfp_um": 5.0, "wavelength_um": 0.5},
    ),
    "psf.axial_scaling_factor": (
        psf.axial_scaling_factor,
        (1.4,),
        {
            "n_immersion": 1.518,
            "n_sample": 1.33,
            "model": "wave",
            "nfp_um": 10.0,
            "wavelength_um": 0.5,
        },
    ),
    "psf.focal_scan_psf": (
        psf.focal_scan_psf,
        ((3, 8, 8),),
        {**PSF_SMALL, "spacing_um": 0.2, "depth_um": 5.0, "nfp_center_um": 5.0},
    ),
    "psf.psfmodels_to_nominal": (
        psf.psfmodels_to_nominal,
        ([0.0, 1.0],),
        {"pz_um": 5.0, "n_immersion": 1.518, "n_sample": 1.33},
    ),
    "psf.vectorial_integrals": (
        psf.vectorial_integrals,
        ([0.0, 0.1], [0.0, 0.1]),
        {**PSF_SMALL, "nfp_um": 5.0},
    ),
    "psf.vectorial_psf": (
        psf.vectorial_psf,
        ((3, 8, 8),),
        {**PSF_SMALL, "spacing_um": 0.1, "nfp_um": 5.0, "z_center_um": 0.5},
    ),
    "optics.Objective": (
        optics.Objective,
        (),
        {
            "name": "x",
            "magnification": 20.0,
            "na": 0.5,
            "immersion": "air",
            "n_immersion": 1.0,
            "working_distance_um": 1000.0,
        },
    ),
    "optics.beam_radius": (
        optics.beam_radius,
        (1.0,),
        {"na": 0.5, "wavelength_um": 0.55, "n": 1.0},
    ),
    "optics.gouy_phase": (optics.gouy_phase, (1.0,), {"na": 0.5, "wavelength_um": 0.55, "n": 1.0}),
    "optics.beam_waist": (optics.beam_waist, (0.5,), {"wavelength_um": 0.55}),
    "optics.lateral_resolution": (optics.lateral_resolution, (0.5,), {"wavelength_um": 0.55}),
    "optics.light_sheet_thickness": (optics.light_sheet_thickness, (0.1,), {"wavelength_um": 0.55}),
    "optics.berek_depth_of_field": (
        optics.berek_depth_of_field,
        (0.5,),
        {"wavelength_um": 0.55, "total_magnification": 200.0, "n": 1.0},
    ),
    "optics.depth_of_field": (
        optics.depth_of_field,
        (0.5,),
        {"wavelength_um": 0.55, "n": 1.0, "magnification": 20.0, "detector_um": 6.5},
    ),
    "optics.effective_na": (optics.effective_na, (1.4,), {"n_immersion": 1.518, "n_sample": 1.33}),
    "optics.defocus_blur_radius": (optics.defocus_blur_radius, (5.0,), {"na": 0.5, "n": 1.0}),
    "optics.focal_shift_ratio": (
        optics.focal_shift_ratio,
        (1.2,),
        {"n_immersion": 1.518, "n_sample": 1.33},
    ),
}
for _name in (
    "axial_fwhm",
    "axial_resolution",
    "confocal_parameter",
    "inoue_axial_depth",
    "light_sheet_field_of_view",
    "rayleigh_range",
    "wave_optical_depth",
):
    CASES[f"optics.{_name}"] = (getattr(optics, _name), (0.5,), {"wavelength_um": 0.55, "n": 1.0})

_TILTS = [5.0, 5j, -5.0, -5j]
_SHIFTS = beamtilt.displacement_px(
    beamtilt.btid_displacement(_TILTS, defocus_um=1.0, cs_mm=2.0), pixel_size_nm=0.5
)
_IMAGE = np.random.default_rng(0).random((32, 32))
CASES.update(
    {
        "beamtilt.apparent_defocus": (
            beamtilt.apparent_defocus,
            (1.0,),
            {"tilt_mrad": 5.0, "cs_mm": 2.0},
        ),
        "beamtilt.btid_displacement": (
            beamtilt.btid_displacement,
            (5.0,),
            {
                "defocus_um": 1.0,
                "astigmatism_um": 0.1,
                "coma_um": 0.1,
                "three_fold_um": 0.1,
                "cs_mm": 2.0,
            },
        ),
        "beamtilt.defocus_error_budget": (
            beamtilt.defocus_error_budget,
            (0.1,),
            {"pixel_size_nm": 0.5, "tilt_difference_mrad": 10.0},
        ),
        "beamtilt.displacement_px": (
            beamtilt.displacement_px,
            (1.0,),
            {"pixel_size_nm": 0.5, "image_rotation_deg": 10.0},
        ),
        "beamtilt.extended_focus_levels": (
            beamtilt.extended_focus_levels,
            (),
            {
                "regular_um": (-36.0, 36.0),
                "lower_um": -300.0,
                "upper_um": 100.0,
                "interval_um": 20.0,
            },
        ),
        "beamtilt.focus_levels": (
            beamtilt.focus_levels,
            (),
            {"range_um": 72.0, "n_levels": 13, "offset_um": 0.0},
        ),
        "beamtilt.tilt_pair_displacement": (
            beamtilt.tilt_pair_displacement,
            (5.0,),
            {"misalignment_mrad": 0.1, "defocus_um": 1.0},
        ),
        "beamtilt.simulate_tilt_series": (
            beamtilt.simulate_tilt_series,
            (),
            {
                "tilts_mrad": [5.0, -5.0],
                "shape": (32, 32),
                "pixel_size_nm": 0.5,
                "defocus_um": 1.0,
                "cs_mm": 2.0,
                "image_rotation_deg": 0.0,
                "contrast": 0.3,
                "feature_size_px": 1.5,
                "drift_px": (0.5, 0.5),
                "dose_e_per_px": 100.0,
                "seed": 0,
            },
        ),
        "beamtilt.solve_btid_astigmatism": (
            beamtilt.solve_btid_astigmatism,
            (_SHIFTS, _TILTS),
            {"pixel_size_nm": 0.5, "image_rotation_deg": 0.0, "cs_mm": 2.0},
        ),
        "beamtilt.measure_shift": (
            beamtilt.measure_shift,
            (_IMAGE, np.roll(_IMAGE, 2, 0)),
            {
                "whitening": 1.0,
                "lowpass_cycles_per_px": 0.125,
                "highpass_cycles_per_px": 0.01,
                "taper": 0.15,
                "max_shift_px": 8.0,
                "min_peak_snr": 2.0,
                "workers": 1,
            },
        ),
        "zscan.ZScanPlan": (zscan.ZScanPlan, (10.0, 1.0, 10), {"start_um": 100.0}),
        "zscan.focus_levels": (zscan.focus_levels, (72.0, 13), {"offset_um": 0.0}),
        "zscan.extended_focus_levels": (
            zscan.extended_focus_levels,
            (72.0, 13),
            {"lower_um": -300.0, "upper_um": 100.0, "interval_um": 20.0, "offset_um": 0.0},
        ),
        "zscan.plan_for_sample": (
            zscan.plan_for_sample,
            (100.0, 90.0),
            {"spacing_um": 1.0, "margin_steps": 1},
        ),
        "zscan.ZScanLimits": (
            zscan.ZScanLimits,
            (0.1, 1.0, 10.0),
            {
                "max_distance_um": 1000.0,
                "default_distance_um": 10.0,
                "min_count": 0,
                "default_count": 1,
                "max_count": 99,
            },
        ),
    }
)

_STACK = synthetic_stack((24, 20), 3, seed=0).frames
_PLANE = _STACK[0].astype(np.float32)
_ACT = np.random.default_rng(0).random((3, 8, 8)) + 1.0


def _fuse(frames: Any, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """fuse_stack's image and confidence (the depth is NaN by design where no pixel is
    confident, e.g. with a noise_dn far above the data's contrast)."""
    res = fuse_stack(frames, **options)
    return res.image, res.confidence


CASES.update(
    {
        "fusion.fuse_stack": (
            _fuse,
            (_STACK,),
            {
                "z_um": [0.0, 1.0, 2.0],
                "levels": 3,
                "noise_dn": 1.0,
                "sharpness": 4,
                "window_px": 5,
                "coarse_window_px": 3,
                "inherit": 1.0,
                "min_confidence": 0.6,
                "focus_levels": 3,
                "noise_floor": 0.25,
                "guide_channel": 0,
                "bit_depth": 8,
            },
        ),
        "fusion.FusionRule": (
            FusionRule,
            (),
            {
                "sharpness": 4,
                "window_px": 5,
                "inherit": 1.0,
                "min_confidence": 0.6,
                "focus_levels": 3,
                "noise_floor": 0.25,
            },
        ),
        "fusion.gaussian_pyramid": (gaussian_pyramid, (_PLANE,), {"levels": 3}),
        "fusion.laplacian_pyramid": (laplacian_pyramid, (_PLANE,), {"levels": 3}),
        "fusion.auto_levels": (auto_levels, ((24, 20),), {}),
        "fusion.collapse_pyramid": (collapse_pyramid, (laplacian_pyramid(_PLANE, levels=3),), {}),
        "fusion.subframe_offset": (subframe_offset, (_ACT[0], _ACT[1] + 1, _ACT[2]), {}),
        "fusion.fill_depth": (fill_depth, (_ACT[0], _ACT[1]), {}),
    }
)

_OBJ = optics.OBJECTIVES[next(iter(optics.OBJECTIVES))]
_PLAN = zscan.ZScanPlan(10.0, 1.0, 10)
_CAL_Z = [-1.0, 1.0]
_CAL_SHIFTS = np.array(
    [
        [
            beamtilt.displacement_px(
                beamtilt.tilt_pair_displacement(tilt, defocus_um=z), pixel_size_nm=0.5
            )
            for z in _CAL_Z
        ]
        for tilt in (5.0, 5j)
    ]
)
_CAL = beamtilt.BeamTiltCalibration.from_shifts(
    tilt_mrad=5.0, defocus_um=_CAL_Z, defocus_shifts_px=_CAL_SHIFTS
)
_CURVE_Z = np.linspace(-10.0, 10.0, 9)
_CURVE_SHIFTS = beamtilt.displacement_px(
    beamtilt.tilt_pair_displacement(1.0, defocus_um=_CURVE_Z, cs_mm=2.0), pixel_size_nm=0.5
)
_CURVE = beamtilt.FocusCalibrationCurve.from_measurements(_CURVE_Z, _CURVE_SHIFTS)
_PAIR_SHIFTS = beamtilt.displacement_px(
    beamtilt.btid_displacement(np.array([5.0, -5.0]), defocus_um=1.0), pixel_size_nm=0.5
)
CASES.update(
    {
        "optics.Objective.depth_of_field": (
            _OBJ.depth_of_field,
            (),
            {"wavelength_um": 0.7, "detector_um": 1.5},
        ),
        "optics.Objective.axial_resolution": (_OBJ.axial_resolution, (), {"wavelength_um": 0.7}),
        "optics.Objective.lateral_resolution": (
            _OBJ.lateral_resolution,
            (),
            {"wavelength_um": 0.7},
        ),
        "optics.Objective.with_immersion": (_OBJ.with_immersion, ("oil",), {"n_immersion": 1.51}),
        "zscan.ZScanPlan.from_distance_count": (
            zscan.ZScanPlan.from_distance_count,
            (10.0, 10),
            {"start_um": 100.0},
        ),
        "zscan.ZScanPlan.from_distance_spacing": (
            zscan.ZScanPlan.from_distance_spacing,
            (10.0, 1.0),
            {"start_um": 100.0},
        ),
        "zscan.ZScanPlan.from_spacing_count": (
            zscan.ZScanPlan.from_spacing_count,
            (1.0, 10),
            {"start_um": 100.0},
        ),
        "zscan.ZScanPlan.positions_um": (_PLAN.positions_um, (100.0,), {}),
        "zscan.ZScanLimits.for_objective": (
            zscan.ZScanLimits.for_objective,
            (_OBJ,),
            {"wavelength_um": 0.7, "detector_um": 1.5},
        ),
        "beamtilt.BeamTiltCalibration.from_shifts": (
            beamtilt.BeamTiltCalibration.from_shifts,
            (),
            {"tilt_mrad": 5.0, "defocus_um": _CAL_Z, "defocus_shifts_px": _CAL_SHIFTS},
        ),
        "beamtilt.solve_defocus_stig": (
            beamtilt.solve_defocus_stig,
            (_PAIR_SHIFTS, [5.0, -5.0], _CAL),
            {"cs_mm": 0.0, "fit_limit_um": 0.1},
        ),
        "beamtilt.FocusCalibrationCurve.from_measurements": (
            beamtilt.FocusCalibrationCurve.from_measurements,
            (_CURVE_Z, _CURVE_SHIFTS),
            {"tilt_mrad": 1.0, "smooth_levels": 3, "max_segment_angle_deg": 30.0},
        ),
        "beamtilt.FocusCalibrationCurve.shift_at": (_CURVE.shift_at, (1.0,), {"tilt_mrad": 1.0}),
        "beamtilt.FocusCalibrationCurve.defocus_from_shift": (
            _CURVE.defocus_from_shift,
            (_CURVE_SHIFTS[4],),
            {"tilt_mrad": 1.0},
        ),
        "beamtilt.simulate_tilt_pair": (
            beamtilt.simulate_tilt_pair,
            (),
            {"tilt_mrad": 5.0, "shape": (32, 32), "defocus_um": 0.5, "seed": 0},
        ),
        "psf.axial_intensity confocal": (
            psf.axial_intensity,
            ([-1.0, 0.0, 1.0],),
            {**PSF, "nfp_um": 5.0, "wavelength_um": 0.5, "emission_wavelength_um": 0.6},
        ),
    }
)

_EXT_Z = np.linspace(12.0, 40.0, 5)
_EXT_SHIFTS = beamtilt.displacement_px(
    beamtilt.tilt_pair_displacement(0.5, defocus_um=_EXT_Z, cs_mm=2.0), pixel_size_nm=0.5
)
CASES.update(
    {
        "beamtilt.measure_triple_shot": (
            beamtilt.measure_triple_shot,
            (_IMAGE, np.roll(_IMAGE, 2, 0), np.roll(_IMAGE, 4, 0)),
            {"lowpass_cycles_per_px": 0.125, "taper": 0.15},
        ),
        "beamtilt.FocusCalibrationCurve.with_extended_range": (
            _CURVE.with_extended_range,
            (_EXT_Z, _EXT_SHIFTS),
            {"tilt_mrad": 0.5},
        ),
        "zscan.to_useq": (zscan.to_useq, (_PLAN,), {"start_um": 100.0}),
    }
)
try:
    import useq
except ImportError:  # pragma: no cover - useq is a test dependency
    pass
else:
    CASES["zscan.from_useq"] = (
        zscan.from_useq,
        (useq.ZRangeAround(range=10.0, step=1.0),),
        {"current_um": 100.0},
    )


def _finite(x: Any, depth: int = 0) -> bool:
    """True if every number in ``x`` (arrays, tuples, dataclass fields) is finite."""
    if depth > 4 or x is None or isinstance(x, (str, bool)):
        return True
    if isinstance(x, numbers.Number):
        return bool(np.isfinite(x))
    if isinstance(x, np.ndarray):
        return x.dtype.kind not in "fc" or bool(np.isfinite(x).all())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return all(_finite(getattr(x, f.name), depth + 1) for f in dataclasses.fields(x))
    if isinstance(x, (tuple, list)):
        return all(_finite(v, depth + 1) for v in x)
    return True


def _variants(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[str, Any, tuple[Any, ...], dict[str, Any]]]:
    """(argument name, value, args, kwargs) with one argument replaced by an extreme."""
    names = list(inspect.signature(fn).parameters)
    out = []
    slots: list[tuple[str, int | None, Any]] = [(names[i], i, a) for i, a in enumerate(args)]
    slots += [(k, None, v) for k, v in kwargs.items()]
    for name, pos, base in slots:
        if fn is _fuse and name == "frames":
            continue  # (a string is a path there: FileNotFoundError, tested with the files)
        values = list(EXTREMES)
        if isinstance(base, tuple):
            values += SIZES
        elif isinstance(base, int) and not isinstance(base, bool):
            values += INTS
        elif isinstance(base, str):
            values = ["not-a-choice", None, 1.0]
        for v in values:
            a, kw = list(args), dict(kwargs)
            if pos is None:
                kw[name] = v
            else:
                a[pos] = v
            out.append((name, v, tuple(a), kw))
    return out


def check_extremes(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list:
    """Return the (argument, value, outcome) of every call that breaks the contract."""
    assert _finite(fn(*args, **kwargs)), "the valid call itself is not finite"
    broken = []
    for name, value, a, kw in _variants(fn, args, kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a numpy overflow warning is a failure too
                result = fn(*a, **kw)
        except (ValueError, TypeError) as exc:
            if name not in str(exc):
                broken.append((name, value, f"{type(exc).__name__} not naming it: {exc}"))
            continue
        except Exception as exc:  # ZeroDivisionError, OverflowError, MemoryError, ...
            broken.append((name, value, f"{type(exc).__name__}: {exc}"))
            continue
        if not _finite(result):
            broken.append((name, value, "returned inf or NaN"))
    return broken


@pytest.mark.parametrize("case", sorted(CASES))
def test_extreme_arguments_give_finite_results_or_named_errors(case):
    fn, args, kwargs = CASES[case]
    broken = check_extremes(fn, args, kwargs)
    assert not broken, "\n".join(f"{case}({n}={v!r}): {what}" for n, v, what in broken)


def test_named_examples():
    """The cases of the report, with their limits in the messages."""
    with pytest.raises(ValueError, match=r"na must be within \[0.001, 5.0\].*5e-324"):
        optics.depth_of_field(5e-324, wavelength_um=0.55)
    with pytest.raises(ValueError, match=r"n_sample must be >= 1.0, got 5e-324"):
        psf.vectorial_psf(
            (3, 8, 8),
            spacing_um=0.1,
            nfp_um=5.0,
            na=1.4,
            n_immersion=1.518,
            n_sample=5e-324,
            wavelength_um=0.5,
        )
    with pytest.raises(ValueError, match=r"wavelength_um must be <= 100.0, got 1e\+308"):
        psf.actual_depth_um(10.0, **PSF, model="wave", wavelength_um=1e308)
    with pytest.raises(ValueError, match=r"na must be >= 0.001, got 5e-324"):
        psf.apparent_focal_position(10.0, **{**PSF, "na": 5e-324}, wavelength_um=0.5)
    with pytest.raises(ValueError, match=r"nominal_um=1000000000.0 um .* than the limit 100000"):
        psf.actual_depth_um(1e9, **PSF, model="wave", wavelength_um=0.5)
    with pytest.raises(ValueError, match=r"shape\[0\] must be <= 65536, got 1000000"):
        psf.vectorial_psf((10**6,) * 3, spacing_um=0.1, nfp_um=5.0, **PSF, wavelength_um=0.5)
    with pytest.raises(ValueError, match=r"shape \(4096, 4096, 4096\) holds 68719476736 voxels"):
        psf.vectorial_psf((4096,) * 3, spacing_um=0.1, nfp_um=5.0, **PSF, wavelength_um=0.5)


def test_collapse_to_64_bit_integers_does_not_wrap():
    for dtype in (np.int64, np.uint64):
        top = np.full((4, 4), float(np.iinfo(dtype).max))  # rounds up to 2**63 / 2**64
        out = collapse_pyramid([top], dtype=dtype)
        assert out.dtype == dtype and np.all(out > 0)  # it wrapped to the minimum before
