"""The napari widget *Extended depth of field*: fuse a z-stack layer into an image and a depth map.

The widget takes an image layer with a z axis (``(Z, Y, X)`` grey or ``(Z, Y, X, 3|4)`` RGB,
any integer or float dtype; the z-stack list offers only layers with one) and feeds its
frames one by one to the library's :class:`~nanoro_optics.fusion.StackFuser` in a worker
thread (napari's :func:`~napari.qt.threading.create_worker`): the viewer stays responsive, a
progress bar follows the frames and *Cancel* stops the run at the next frame. The result
layers (:func:`~._layers.result_layers`: the fused image on top and selected, the depth map
below it with its colour bar, the confidence hidden) are added only when the whole stack
fused, so a cancelled or failed run leaves no layer behind. Closing the dock (napari takes
the widget out of it: :meth:`FusionWidget.detach` on the parent change), deleting the
widget (its window closed), closing the viewer or removing the z-stack layer stops the run
too, and nothing is added. A re-run on the same z-stack replaces the previous result in
place, unless *keep earlier results* is ticked (the new layers are then named after their
settings, :func:`~._layers.settings_label`).

The layers equal :func:`~nanoro_optics.fusion.fuse_stack` of the layer's data with the same
options: :func:`fusion_options` is the one place where the controls become fuser options.
A layer the fuser cannot take (one frame, multiscale, extra axes, non-numeric) is refused
with a message in the widget (:func:`~._layers.stack_from_layer`), and errors of the fusion
itself (a NaN pixel, a frame above the bit depth) are shown there too, not as a traceback.
The controls' tooltips are the options' one help text, which the command line's ``--help``
shows too (:meth:`nanoro_optics.fusion.FusionOptions.help`), and the first run says in the
widget that the kernels compile, as soon as numba starts compiling
(:func:`nanoro_optics._numba.on_first_compile`, the command line's notice too).
*Show as height surface* adds the depth map as a 3-D Surface layer
(:func:`~._surface.height_surface`).
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
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

from nanoro_optics._numba import COMPILE_NOTICE
from nanoro_optics.fusion import StackFuser

from ._layers import (
    DEPTH_COLORMAP,
    DEPTH_FRAMES,
    DEPTH_FROM_SCALE,
    DEPTH_FROM_STEP,
    RULE_DEFAULTS,
    FusionRun,
    LayerStack,
    result_kind,
    result_layers,
    settings_label,
    show_legend,
    stack_from_layer,
    z_positions,
)

__all__ = [
    "DEPTH_COLORMAP",
    "DEPTH_FRAMES",
    "DEPTH_FROM_SCALE",
    "DEPTH_FROM_STEP",
    "FusionRun",
    "FusionWidget",
    "LayerStack",
    "fuse_frames",
    "fusion_options",
    "result_layers",
    "settings_label",
    "stack_from_layer",
    "z_positions",
]


def fusion_options(
    *,
    levels: int,
    sharpness: int,
    hard: bool,
    window_px: int,
    align: bool,
    bit_depth: int = 0,
    noise_dn: float = 0.0,
    min_confidence: float = RULE_DEFAULTS["min_confidence"],
    keep_depth_holes: bool = False,
) -> dict[str, Any]:
    """Return the options of :class:`StackFuser` / :func:`fuse_stack` for the widget's values.

    The one place where the widget's controls become fuser options (each parameter is named
    after its control): :meth:`FusionWidget.fuser_options` calls it with the controls' values.

    Parameters
    ----------
    levels : int
        Pyramid levels, 0 ("auto") for the fuser's default (from the frame size).
    sharpness : int
        Exponent of the soft selection weights (ignored with ``hard``).
    hard : bool
        The hard maximum-activity rule (``sharpness=None``).
    window_px : int
        Side of the activity window (odd).
    align : bool
        Align every frame onto the first one.
    bit_depth : int, optional
        Bits the camera records (e.g. 12 in uint16 frames); 0 ("auto", default) leaves it out.
    noise_dn : float, optional
        Noise standard deviation in DN; 0 ("auto", default): estimated by the fuser.
    min_confidence : float, optional
        Depth confidence below which the depth is filled (or NaN), 0 to 1 (default: the
        fuser's, :class:`~nanoro_optics.fusion.FusionRule`'s).
    keep_depth_holes : bool, optional
        Leave the unsure depth NaN instead of filling it from the confident pixels around.

    Returns
    -------
    dict
        ``sharpness``, ``window_px``, ``align``; ``levels``, ``bit_depth`` and ``noise_dn``
        unless 0; ``min_confidence`` and ``fill_depth`` unless at the fuser's defaults.

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
    if min_confidence != RULE_DEFAULTS["min_confidence"]:
        out["min_confidence"] = min_confidence
    if keep_depth_holes:
        out["fill_depth"] = False
    return out


def option_tips() -> dict[str, str]:
    """Return the tooltip of each option control: the options' one help text.

    :meth:`~nanoro_optics.fusion.FusionOptions.help` gives the command line's ``--help``
    text too, so the two front ends describe an option in the same words. The widget's
    ``hard`` and ``keep_depth_holes`` controls are the ``sharpness=None`` and
    ``fill_depth=False`` of the options.
    """
    from nanoro_optics.fusion.options import HELP

    tips = dict(HELP)
    tips["hard"] = "the hard maximum-activity rule: " + HELP["sharpness"]
    tips["keep_depth_holes"] = HELP["fill_depth"]
    return tips


def _on_first_compile_in_gui(callback: Any) -> Any:
    """Call ``callback()`` in the GUI thread when numba first compiles; return the stop call.

    numba raises its compile event in the compiling thread (the worker); a signal of a
    QObject made here, in the GUI thread, queues the call to it.
    """
    from qtpy.QtCore import QObject, Signal

    from nanoro_optics._numba import on_first_compile

    class _Relay(QObject):  # type: ignore[misc,unused-ignore]
        fire = Signal()

    relay = _Relay()
    relay.fire.connect(callback)
    stop = on_first_compile(relay.fire.emit)

    def stop_listening() -> None:
        stop()
        relay.deleteLater()

    return stop_listening


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


def _watch_parent(widget: FusionWidget) -> Any:
    """Call ``widget``'s detach/attach when its Qt widget loses or gets a parent.

    napari's dock close button (``remove_dock_widget``) takes the widget out of its dock
    (``setParent(None)``) and never deletes it: the parent change is the one sign of it.
    """
    from qtpy.QtCore import QEvent, QObject

    ref = weakref.ref(widget)

    class ParentWatcher(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:
            w = ref()
            if w is not None and event.type() == QEvent.Type.ParentChange:
                if obj.parent() is None:
                    w.detach()
                else:
                    w.attach()
            return False

    watcher = ParentWatcher(widget.native)
    widget.native.installEventFilter(watcher)
    return watcher


@dataclass
class _Run:
    """One fusion run: what it fuses and whether it was stopped (then it adds nothing)."""

    name: str
    source: Any
    stack: LayerStack
    z_um: np.ndarray | None
    options: dict[str, Any]
    confidence: bool
    keep: bool
    stopped: str | None = None  # the message to show once the worker ended
    stop_listening: Any = None  # ends the first-compile notice's listening (set by run)


#: wording of the widget's own controls (the fusion options' come from the CLI's help)
TOOLTIPS = {
    "layer_box": "the image layer to fuse: a z-stack (Z, Y, X) or (Z, Y, X, RGB); only "
    "layers with a z axis are listed",
    "depth_unit": "unit of the depth map: um from the layer's z scale and translate, um from "
    "the z step typed below (0 at the first frame), or the frame index (0 = first frame)",
    "min_confidence": "depth confidence (0 to 1) below which a pixel's depth counts as unsure: "
    "filled from its confident neighbours, or NaN with 'keep depth holes'",
    "confidence": "also add the confidence map (0 to 1: how clearly one frame is the "
    "sharpest), hidden",
    "keep_earlier": "keep the layers of earlier runs on this z-stack and name the new ones "
    "after their settings (default: the new result replaces the previous one)",
    "run_button": "fuse the z-stack in the background; the result layers are added when "
    "every frame is in",
    "cancel_button": "stop the running fusion at the next frame; no layer is added",
    "surface_button": "show the last depth map (um) as a 3-D height surface coloured by the "
    "fused image, with the true x/y pixel size",
}
#: the steps after the result layers (see FusionWidget._add_next_layer)
_ARRANGE: Any = "arrange the result layers"
_LEGEND: Any = "show the depth's colour bar"
#: the text of the spin boxes at 0 ("auto": the fuser chooses)
AUTO = "auto"


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
        Status and error messages (word-wrapped: a long one does not widen the dock).
    z_info : magicgui.widgets.Label
        The z step the depth map will use.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.last_run: FusionRun | None = None
        self._live: _Run | None = None
        self._pending: list[Any] = []  # result layers to add, then _ARRANGE and _LEGEND
        self._placed: dict[str, Any] = {}
        self._last_layers: dict[str, Any] = {}
        cli = option_tips()
        self.layer_box = ComboBox(label="z-stack", choices=self._stack_layers, nullable=True)
        # "auto" (0) or a number: a list, as superqt's large-int spin box has no special text
        counts = [(AUTO, 0)] + [(str(n), n) for n in range(1, 33)]
        self.levels = ComboBox(label="levels", choices=counts, value=0, tooltip=cli["levels"])
        self.sharpness = SpinBox(
            label="sharpness",
            value=RULE_DEFAULTS["sharpness"],
            min=1,
            max=64,
            tooltip=cli["sharpness"],
        )
        self.hard = CheckBox(
            text="hard rule (maximum activity)",
            value=False,
            tooltip=cli["hard"],
        )
        self.window_px = SpinBox(
            label="window (px)",
            value=RULE_DEFAULTS["window_px"],
            min=1,
            max=15,
            step=2,
            tooltip=cli["window_px"],
        )
        self.align = CheckBox(
            text="align frames (drift, focus breathing)", value=False, tooltip=cli["align"]
        )
        self.depth_unit = ComboBox(
            label="depth", choices=[DEPTH_FROM_SCALE, DEPTH_FROM_STEP, DEPTH_FRAMES]
        )
        self.z_step_um = FloatSpinBox(
            label="z step (um)",
            value=1.0,
            min=-1e6,
            max=1e6,
            step=0.1,
            enabled=False,
            tooltip=cli["z_step_um"],
        )
        self.z_info = Label(value="")
        self.bit_depth = ComboBox(
            label="bit depth", choices=counts, value=0, tooltip=cli["bit_depth"]
        )
        self.noise_dn = FloatSpinBox(
            label="noise (DN)", value=0.0, min=0.0, max=1e6, step=0.5, tooltip=cli["noise_dn"]
        )
        self.min_confidence = FloatSpinBox(
            label="min confidence",
            value=RULE_DEFAULTS["min_confidence"],
            min=0.0,
            max=1.0,
            step=0.05,
        )
        self.keep_depth_holes = CheckBox(
            text="keep depth holes (NaN)", value=False, tooltip=cli["keep_depth_holes"]
        )
        self.confidence = CheckBox(text="add the confidence layer", value=False)
        self.keep_earlier = CheckBox(text="keep earlier results", value=False)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="frames", value=0, min=0, max=1)
        self.surface_button = PushButton(text="Show as height surface", enabled=False)
        self.message = Label(value="")
        for attr, text in TOOLTIPS.items():
            getattr(self, attr).tooltip = text
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
                self.z_info,
                self.bit_depth,
                self.noise_dn,
                self.min_confidence,
                self.keep_depth_holes,
                self.confidence,
                self.keep_earlier,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.surface_button,
                self.message,
            ]
        )
        self._qt_details()
        self.hard.changed.connect(self._on_hard)
        self.depth_unit.changed.connect(self._on_unit)
        for control in (self.layer_box, self.depth_unit, self.z_step_um):
            control.changed.connect(self._show_z_step)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.surface_button.changed.connect(self.show_height_surface)
        self._closed = True
        self.attach()
        # a deleted widget (its main window closed) stops too
        self.native.destroyed.connect(self.detach)
        self._parent_watcher = _watch_parent(self)

    def _qt_details(self) -> None:
        """Show "auto" at 0, wrap the labels, keep the layer list from widening the dock."""
        from qtpy.QtWidgets import QComboBox, QSizePolicy

        self.noise_dn.native.setSpecialValueText(AUTO)
        for label in (self.message, self.z_info):
            label.native.setWordWrap(True)
            # the layout gives the label the dock's width; its text never asks for more
            policy = label.native.sizePolicy()
            policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
            label.native.setSizePolicy(policy)
        combo = self.layer_box.native
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(12)

    # -- attached to the viewer or closed ----------------------------------------------------
    def _connections(self) -> list[tuple[Any, Any]]:
        """Return the viewer's events the widget follows, with their handlers."""
        events = self.viewer.layers.events
        # a new layer becomes the active one after its "inserted" event
        return [
            (events.inserted, self._refresh_layers),
            (events.removed, self._on_removed),
            (events.reordered, self._refresh_layers),
            (self.viewer.layers.selection.events.active, self._refresh_layers),
        ]

    def attach(self) -> None:
        """Follow the viewer's layers (again): the widget is open."""
        if not self._closed:
            return
        self._closed = False
        for emitter, handler in self._connections():
            emitter.connect(handler)
        self._refresh_layers()

    def detach(self, *_args: Any) -> None:
        """Stop the fusion, add nothing, stop following the viewer: the widget was closed.

        Called when napari takes the widget out of its dock (the dock's close button) and
        when the widget is deleted (its window closed).
        """
        if self._closed:
            return
        self._closed = True
        self._stop("closed")
        for emitter, handler in self._connections():
            emitter.disconnect(handler)

    def _stop(self, why: str) -> None:
        """Stop the running fusion (if any) and drop the layers not yet added."""
        run = self._live
        if run is not None:
            run.stopped = why
        self._live = None
        self._pending = []
        if self.worker is not None:
            self.worker.quit()

    # -- choices ------------------------------------------------------------------------
    def _stack_layers(self, _widget: Any = None) -> list[Any]:
        """Return the image layers with a z axis (a 2-D image, grey or RGB, has none)."""
        from napari.layers import Image

        return [
            layer for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim >= 3
        ]

    def _refresh_layers(self, _event: Any = None) -> None:
        self.layer_box.reset_choices()
        if self.layer_box.value is None:  # the active layer, else the topmost z-stack
            stacks = [c for c in self.layer_box.choices if c is not None]
            active = self.viewer.layers.selection.active
            if active in stacks:
                self.layer_box.value = active
            elif stacks:
                self.layer_box.value = stacks[-1]
        self._show_z_step()

    def _on_removed(self, event: Any) -> None:
        run = self._live
        if run is not None and event.value is run.source:
            self._stop(f"layer {run.name!r} was removed: fusion stopped, no layer added")
            if self.worker is None:  # it had fused already: nothing will say it
                self._say(str(run.stopped))
                self._idle()
        self._refresh_layers()

    def _on_hard(self, hard: bool) -> None:
        self.sharpness.enabled = not hard

    def _on_unit(self, unit: str) -> None:
        self.z_step_um.enabled = unit == DEPTH_FROM_STEP

    def _show_z_step(self, _value: Any = None) -> None:
        """Say which z step the depth map will use."""
        self.z_info.value = self.z_step_text()
        _fit_height(self.z_info.native)

    def z_step_text(self) -> str:
        """Return the widget's line about the z step in use (shown below the z step)."""
        unit = self.depth_unit.value
        if unit == DEPTH_FRAMES:
            return "depth in frames (0 = first frame)"
        if unit == DEPTH_FROM_STEP:
            return f"z step in use: {self.z_step_um.value:g} um (typed), 0 at the first frame"
        try:
            stack = stack_from_layer(self.layer_box.value)
        except ValueError:
            return "z step in use: from the layer's z scale (choose a z-stack)"
        return (
            f"z step in use: {stack.scale_z:g} um (layer's z scale), first frame at "
            f"{stack.translate_z:g} um"
        )

    # -- running ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a fusion is running or its result layers are still being added."""
        return self.worker is not None or bool(self._pending)

    def _say(self, text: str) -> None:
        self.message.value = text
        _fit_height(self.message.native)

    def fuser_options(self) -> dict[str, Any]:
        """Return the fuser's keyword options for the controls' values (:func:`fusion_options`)."""
        names = inspect.signature(fusion_options).parameters
        return fusion_options(**{name: getattr(self, name).value for name in names})

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
            options = self.fuser_options()
            fuser = StackFuser(z_um=z_um, **options)  # checks the options here, not later
        except (ValueError, TypeError) as exc:
            self._say(f"cannot fuse: {exc}")
            return None
        from napari.qt.threading import create_worker

        run = self._live = _Run(
            name=str(layer.name),
            source=layer,
            stack=stack,
            z_um=z_um,
            options=options,
            confidence=bool(self.confidence.value),
            keep=bool(self.keep_earlier.value),
        )
        worker = create_worker(
            fuse_frames, stack.data, fuser, stack.n_frames, _ignore_errors=True, _start_thread=False
        )

        def done(result: FusionRun) -> None:
            if run is not self._live:  # stopped (closed, cancelled, source removed)
                return
            self.last_run = result
            self.cancel_button.enabled = False  # the fusion is complete: nothing to cancel
            self._placed = {}
            self._pending = result_layers(
                result,
                stack,
                name=run.name,
                source=layer,
                z_um=z_um,
                settings=options,
                confidence=run.confidence,
                label=settings_label(options) if run.keep else None,
            )
            self._pending += [_ARRANGE, _LEGEND]
            self._add_next_layer()

        def failed(exc: BaseException) -> None:
            if run is self._live:
                self._say(f"fusion failed: {exc}")
                self._live = None

        def finished() -> None:
            if run.stop_listening is not None:
                run.stop_listening()
            self.worker = None
            if run.stopped is not None and not self._closed:
                self._say(run.stopped)
            if not self._pending and not self._closed:  # else the last layer added ends it
                self._idle()

        worker.yielded.connect(self._on_frame)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.finished.connect(finished)
        self.progress.max = stack.n_frames
        self.progress.value = 0
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        start = f"fusing {stack.n_frames} frames of {run.name!r}"
        self._say(start + "...")

        def compiling() -> None:  # in the GUI thread (queued from the compiling worker)
            if run is self._live and not self._closed:
                self._say(f"{start}; {COMPILE_NOTICE}")

        run.stop_listening = _on_first_compile_in_gui(compiling)
        self.worker = worker
        worker.start()
        return worker

    def _on_frame(self, done: int) -> None:
        if not self._closed:
            self.progress.value = done

    def _previous(self, source: str, kind: str) -> Any:
        """Return the previous run's layer of ``kind`` on ``source`` (None if there is none)."""
        for layer in self.viewer.layers:
            if result_kind(layer) == (source, kind):
                return layer
        return None

    def _place(self, data: Any, kwargs: dict[str, Any], *, keep: bool) -> Any:
        """Add a result layer, or put it in place of the previous run's layer of its kind.

        Replacing updates the old layer (data, name, grid, colours, metadata) rather than
        removing it: its place in the list and the user's display settings stay.
        """
        source, kind = _kind_of(kwargs)
        old = None if keep else self._previous(source, kind)
        if old is None or bool(old.rgb) != bool(kwargs.get("rgb", False)):
            return self.viewer.add_image(data, **kwargs)
        old.data = data
        for key, value in kwargs.items():
            if key != "rgb":
                setattr(old, key, value)
        return old

    def _add_next_layer(self) -> None:
        """Take the next step of adding a result, and schedule the one after it.

        Adding a large layer (its Qt controls and vispy node) and showing a colour bar each
        block the event loop for a noticeable time (``benchmarks/bench_napari_latency.py``
        measures it): one such step per turn of the event loop keeps the viewer's longest
        pause to one step's. The steps: each result layer
        (:meth:`_place`), then :data:`_ARRANGE` (the fused image on top and selected, the
        depth map below it), then :data:`_LEGEND` (the depth's colour bar).
        """
        from qtpy.QtCore import QTimer

        run = self._live
        if self._closed or run is None or not self._pending:
            return
        step = self._pending.pop(0)
        if step is _ARRANGE:
            self._arrange(run)
        elif step is _LEGEND:
            if self._placed["depth"] in self.viewer.layers:
                show_legend(self._placed["depth"])
        else:
            data, kwargs, _kind_name = step
            self._placed[_kind_of(kwargs)[1]] = self._place(data, kwargs, keep=run.keep)
        if self._pending:
            QTimer.singleShot(0, self._add_next_layer)
            return
        self._live = None
        if self.worker is None:  # finished already
            self._idle()

    def _arrange(self, run: _Run) -> None:
        """Put the fused image on top and select it, the depth map below; say it is done."""
        layers = self.viewer.layers
        if not run.keep and not run.confidence:
            old = self._previous(run.name, "confidence")
            if old is not None:  # the previous run's: it belongs to another result
                layers.remove(old)
        for kind in ("depth", "fused"):
            if self._placed[kind] in layers:  # (the user may have removed one meanwhile)
                layers.move(layers.index(self._placed[kind]), len(layers))
        if self._placed["fused"] in layers:
            layers.selection.active = self._placed["fused"]
        self._last_layers = dict(self._placed)
        result = self.last_run
        assert result is not None
        self.surface_button.enabled = result.result.depth_unit == "um"
        self._say(
            f"fused {result.result.n_frames} frames of {run.name!r} in {result.seconds:.1f} s "
            f"(depth in {result.result.depth_unit})"
        )

    def _idle(self) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def cancel(self, _value: Any = None) -> None:
        """Stop the running fusion at the next frame; no result layer is added."""
        if self.worker is not None:
            self._stop("cancelled: no layer added")
            self._say("cancelling...")

    # -- 3-D --------------------------------------------------------------------------------
    def show_height_surface(self, _value: Any = None) -> Any:
        """Show the last depth map (um) as a height surface coloured by the fused image.

        Adds (or replaces) a Surface layer ``<name> height surface``: the vertex of pixel
        ``(i, j)`` at ``(depth, y, x)`` in um (:func:`~._surface.height_surface`), coloured
        by the fused image (grey through its colormap, or RGB); hides the 2-D layers of that
        z-stack and turns the viewer to 3-D.

        Returns
        -------
        napari.layers.Surface or None
            None (with a message) when there is no depth map in um to show.
        """
        from ._surface import height_surface

        depth = self._last_layers.get("depth")
        fused = self._last_layers.get("fused")
        layers = self.viewer.layers
        if depth is None or fused is None or depth not in layers or fused not in layers:
            self._say("no depth map to show: run the fusion first (its layers were removed)")
            return None
        meta = depth.metadata["nanoro_optics"]
        if meta.get("unit") != "um":
            self._say("the depth map is in frames: choose a depth in um and run again")
            return None
        mesh = height_surface(
            depth.data,
            fused.data,
            scale_yx=tuple(depth.scale),
            translate_yx=tuple(depth.translate),
            contrast_limits=tuple(fused.contrast_limits) if fused.rgb else None,
        )
        source = str(meta["source"])
        kwargs: dict[str, Any] = {
            "name": f"{source} height surface",
            "metadata": {"nanoro_optics": {**meta, "kind": "surface", "step_px": mesh.step_px}},
            "shading": "flat",  # one colour per triangle, lit: the relief shows
        }
        if all(str(u) == "micrometer" for u in depth.units):  # as the layers around it
            kwargs["units"] = ("um", "um", "um")
        if mesh.values is not None:
            data: tuple[Any, ...] = (mesh.vertices, mesh.faces, mesh.values)
            kwargs["colormap"] = fused.colormap
            kwargs["contrast_limits"] = tuple(fused.contrast_limits)
        else:
            data = (mesh.vertices, mesh.faces)
            kwargs["vertex_colors"] = mesh.colors
        old = self._previous(source, "surface")
        if old is not None:
            layers.remove(old)  # a Surface with no colour bar: safe to remove
        surface = self.viewer.add_surface(data, **kwargs)
        for layer in layers:
            kind = result_kind(layer)
            if layer is not surface and (layer.name == source or (kind and kind[0] == source)):
                if layer.ndim < 3 or kind is None:
                    layer.visible = False
        self.viewer.dims.ndisplay = 3
        step = "" if mesh.step_px == 1 else f", a vertex every {mesh.step_px} px"
        sy, sx = (float(v) for v in depth.scale)
        self._say(
            f"height surface of {source!r} in 3-D ({sy:g} x {sx:g} um pixels{step}; its 2-D "
            f"layers hidden): drag to turn it"
        )
        return surface


def _fit_height(label: Any) -> None:
    """Give a word-wrapped label the height of its lines at its width.

    A dock does not pass a label's height-for-width up to the window, so a wrapped text
    would get the height of its one-line size hint and be cut off.
    """
    width = label.width() if label.width() > 50 else 250  # before the first layout
    label.setMinimumHeight(label.heightForWidth(width))


def _kind_of(kwargs: dict[str, Any]) -> tuple[str, str]:
    meta = kwargs["metadata"]["nanoro_optics"]
    return str(meta["source"]), str(meta["kind"])
