"""The end-to-end demo: plan, acquire, fuse and score a focus stack of a simulated specimen.

:func:`run_demo` is the library's main job on its embedded default, and what
``nanoro-optics demo`` runs:

1. take an objective (default the 40x/0.65 "Nikon MRP70401" of the objective table,
   :data:`~nanoro_optics.optics.OBJECTIVES`);
2. make a synthetic specimen (a textured surface ``relief_um`` tall, its finest detail the
   objective's Rayleigh resolution on 6.5 um camera pixels) and plan the scan from
   its top and bottom with :func:`nanoro_optics.zscan.plan_for_sample` (spacing at most the
   objective's depth of field, one step of margin at each end);
3. acquire with a :class:`~nanoro_optics.hardware.MockZStage` (backlash and positioning
   noise, removed by the executor's overshoot) and a
   :class:`~nanoro_optics.hardware.SimulatedCamera`, top to bottom, with
   :func:`nanoro_optics.acquire.run_zscan`, fusing each frame as it arrives with
   :class:`nanoro_optics.fusion.StackFuser`;
4. write the fused image, the depth map and a JSON summary, and score them against the
   simulation's ground truth.

Scores
------
``psnr_db``
    ``10 log10(1 / MSE)`` of the fused image in reflectance units (DN minus the black level,
    divided by the DN of a reflectance-1 pixel) against the noise-free all-in-focus
    expectation, i.e. the data range is the camera's white level.
``depth_rmse_um``
    Root-mean-square difference (um) between the fused depth map and the height at which
    each pixel is in focus, over the pixels where the depth map is not NaN;
    ``depth_nan_fraction`` is the fraction that is NaN (no confident estimate).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import check_bool, check_int, check_positive

if TYPE_CHECKING:
    from .fusion import FusionOptions

__all__ = ["AutoRangeSummary", "DemoSummary", "run_auto_range_demo", "run_demo"]

#: Default objective of the demo (the 40x/0.65 air lens of the objective table).
DEMO_OBJECTIVE = "Nikon MRP70401"


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`run_demo` did and how well it worked (all lengths in um).

    Attributes
    ----------
    objective : str
        Objective name.
    depth_of_field_um : float
        Its total depth of field (:meth:`~nanoro_optics.optics.Objective.depth_of_field`).
    specimen_top_um, specimen_bottom_um : float
        Extent of the simulated specimen.
    plan : dict
        The plan (:meth:`~nanoro_optics.zscan.ZScanPlan.to_dict`).
    commanded_um, measured_um : tuple of float
        Commanded and measured position of every frame, top first.
    stage_moves_um : tuple of float
        Every target sent to the stage, the backlash overshoot included.
    shape : tuple of int
        Frame shape.
    psnr_db : float
        Fused image vs the all-in-focus truth (see the module notes).
    best_frame_psnr_db : float
        The best single frame of the stack vs the same truth (what fusion improves on).
    depth_rmse_um : float
        Depth-map error where it is defined.
    depth_nan_fraction : float
        Fraction of the depth map that is NaN.
    seconds : float
        Wall-clock time of the whole demo (numba compilation included on a first run).
    files : dict
        ``{"fused": ..., "depth": ..., "summary": ...}`` paths written.
    seed : int
        The seed used.
    options : dict
        The fusion's settings (:meth:`~nanoro_optics.fusion.FusionOptions.to_json`).
    """

    objective: str
    depth_of_field_um: float
    specimen_top_um: float
    specimen_bottom_um: float
    plan: dict[str, Any]
    commanded_um: tuple[float, ...]
    measured_um: tuple[float, ...]
    stage_moves_um: tuple[float, ...]
    shape: tuple[int, ...]
    psnr_db: float
    best_frame_psnr_db: float
    depth_rmse_um: float
    depth_nan_fraction: float
    seconds: float
    files: dict[str, str]
    seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


def psnr_db(image: np.ndarray, truth: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    Parameters
    ----------
    image, truth : numpy.ndarray
        Arrays of the same shape.
    data_range : float, keyword-only
        The peak value (> 0).

    Returns
    -------
    float
        PSNR in dB (``inf`` for identical arrays).

    Examples
    --------
    >>> round(psnr_db(np.array([0.5, 0.5]), np.array([0.5, 0.51])), 2)
    43.01
    """
    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(truth, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image and truth must have the same shape, got {a.shape} and {b.shape}")
    peak = check_positive(data_range, "data_range")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    objective: str = DEMO_OBJECTIVE,
    shape: tuple[int, int] = (512, 512),
    relief_um: float = 15.0,
    colour: bool = False,
    spacing_um: float | None = None,
    stage_backlash_um: float = 0.3,
    position_noise_um: float = 0.02,
    options: FusionOptions | None = None,
    overwrite: bool = False,
) -> DemoSummary:
    """Plan, acquire (simulated), fuse while acquiring, write and score a focus stack.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder for ``fused.tif``, ``depth_um.tif`` and ``summary.json`` (created if
        missing), written together (all or none).
    seed : int, keyword-only
        Seed of the specimen, the stage noise and the camera noise.
    objective : str, keyword-only
        A key of :data:`nanoro_optics.optics.OBJECTIVES`.
    shape : (int, int), keyword-only
        Frame rows and columns.
    relief_um : float, keyword-only
        Height of the specimen (> 0).
    colour : bool, keyword-only
        Simulate an RGB camera.
    spacing_um : float, keyword-only
        Largest spacing; default the objective's depth of field (the default of
        :class:`~nanoro_optics.zscan.ZScanLimits`).
    stage_backlash_um, position_noise_um : float, keyword-only
        Mechanical play and positioning noise of the mock stage; the executor overshoots
        by ``stage_backlash_um + 0.2`` um to approach every position from above.
    options : FusionOptions, keyword-only, optional
        The fusion's settings (default ``FusionOptions()``); the z positions come from the
        acquisition, so ``z_um`` and ``z_step_um`` must be None.
    overwrite : bool, keyword-only
        Replace the files of an earlier demo in ``out_dir``; by default a folder that holds
        any of them is refused before anything runs.

    Returns
    -------
    DemoSummary

    Raises
    ------
    ValueError, TypeError
        For bad arguments (nothing is written).
    FileExistsError
        ``out_dir`` holds an earlier demo's files and ``overwrite`` is False.
    """
    from . import optics
    from .acquire import run_zscan
    from .fusion import FusionOptions, StackFuser
    from .hardware import MockZStage
    from .hardware.sim_camera import DEFAULT_CAMERA_PIXEL_UM, SimulatedCamera, Specimen
    from .pipeline import FusionOutputs, write_outputs
    from .zscan import ZScanLimits, plan_for_sample

    t0 = time.perf_counter()
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__} {out_dir!r}")
    seed = check_int(seed, "seed", 0)
    if objective not in optics.OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(optics.OBJECTIVES)}, got {objective!r}")
    obj = optics.OBJECTIVES[objective]
    relief = check_positive(relief_um, "relief_um")
    backlash = check_positive(stage_backlash_um, "stage_backlash_um", allow_zero=True)
    noise = check_positive(position_noise_um, "position_noise_um", allow_zero=True)
    if not isinstance(colour, bool):
        raise TypeError(f"colour must be a bool, got {colour!r}")
    overwrite = check_bool(overwrite, "overwrite")
    opts = FusionOptions() if options is None else options
    if not isinstance(opts, FusionOptions):
        raise TypeError(f"options must be a FusionOptions, got {type(opts).__name__}")
    if opts.z_um is not None or opts.z_step_um is not None:
        raise ValueError(
            "the demo takes z positions from its acquisition: options.z_um and "
            "options.z_step_um must be None"
        )
    out = Path(out_dir)
    outputs = FusionOutputs(out / "fused.tif", out / "depth_um.tif")
    summary_path = out / "summary.json"
    if not overwrite:
        earlier = [p for p in (outputs.image, outputs.depth, summary_path) if p and p.exists()]
        if earlier:
            raise FileExistsError(
                f"{out} holds an earlier demo's output ({', '.join(p.name for p in earlier)}); "
                "give --overwrite (overwrite=True) to replace it, or another folder"
            )

    # the finest texture matches the objective's resolution on the camera's pixels, so every
    # objective sees detail it can resolve (and not detail only a better one could)
    pixel_um = DEFAULT_CAMERA_PIXEL_UM / obj.magnification
    feature_px = max(1.0, obj.lateral_resolution() / pixel_um)
    specimen = Specimen.synthetic(
        shape, relief_um=relief, colour=colour, feature_px=feature_px, seed=seed
    )
    plan = plan_for_sample(
        specimen.top_um, specimen.bottom_um, spacing_um=spacing_um, objective=obj
    )
    assert plan.start_um is not None
    out.mkdir(parents=True, exist_ok=True)

    stage = MockZStage(
        position_um=plan.start_um,
        backlash_um=backlash,
        position_noise_um=noise,
        seed=seed,
    )
    camera = SimulatedCamera(stage, specimen, objective=obj, pixel_um=pixel_um, seed=seed)
    overshoot = backlash + 0.2 if backlash > 0 else 0.0
    stack = run_zscan(
        plan,
        stage,
        camera,
        backlash_um=overshoot,
        fuser=StackFuser(opts),
        limits=ZScanLimits.for_objective(obj),
    )
    fused = stack.fused
    truth = camera.ground_truth()

    score = psnr_db(camera.frame_to_reflectance(fused.image), truth.reflectance)
    best_frame = max(
        psnr_db(camera.frame_to_reflectance(f), truth.reflectance) for f in stack.frames
    )
    depth = np.asarray(fused.depth, dtype=np.float64)
    ok = np.isfinite(depth)
    rmse = (
        float(np.sqrt(np.mean((depth[ok] - truth.focus_height_um[ok]) ** 2)))
        if ok.any()
        else math.nan
    )

    files = {"fused": str(outputs.image), "depth": str(outputs.depth), "summary": str(summary_path)}
    summary = DemoSummary(
        objective=obj.name,
        depth_of_field_um=obj.depth_of_field(),
        specimen_top_um=specimen.top_um,
        specimen_bottom_um=specimen.bottom_um,
        plan=plan.to_dict(),
        commanded_um=tuple(stack.commanded_um.tolist()),
        measured_um=tuple(stack.measured_um.tolist()),
        stage_moves_um=tuple(stage.commanded_um),
        shape=tuple(fused.image.shape),
        psnr_db=score,
        best_frame_psnr_db=best_frame,
        depth_rmse_um=rmse,
        depth_nan_fraction=float(1.0 - ok.mean()),
        seconds=time.perf_counter() - t0,
        files=files,
        seed=seed,
        options=opts.to_json(),
    )
    write_outputs(  # the three files together, or none
        outputs,
        fused.image,
        depth=depth.astype(np.float32),
        depth_unit=fused.depth_unit,
        options=opts,
        overwrite=overwrite,
        records={summary_path: summary.to_dict()},
    )
    return summary


@dataclass(frozen=True)
class AutoRangeSummary:
    """What :func:`run_auto_range_demo` found, beside the simulation's truth (um).

    Attributes
    ----------
    objective : str
        Objective name.
    depth_of_field_um : float
        Its total depth of field.
    search_um : tuple of float
        The search range given to the autofocus.
    true_top_um, true_bottom_um : float
        Extent of the simulated specimen.
    found_top_um, found_bottom_um : float
        What :func:`nanoro_optics.autofocus.find_sample_range` found.
    search_frames : int
        Frames the range search took (an exhaustive sweep at DoF/2 takes
        ``sweep_frames``).
    sweep_frames : int
        Frames of a sweep of the search range at half the depth of field.
    plan : dict
        The plan that covers the found range (:meth:`~nanoro_optics.zscan.ZScanPlan.to_dict`).
    scan_frames : int
        Frames the scan took.
    psnr_db : float
        Fused image vs the all-in-focus truth (as :func:`run_demo`).
    seconds : float
        Wall-clock time.
    """

    objective: str
    depth_of_field_um: float
    search_um: tuple[float, float]
    true_top_um: float
    true_bottom_um: float
    found_top_um: float
    found_bottom_um: float
    search_frames: int
    sweep_frames: int
    plan: dict[str, Any]
    scan_frames: int
    psnr_db: float
    seconds: float


def run_auto_range_demo(
    *,
    seed: int = 0,
    objective: str = DEMO_OBJECTIVE,
    shape: tuple[int, int] = (256, 256),
    relief_um: float = 15.0,
) -> AutoRangeSummary:
    """Find the specimen's range by image, plan the scan that covers it, and run it.

    A synthetic specimen (as :func:`run_demo`) lies 20 um above the bottom of a search
    range that reaches 20 um above its top; nothing about its extent is given to the
    library, which finds it (:func:`~nanoro_optics.autofocus.find_sample_range`), plans the
    scan (:func:`~nanoro_optics.zscan.plan_for_sample`) and runs it, fusing as it goes.

    Parameters
    ----------
    seed, objective, shape, relief_um
        As :func:`run_demo`.

    Returns
    -------
    AutoRangeSummary
    """
    from . import optics
    from .autofocus import auto_zscan
    from .fusion import StackFuser
    from .hardware import MockZStage
    from .hardware.sim_camera import DEFAULT_CAMERA_PIXEL_UM, SimulatedCamera, Specimen

    t0 = time.perf_counter()
    seed = check_int(seed, "seed", 0)
    if objective not in optics.OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(optics.OBJECTIVES)}, got {objective!r}")
    obj = optics.OBJECTIVES[objective]
    relief = check_positive(relief_um, "relief_um")
    pixel_um = DEFAULT_CAMERA_PIXEL_UM / obj.magnification
    feature_px = max(1.0, obj.lateral_resolution() / pixel_um)
    specimen = Specimen.synthetic(
        shape, relief_um=relief, base_um=20.0, feature_px=feature_px, seed=seed
    )
    search = (0.0, specimen.top_um + 20.0)
    stage = MockZStage(limits_um=(-100.0, search[1] + 100.0), position_um=search[1] + 50.0)
    camera = SimulatedCamera(stage, specimen, objective=obj, pixel_um=pixel_um, seed=seed)
    found: list[Any] = []
    stack = auto_zscan(
        stage, camera, search_um=search, objective=obj, fuser=StackFuser(), on_range=found.append
    )
    rng = found[0]
    truth = camera.ground_truth()
    return AutoRangeSummary(
        objective=obj.name,
        depth_of_field_um=obj.depth_of_field(),
        search_um=search,
        true_top_um=specimen.top_um,
        true_bottom_um=specimen.bottom_um,
        found_top_um=rng.top_um,
        found_bottom_um=rng.bottom_um,
        search_frames=rng.frames,
        sweep_frames=math.floor((search[1] - search[0]) / (obj.depth_of_field() / 2)) + 1,
        plan=stack.plan.to_dict(),
        scan_frames=len(stack),
        psnr_db=psnr_db(camera.frame_to_reflectance(stack.fused.image), truth.reflectance),
        seconds=time.perf_counter() - t0,
    )
