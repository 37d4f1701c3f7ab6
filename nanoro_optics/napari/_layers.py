"""The layer side of the widget: what a z-stack layer gives the fuser, and the result as layers.

:func:`stack_from_layer` checks an image layer and describes it as a :class:`LayerStack`;
:func:`z_positions` gives the depth map's z positions; :func:`result_layers` turns a
:class:`FusionRun` into napari layer-data tuples:

- ``<name> fused``: the fused image, in the source's dtype, on the source's y/x grid (scale,
  translate, units) with its colormap and contrast limits; on top;
- ``<name> depth (um)``: the depth map in um (the z position of best focus; from the layer's
  z scale and translate, or from a z step typed in), or in frames (0 = first frame), with a
  colormap (and a colour bar, :func:`show_legend`) and the z positions and fusion settings
  in its metadata; below the fused image;
- ``<name> confidence`` (optional, hidden): how clearly one frame stands out as the
  sharpest, 0 to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from nanoro_optics.fusion import FusionResult, FusionRule

__all__ = [
    "DEPTH_COLORMAP",
    "DEPTH_FRAMES",
    "DEPTH_FROM_SCALE",
    "DEPTH_FROM_STEP",
    "RULE_DEFAULTS",
    "FusionRun",
    "LayerStack",
    "result_kind",
    "result_layers",
    "settings_label",
    "show_legend",
    "stack_from_layer",
    "z_positions",
]

#: depth unit choices of the widget
DEPTH_FROM_SCALE = "um: z from the layer's scale"
DEPTH_FROM_STEP = "um: z step below"
DEPTH_FRAMES = "frame index"
#: colormap of the depth layer (perceptually ordered, so that heights read as a ramp)
DEPTH_COLORMAP = "viridis"
#: the fuser's defaults of the selection rule's options (the controls start at them)
RULE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(FusionRule)}


@dataclass(frozen=True)
class LayerStack:
    """The z-stack of an image layer, as the fuser takes it.

    Attributes
    ----------
    data : array_like
        The layer's data, ``(Z, Y, X)`` or ``(Z, Y, X, C)`` (a numpy, dask or zarr array: the
        frames are read one at a time).
    n_frames : int
        Frames along z (at least 2).
    rgb : bool
        Whether the last axis holds colour channels.
    scale_z, translate_z : float
        The layer's z scale and translate (world units per frame, world z of frame 0).
    scale_yx, translate_yx : tuple of float
        The layer's y/x scale and translate: the grid of the result layers.
    """

    data: Any
    n_frames: int
    rgb: bool
    scale_z: float
    translate_z: float
    scale_yx: tuple[float, float]
    translate_yx: tuple[float, float]


def stack_from_layer(layer: Any) -> LayerStack:
    """Check that ``layer`` is a z-stack the fuser can take and describe it.

    Parameters
    ----------
    layer : napari.layers.Layer or None
        The layer chosen in the widget.

    Returns
    -------
    LayerStack

    Raises
    ------
    ValueError
        No layer, not an image layer, multiscale data (levels of different sizes), a 2-D image
        (no z axis), a single frame, axes beyond ``(Z, Y, X)``, or data that is not integer
        or float. The message says what was found and what is needed.
    """
    from napari.layers import Image

    if layer is None:
        raise ValueError("no image layer: open a z-stack (Z, Y, X) first")
    if not isinstance(layer, Image):
        raise ValueError(
            f"layer {layer.name!r} is a {type(layer).__name__} layer; choose an image layer "
            f"with a z axis"
        )
    if layer.multiscale:
        raise ValueError(
            f"layer {layer.name!r} is multiscale ({len(layer.data)} levels of different "
            f"sizes); the fusion needs one array (Z, Y, X): open the full-resolution level alone"
        )
    data = layer.data
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "uif":
        raise ValueError(
            f"layer {layer.name!r} holds {dtype} data; the fusion takes integer or float images"
        )
    shape = tuple(int(s) for s in data.shape)
    rgb = bool(layer.rgb)
    space = shape[:-1] if rgb else shape  # the axes without the colour channels
    kind = "RGB " if rgb else ""
    if len(space) < 3:
        raise ValueError(
            f"layer {layer.name!r} is a 2-D {kind}image of shape {shape}: focus fusion needs a "
            f"z-stack (Z, Y, X{', C' if rgb else ''}) with at least 2 frames"
        )
    if len(space) > 3:
        raise ValueError(
            f"layer {layer.name!r} has shape {shape}, {len(space)} axes besides the colour: the "
            f"fusion takes (Z, Y, X) or (Z, Y, X, C); split the other axes into layers first "
            f"(layer menu: Split Stack)"
        )
    n, h, w = space
    if n < 2:
        raise ValueError(
            f"layer {layer.name!r} has a single frame along z (shape {shape}): there is "
            f"nothing to fuse; a focus stack needs at least 2 frames"
        )
    if h < 1 or w < 1:
        raise ValueError(f"layer {layer.name!r} has empty frames (shape {shape})")
    scale = [float(s) for s in layer.scale]
    translate = [float(t) for t in layer.translate]
    return LayerStack(
        data=data,
        n_frames=n,
        rgb=rgb,
        scale_z=scale[-3],
        translate_z=translate[-3],
        scale_yx=(scale[-2], scale[-1]),
        translate_yx=(translate[-2], translate[-1]),
    )


def z_positions(stack: LayerStack, depth_unit: str, z_step_um: float) -> np.ndarray | None:
    """Return the z positions (um) of the frames for the depth map, or None for frame units.

    Parameters
    ----------
    stack : LayerStack
        From :func:`stack_from_layer`.
    depth_unit : str
        :data:`DEPTH_FROM_SCALE` (``translate_z + k * scale_z``: the depth is then the world z
        of the frame in focus, where that plane sits in the viewer), :data:`DEPTH_FROM_STEP`
        (``k * z_step_um``, from the first frame, as ``nanoro-optics fuse --z-step-um``
        does) or :data:`DEPTH_FRAMES` (None: frame index).
    z_step_um : float
        The step for :data:`DEPTH_FROM_STEP`, finite and not 0 (negative for a scan from top
        to bottom).

    Returns
    -------
    numpy.ndarray or None
        float64 ``(Z,)``, strictly monotonic.

    Raises
    ------
    ValueError
        An unknown unit, or a step (given or the layer's scale) that is 0 or not finite.
    """
    k = np.arange(stack.n_frames, dtype=np.float64)
    if depth_unit == DEPTH_FRAMES:
        return None
    if depth_unit == DEPTH_FROM_SCALE:
        step, origin, what = stack.scale_z, stack.translate_z, "the layer's z scale"
    elif depth_unit == DEPTH_FROM_STEP:
        step, origin, what = float(z_step_um), 0.0, "the z step"
    else:
        raise ValueError(
            f"depth unit must be one of {DEPTH_FROM_SCALE!r}, {DEPTH_FROM_STEP!r}, "
            f"{DEPTH_FRAMES!r}; got {depth_unit!r}"
        )
    if not math.isfinite(step) or step == 0:
        raise ValueError(
            f"{what} is {step}: the frames need distinct z positions (a finite step, not 0)"
        )
    return origin + k * step


@dataclass(frozen=True)
class FusionRun:
    """What the worker hands back: the result and where and how long it ran.

    Attributes
    ----------
    result : FusionResult
        The fuser's result.
    thread_id : int
        :func:`threading.get_ident` of the thread that fused (not the GUI thread's).
    seconds : float
        Wall time of the fusion.
    """

    result: FusionResult
    thread_id: int
    seconds: float


def settings_label(options: dict[str, Any]) -> str:
    """Say in a few words how fuser ``options`` differ from the defaults (for layer names).

    Examples
    --------
    >>> settings_label({"sharpness": None, "window_px": 5, "align": True, "levels": 4})
    'hard, align, levels 4'
    >>> settings_label({"sharpness": 4, "window_px": 5, "align": False})
    'defaults'
    """
    words = []
    sharpness = options.get("sharpness", RULE_DEFAULTS["sharpness"])
    if sharpness is None:
        words.append("hard")
    elif sharpness != RULE_DEFAULTS["sharpness"]:
        words.append(f"sharpness {sharpness}")
    if options.get("window_px", RULE_DEFAULTS["window_px"]) != RULE_DEFAULTS["window_px"]:
        words.append(f"window {options['window_px']}")
    if options.get("align"):
        words.append("align")
    if "levels" in options:
        words.append(f"levels {options['levels']}")
    if "bit_depth" in options:
        words.append(f"{options['bit_depth']}-bit")
    if "noise_dn" in options:
        words.append(f"noise {options['noise_dn']:g} DN")
    if "min_confidence" in options:
        words.append(f"min confidence {options['min_confidence']:g}")
    if options.get("fill_depth") is False:
        words.append("holes kept")
    return ", ".join(words) or "defaults"


def result_layers(
    run: FusionRun,
    stack: LayerStack,
    *,
    name: str,
    source: Any,
    z_um: np.ndarray | None,
    settings: dict[str, Any],
    confidence: bool,
    label: str | None = None,
) -> list[tuple[Any, dict[str, Any], str]]:
    """Return the layers of a fusion result as layer-data tuples ``(data, kwargs, "image")``.

    In the order they go into the layer list, bottom to top: the confidence (hidden, if
    asked for), the depth map, the fused image (on top). The fused image keeps the source's
    dtype, colormap (grey) and contrast limits; all layers take the source's y/x scale,
    translate and units. Each layer's metadata ``["nanoro_optics"]`` holds its ``kind``
    (``"fused"``, ``"depth"``, ``"confidence"``), the ``source`` layer's name, the z
    positions and the fusion settings; the depth's also its ``unit`` (``"um"`` or
    ``"frame"``). ``label`` (the settings that differ from the defaults) goes into the names
    when given.
    """
    res = run.result
    yx: dict[str, Any] = {"scale": stack.scale_yx, "translate": stack.translate_yx}
    units = getattr(source, "units", None)
    if units is not None:
        yx["units"] = tuple(units)[-2:]
    unit = res.depth_unit
    record = {
        "source": name,
        "n_frames": res.n_frames,
        "z_um": None if z_um is None else [float(v) for v in z_um],
        "settings": dict(settings),
        "seconds": run.seconds,
    }
    tail = f" ({label})" if label else ""
    fused_kw: dict[str, Any] = {
        "name": f"{name} fused{tail}",
        "rgb": stack.rgb,
        "metadata": {"nanoro_optics": {**record, "kind": "fused"}},
        **yx,
    }
    if not stack.rgb:
        fused_kw["colormap"] = source.colormap  # the object: custom colormaps too
        fused_kw["contrast_limits"] = tuple(source.contrast_limits)
    finite = res.depth[np.isfinite(res.depth)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    depth_label = "um" if unit == "um" else "frame"
    depth_kw: dict[str, Any] = {
        "name": f"{name} depth ({depth_label}{'; ' + label if label else ''})",
        "colormap": DEPTH_COLORMAP,
        "contrast_limits": (lo, hi),
        "metadata": {"nanoro_optics": {**record, "kind": "depth", "unit": unit}},
        **yx,
    }
    layers: list[tuple[Any, dict[str, Any], str]] = []
    if confidence:
        conf_kw: dict[str, Any] = {
            "name": f"{name} confidence{tail}",
            "colormap": "gray",
            "contrast_limits": (0.0, 1.0),
            "visible": False,
            "metadata": {"nanoro_optics": {**record, "kind": "confidence"}},
            **yx,
        }
        layers.append((res.confidence, conf_kw, "image"))
    layers.append((res.depth, depth_kw, "image"))
    layers.append((res.image, fused_kw, "image"))
    return layers


def show_legend(layer: Any) -> bool:
    """Show ``layer``'s colour bar (napari 0.5 and later); return whether there is one."""
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is None:
        return False
    colorbar.visible = True
    return True


def result_kind(layer: Any) -> tuple[str, str] | None:
    """Return ``(source, kind)`` of a result layer the widget made, else None."""
    meta = layer.metadata.get("nanoro_optics") if isinstance(layer.metadata, dict) else None
    if not isinstance(meta, dict) or "source" not in meta or "kind" not in meta:
        return None
    return str(meta["source"]), str(meta["kind"])
