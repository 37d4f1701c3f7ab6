"""The napari widget *Extended depth of field*: fuse a z-stack layer into an image and a depth map.

The widget takes an image layer with a z axis (``(Z, Y, X)`` grey or ``(Z, Y, X, 3|4)`` RGB,
any integer or float dtype) and feeds its frames one by one to the library's
:class:`~nanoro_optics.fusion.StackFuser` in a worker thread (napari's
:func:`~napari.qt.threading.thread_worker`): the viewer stays responsive, a progress bar
follows the frames and *Cancel* stops the run at the next frame. The result layers are added
only when the whole stack fused, so a cancelled or failed run leaves no layer behind (closing
the widget, or the viewer, cancels the run too):

- ``<name> fused``: the fused image, in the source's dtype, on the source's y/x grid (scale,
  translate) with its colormap and contrast limits;
- ``<name> depth``: the depth map in um (the z position of best focus; from the layer's z
  scale and translate, or from a z step typed in), or in frames (0 = first frame), with a
  colormap and the z positions and fusion settings in its metadata;
- ``<name> confidence`` (optional): how clearly one frame stands out as the sharpest, 0 to 1.

The layers equal :func:`~nanoro_optics.fusion.fuse_stack` of the layer's data with the same
options (:func:`fusion_options` builds them). A layer the fuser cannot take (2-D, one frame,
multiscale, extra axes, non-numeric) is refused with a message in the widget
(:func:`stack_from_layer`), and errors of the fusion itself (a NaN pixel, a frame above the
bit depth) are shown there too, not as a traceback.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from nanoro_optics.fusion import FusionResult, StackFuser

__all__ = [
    "DEPTH_FRAMES",
    "DEPTH_FROM_SCALE",
    "DEPTH_FROM_STEP",
    "FusionRun",
    "FusionWidget",
    "LayerStack",
    "fuse_frames",
    "fusion_options",
    "result_layers",
    "stack_from_layer",
    "z_positions",
]

#: depth unit choices of the widget
DEPTH_FROM_SCALE = "um: z from the layer's scale"
DEPTH_FROM_STEP = "um: z step below"
DEPTH_FRAMES = "frame index"
#: colormap of the depth layer (perceptually ordered, so that heights read as a ramp)
DEPTH_COLORMAP = "viridis"


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


def fusion_options(
    *,
    levels: int,
    sharpness: int,
    hard: bool,
    window_px: int,
    align: bool,
    bit_depth: int = 0,
    noise_dn: float = 0.0,
    min_confidence: float = 0.6,
    fill_depth: bool = True,
) -> dict[str, Any]:
    """Return the options of :class:`StackFuser` / :func:`fuse_stack` for the widget's values.

    Parameters
    ----------
    levels : int
        Pyramid levels, 0 for the fuser's default (from the frame size).
    sharpness : int
        Exponent of the soft selection weights (ignored with ``hard``).
    hard : bool
        The hard maximum-activity rule (``sharpness=None``).
    window_px : int
        Side of the activity window (odd).
    align : bool
        Align every frame onto the first one.
    bit_depth : int, optional
        Bits the camera records (e.g. 12 in uint16 frames); 0 (default) leaves it out.
    noise_dn : float, optional
        Noise standard deviation in DN; 0 (default): estimated from the first two frames.
    min_confidence : float, optional
        Depth confidence below which the depth is filled (or NaN), 0 to 1 (default 0.6).
    fill_depth : bool, optional
        Fill the unsure depth from the confident pixels around (default), or leave NaN.

    Returns
    -------
    dict
        ``sharpness``, ``window_px``, ``align``; ``levels``, ``bit_depth`` and ``noise_dn``
        unless 0; ``min_confidence`` and ``fill_depth`` unless at their defaults.

    Examples
    --------
    >>> fusion_options(levels=0, sharpness=4, hard=True, window_px=5, align=False)
    {'sharpness': None, 'window_px': 5, 'align': False}
    """
    out: dict[str, Any] = {}
    if levels != 0:
        out["levels"] = levels
    out["sharpness"] = None if hard else sharpness
    out["window_px"] = window_px
    out["align"] = align
    if bit_depth != 0:
        out["bit_depth"] = bit_depth
    if noise_dn != 0.0:
        out["noise_dn"] = noise_dn
    if min_confidence != 0.6:
        out["min_confidence"] = min_confidence
    if not fill_depth:
        out["fill_depth"] = False
    return out


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


def fuse_frames(data: Any, fuser: StackFuser, n_frames: int) -> Generator[int, None, FusionRun]:
    """Add the frames of ``data`` to ``fuser`` one at a time; yield the count after each.

    The generator a napari ``thread_worker`` runs: between two frames it yields, which is
    where a cancel (``worker.quit()``) takes effect. It returns the result once every frame
    is in.

    Parameters
    ----------
    data : array_like
        ``(Z, Y, X)`` or ``(Z, Y, X, C)``; ``data[k]`` is read as frame ``k``.
    fuser : StackFuser
        A fresh fuser (made, and so checked, in the GUI thread).
    n_frames : int
        Frames to add.

    Yields
    ------
    int
        Frames fused so far.

    Returns
    -------
    FusionRun
    """
    t0 = time.perf_counter()
    for k in range(n_frames):
        fuser.add(np.asarray(data[k]))
        yield k + 1
    result = fuser.result(release=True)
    return FusionRun(result, threading.get_ident(), time.perf_counter() - t0)


def result_layers(
    run: FusionRun,
    stack: LayerStack,
    *,
    name: str,
    source: Any,
    z_um: np.ndarray | None,
    settings: dict[str, Any],
    confidence: bool,
) -> list[tuple[Any, dict[str, Any], str]]:
    """Return the layers of a fusion result as layer-data tuples ``(data, kwargs, "image")``.

    The fused image keeps the source's dtype, colormap (grey) and contrast limits; all layers
    take the source's y/x scale and translate. The depth layer's metadata holds its unit
    (``"um"`` or ``"frame"``), the z positions and the fusion settings.
    """
    res = run.result
    yx = {"scale": stack.scale_yx, "translate": stack.translate_yx}
    unit = res.depth_unit
    record = {
        "source": name,
        "n_frames": res.n_frames,
        "z_um": None if z_um is None else [float(v) for v in z_um],
        "settings": dict(settings),
        "seconds": run.seconds,
    }
    fused_kw: dict[str, Any] = {
        "name": f"{name} fused",
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
    label = "um" if unit == "um" else "frame"
    depth_kw: dict[str, Any] = {
        "name": f"{name} depth ({label})",
        "colormap": DEPTH_COLORMAP,
        "contrast_limits": (lo, hi),
        "metadata": {"nanoro_optics": {**record, "kind": "depth", "unit": unit}},
        **yx,
    }
    layers: list[tuple[Any, dict[str, Any], str]] = [
        (res.image, fused_kw, "image"),
        (res.depth, depth_kw, "image"),
    ]
    if confidence:
        conf_kw: dict[str, Any] = {
            "name": f"{name} confidence",
            "colormap": "gray",
            "contrast_limits": (0.0, 1.0),
            "visible": False,
            "metadata": {"nanoro_optics": {**record, "kind": "confidence"}},
            **yx,
        }
        layers.append((res.confidence, conf_kw, "image"))
    return layers


class FusionWidget(Container):
    """Dock widget *Extended depth of field* (see the module docstring).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose image layers it fuses and to which it adds the results.

    Attributes
    ----------
    worker : napari worker or None
        The running fusion's worker (None when idle).
    last_run : FusionRun or None
        The last completed run.
    message : magicgui.widgets.Label
        Status and error messages.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.last_run: FusionRun | None = None
        self._pending: list[tuple[Any, dict[str, Any], str]] = []
        self._run_name = ""
        self.layer_box = ComboBox(label="z-stack", choices=self._image_layers, nullable=True)
        self.levels = SpinBox(
            label="levels", value=0, min=0, max=32, tooltip="pyramid levels; 0: from the size"
        )
        self.sharpness = SpinBox(
            label="sharpness",
            value=4,
            min=1,
            max=64,
            tooltip="exponent of the soft selection weights (larger: closer to a hard pick)",
        )
        self.hard = CheckBox(text="hard rule (maximum activity)", value=False)
        self.window_px = SpinBox(
            label="window (px)", value=5, min=1, max=15, step=2, tooltip="odd, 1 to 15"
        )
        self.align = CheckBox(text="align frames (drift, focus breathing)", value=False)
        self.depth_unit = ComboBox(
            label="depth", choices=[DEPTH_FROM_SCALE, DEPTH_FROM_STEP, DEPTH_FRAMES]
        )
        self.z_step_um = FloatSpinBox(
            label="z step (um)", value=1.0, min=-1e6, max=1e6, step=0.1, enabled=False
        )
        self.bit_depth = SpinBox(
            label="bit depth",
            value=0,
            min=0,
            max=32,
            tooltip="bits the camera records (e.g. 12 in uint16 frames); 0: not given",
        )
        self.noise_dn = FloatSpinBox(
            label="noise (DN)",
            value=0.0,
            min=0.0,
            max=1e6,
            step=0.5,
            tooltip="noise standard deviation in DN; 0: estimated from the first two frames",
        )
        self.min_confidence = FloatSpinBox(
            label="min confidence",
            value=0.6,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="below it the depth is filled from the confident pixels around (or NaN)",
        )
        self.fill_depth = CheckBox(text="fill unsure depth (else NaN)", value=True)
        self.confidence = CheckBox(text="add the confidence layer", value=False)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="frames", value=0, min=0, max=1)
        self.message = Label(value="")
        self.extend(
            [
                self.layer_box,
                self.levels,
                self.sharpness,
                self.hard,
                self.window_px,
                self.align,
                self.depth_unit,
                self.z_step_um,
                self.bit_depth,
                self.noise_dn,
                self.min_confidence,
                self.fill_depth,
                self.confidence,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.message,
            ]
        )
        self.hard.changed.connect(self._on_hard)
        self.depth_unit.changed.connect(self._on_unit)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for emitter in self._layer_events():
            emitter.connect(self._refresh_layers)
        self._closed = False
        # closing the widget (or the viewer) stops a running fusion and adds nothing
        self.native.destroyed.connect(self._on_closed)
        self._refresh_layers()

    def _on_closed(self, *_args: Any) -> None:
        """Stop the fusion, add no layer and leave the viewer: the widget's Qt side is gone."""
        self._closed = True
        self._pending = []
        if self.worker is not None:
            self.worker.quit()
        for emitter in self._layer_events():
            emitter.disconnect(self._refresh_layers)

    def _layer_events(self) -> list[Any]:
        """Return the viewer's events after which the layer choices are refreshed."""
        events = self.viewer.layers.events
        # a new layer becomes the active one after its "inserted" event
        return [
            events.inserted,
            events.removed,
            events.reordered,
            self.viewer.layers.selection.events.active,
        ]

    # -- choices ------------------------------------------------------------------------
    def _image_layers(self, _widget: Any = None) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, _event: Any = None) -> None:
        self.layer_box.reset_choices()
        if self.layer_box.value is None:
            active = self.viewer.layers.selection.active
            if active is not None and active in self.layer_box.choices:
                self.layer_box.value = active

    def _on_hard(self, hard: bool) -> None:
        self.sharpness.enabled = not hard

    def _on_unit(self, unit: str) -> None:
        self.z_step_um.enabled = unit == DEPTH_FROM_STEP

    # -- running ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a fusion is running or its result layers are still being added."""
        return self.worker is not None or bool(self._pending)

    def _say(self, text: str) -> None:
        self.message.value = text

    def run(self, _value: Any = None) -> Any:
        """Check the chosen layer and options and start the fusion in a worker thread.

        Returns
        -------
        worker or None
            The started worker, or None when the layer or an option was refused (the message
            then says why) or a fusion is already running.
        """
        if self.running:
            self._say("a fusion is running: cancel it first")
            return None
        layer = self.layer_box.value
        try:
            stack = stack_from_layer(layer)
            z_um = z_positions(stack, self.depth_unit.value, self.z_step_um.value)
            options = fusion_options(
                levels=self.levels.value,
                sharpness=self.sharpness.value,
                hard=self.hard.value,
                window_px=self.window_px.value,
                align=self.align.value,
                bit_depth=self.bit_depth.value,
                noise_dn=self.noise_dn.value,
                min_confidence=self.min_confidence.value,
                fill_depth=self.fill_depth.value,
            )
            fuser = StackFuser(z_um=z_um, **options)  # checks the options here, not later
        except (ValueError, TypeError) as exc:
            self._say(f"cannot fuse: {exc}")
            return None
        from napari.qt.threading import create_worker

        name = self._run_name = str(layer.name)
        want_conf = bool(self.confidence.value)
        worker = create_worker(
            fuse_frames, stack.data, fuser, stack.n_frames, _ignore_errors=True, _start_thread=False
        )

        def done(run: FusionRun) -> None:
            if self._closed:  # the widget was closed while the last frame fused
                return
            self.last_run = run
            self.cancel_button.enabled = False  # the fusion is complete: nothing to cancel
            self._pending = result_layers(
                run,
                stack,
                name=name,
                source=layer,
                z_um=z_um,
                settings=options,
                confidence=want_conf,
            )
            self._add_next_layer()

        def failed(exc: BaseException) -> None:
            if not self._closed:
                self._say(f"fusion failed: {exc}")

        def aborted() -> None:
            if not self._closed:
                self._say("cancelled: no layer added")

        def finished() -> None:
            self.worker = None
            if not self._pending and not self._closed:  # else the last layer added ends it
                self._idle()

        worker.yielded.connect(self._on_frame)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.aborted.connect(aborted)
        worker.finished.connect(finished)
        self.progress.max = stack.n_frames
        self.progress.value = 0
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self._say(f"fusing {stack.n_frames} frames of {name!r}...")
        self.worker = worker
        worker.start()
        return worker

    def _on_frame(self, done: int) -> None:
        if not self._closed:
            self.progress.value = done

    def _add_next_layer(self) -> None:
        """Add one result layer, and schedule the next one after the pending GUI events.

        napari takes 0.1 to 0.2 s to add a 2048^2 layer (its Qt controls and vispy node):
        one layer per turn of the event loop keeps the viewer's longest pause to one layer's.
        """
        from qtpy.QtCore import QTimer

        if self._closed:
            return
        if self._pending:
            data, kwargs, _kind = self._pending.pop(0)
            self.viewer.add_image(data, **kwargs)
        if self._pending:
            QTimer.singleShot(0, self._add_next_layer)
            return
        run = self.last_run
        if run is not None:
            self._say(
                f"fused {run.result.n_frames} frames of {self._run_name!r} in {run.seconds:.1f} s "
                f"(depth in {run.result.depth_unit})"
            )
        if self.worker is None:  # finished already
            self._idle()

    def _idle(self) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def cancel(self, _value: Any = None) -> None:
        """Stop the running fusion at the next frame; no result layer is added."""
        if self.worker is not None:
            self.worker.quit()
            self._say("cancelling...")
