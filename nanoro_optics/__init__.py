"""nanoro_optics: microscope optics, Z-scan planning, safe acquisition and focus stacking.

Importing the package is cheap: sub-modules (and numba) are imported only when one of their
names is first used. Lengths are in micrometres throughout, and every name that carries a
unit says so (``wavelength_um``, ``tilt_mrad``, ``exposure_ms``).

Sub-modules
-----------
optics      closed-form formulas: depth of field, resolution, Gaussian beam / light sheet
psf         index-mismatch vectorial PSF, apparent focal position, axial scaling factors
beamtilt    electron-microscope beam-tilt autofocus
zscan       Z-scan plans (distance = spacing x count), limits, positions, useq interchange
fusion      Laplacian-pyramid focus fusion, streaming, alignment, depth map
io          reading and writing stacks and images
hardware    Z stage and camera protocols, mock stage, simulated camera
acquire     running a Z-scan plan safely on a stage and camera
mmcore      pymmcore-plus adapters, live fusion inside an MDA, MDA Z-plan checks (needs the
            ``mmcore`` extra)
testing     hypothesis strategies and contract suites (needs hypothesis)
distributed fusing many stacks on dask.distributed (needs the ``dask`` extra)
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_SUBMODULES = (
    "acquire",
    "autofocus",
    "beamtilt",
    "demo",
    "distributed",
    "fusion",
    "hardware",
    "io",
    "mmcore",
    "optics",
    "psf",
    "testing",
    "zscan",
)

# public name -> sub-module that defines it
_EXPORTS: dict[str, str] = {
    # optics
    "Objective": "optics",
    "OBJECTIVES": "optics",
    "depth_of_field": "optics",
    "axial_resolution": "optics",
    "lateral_resolution": "optics",
    "effective_na": "optics",
    "rayleigh_range": "optics",
    "beam_waist": "optics",
    "confocal_parameter": "optics",
    # zscan
    "ZScanPlan": "zscan",
    "ZScanLimits": "zscan",
    "plan_for_sample": "zscan",
    # fusion
    "fuse_stack": "fusion",
    "StackFuser": "fusion",
    "FusionResult": "fusion",
    "align_stack": "fusion",
    # io
    "read_stack": "io",
    "write_image": "io",
    # acquisition
    "run_zscan": "acquire",
    "ZStack": "acquire",
    "MockZStage": "hardware",
    "SimulatedCamera": "hardware",
    # psf
    "apparent_focal_position": "psf",
    "axial_scaling_factor": "psf",
    "vectorial_psf": "psf",
    "focal_scan_psf": "psf",
    "actual_depth_um": "psf",
    # beamtilt
    "measure_shift": "beamtilt",
    "BeamTiltCalibration": "beamtilt",
    "solve_defocus_stig": "beamtilt",
    "FocusCalibrationCurve": "beamtilt",
    "simulate_tilt_pair": "beamtilt",
    # more fusion / io / hardware / demo
    "synthetic_stack": "fusion",
    "read_image": "io",
    "iter_stack": "io",
    "write_depth_map": "io",
    "list_stack_files": "io",
    "Specimen": "hardware",
    "run_demo": "demo",
}

__all__ = ["__version__", *sorted(_EXPORTS), *_SUBMODULES]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, submodules=_SUBMODULES)
