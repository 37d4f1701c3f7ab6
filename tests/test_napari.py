"""The napari plugin: the extended-depth-of-field widget, its reader and manifest (headless Qt)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.fusion import fuse_stack, synthetic_stack
from nanoro_optics.io import write_depth_map, write_fusion_ome
from nanoro_optics.napari import _reader, _widget
from nanoro_optics.napari._headless import answer_gl_queries, opengl_available
from nanoro_optics.napari._widget import (
    DEPTH_FRAMES,
    DEPTH_FROM_SCALE,
    DEPTH_FROM_STEP,
    FusionWidget,
)


def _qt_cannot_load() -> ImportError | None:
    """The error of a Qt binding that is installed but cannot load; raise if there is none."""
    import importlib

    conftest = importlib.import_module("conftest")  # the root one: pytest imported it
    error = conftest.qt_load_error()
    if error is None:
        from qtpy import QtWidgets  # noqa: F401  (no binding at all: a missing test dependency)
    return error


_QT_ERROR = _qt_cannot_load()
if _QT_ERROR is not None:
    pytest.skip(f"Qt cannot load on this machine: {_QT_ERROR}", allow_module_level=True)

MANIFEST = Path(_widget.__file__).with_name("napari.yaml")


@pytest.fixture
def viewer(make_napari_viewer: Any, qapp: Any) -> Any:
    """A napari viewer (not shown); without OpenGL, napari's GL queries are answered.

    Qt's offscreen platform has no OpenGL on a machine without a display. napari asks
    OpenGL for its extensions and texture sizes when a layer is added, even to a viewer that
    is never drawn; these tests never draw, so :func:`answer_gl_queries` answers those
    queries, and everything else -- the Qt viewer, its layer list, the widget, the worker
    threads -- runs for real.
    """
    if not opengl_available():
        answer_gl_queries()
    return make_napari_viewer()


def _widget_on(viewer: Any, layer: Any) -> FusionWidget:
    w = FusionWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer_box.value = layer
    return w


def _wait(qtbot: Any, w: FusionWidget) -> None:
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)


def _by_name(viewer: Any) -> dict[str, Any]:
    return {layer.name: layer for layer in viewer.layers}


# -- the manifest -------------------------------------------------------------------------
def test_manifest_is_valid_and_its_commands_resolve() -> None:
    import importlib

    from npe2 import PluginManifest

    mf = PluginManifest.from_file(MANIFEST)
    assert mf.name == "nanoro_optics"
    assert mf.display_name == mf.name  # the menu's dock and a script's are filed alike
    assert {w.display_name for w in mf.contributions.widgets or []} == {"Extended depth of field"}
    assert [r.command for r in mf.contributions.readers or []] == ["nanoro_optics.get_reader"]
    for cmd in mf.contributions.commands or []:
        module, _, attr = str(cmd.python_name).partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), cmd.python_name


def test_manifest_is_registered_with_the_installed_distribution() -> None:
    from npe2 import PluginManifest

    # the entry point napari looks up (pip install -e ".[test]" or ".[napari]" makes it)
    mf = PluginManifest.from_distribution("nanoro_optics")
    assert mf.name == "nanoro_optics"
    assert [c.id for c in mf.contributions.commands or []] == [
        "nanoro_optics.fusion_widget",
        "nanoro_optics.get_reader",
    ]
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"napari/napari.yaml"' in text  # shipped in the wheel as package data


# -- the widget gives what fuse_stack gives --------------------------------------------------
CASES = {
    "grey-uint16-scale": (
        {"channels": 1, "dtype": np.uint16},
        {},
        DEPTH_FROM_SCALE,
        {},
    ),
    "rgb-uint8-step-hard-align-confidence": (
        {"channels": 3, "dtype": np.uint8, "breathing": 0.004},
        {"hard": True, "align": True, "levels": 4, "window_px": 3, "confidence": True},
        DEPTH_FROM_STEP,
        {"sharpness": None, "align": True, "levels": 4, "window_px": 3},
    ),
    "grey-float32-frames-sharpness": (
        {"channels": 1, "dtype": np.float32},
        {"sharpness": 9},
        DEPTH_FRAMES,
        {"sharpness": 9},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_widget_layers_equal_fuse_stack(viewer: Any, qtbot: Any, case: str) -> None:
    stack_kw, widget_values, unit, fuse_kw = CASES[case]
    frames = synthetic_stack((72, 90), 6, seed=3, **stack_kw).frames
    rgb = frames.ndim == 4
    src = viewer.add_image(
        frames, name="stack", rgb=rgb, scale=(2.5, 0.4, 0.5), translate=(10.0, 3.0, -2.0)
    )
    if not rgb:
        src.colormap = "magma"  # the fused layer takes the source's colormap
    w = _widget_on(viewer, src)
    for key, value in widget_values.items():
        getattr(w, key).value = value
    w.depth_unit.value = unit
    w.z_step_um.value = -1.5
    worker = w.run()
    assert worker is not None, w.message.value
    _wait(qtbot, w)
    z = {
        DEPTH_FROM_SCALE: 10.0 + 2.5 * np.arange(6),
        DEPTH_FROM_STEP: -1.5 * np.arange(6),
        DEPTH_FRAMES: None,
    }[unit]
    expected = fuse_stack(frames, z_um=z, **fuse_kw)
    layers = _by_name(viewer)
    label = "frame" if unit == DEPTH_FRAMES else "um"
    want = {"stack", "stack fused", f"stack depth ({label})"}
    if widget_values.get("confidence"):
        want.add("stack confidence")
    assert set(layers) == want, w.message.value
    fused, depth = layers["stack fused"], layers[f"stack depth ({label})"]
    assert fused.data.dtype == frames.dtype
    assert fused.rgb == rgb
    np.testing.assert_array_equal(fused.data, expected.image)
    np.testing.assert_array_equal(depth.data, expected.depth)
    for layer in (fused, depth):
        np.testing.assert_allclose(layer.scale, (0.4, 0.5))
        np.testing.assert_allclose(layer.translate, (3.0, -2.0))
    meta = depth.metadata["nanoro_optics"]
    assert meta["unit"] == expected.depth_unit == ("frame" if z is None else "um")
    assert meta["z_um"] == (None if z is None else pytest.approx(list(z)))
    assert meta["n_frames"] == 6
    assert depth.colormap.name == _widget.DEPTH_COLORMAP
    if "stack confidence" in layers:
        np.testing.assert_array_equal(layers["stack confidence"].data, expected.confidence)
    if not rgb:
        assert tuple(fused.contrast_limits) == pytest.approx(tuple(src.contrast_limits))
        assert fused.colormap.name == "magma"
    assert w.progress.value == 6
    assert w.last_run is not None and w.last_run.result.n_frames == 6
    assert "fused 6 frames" in w.message.value


def test_camera_and_depth_options_reach_the_fuser(viewer: Any, qtbot: Any) -> None:
    """A 12-bit camera in uint16 frames: bit depth, noise, min confidence and holes."""
    frames = synthetic_stack((64, 80), 5, seed=4, channels=1, dtype=np.uint16).frames // 16
    src = viewer.add_image(frames, name="cam")
    w = _widget_on(viewer, src)
    w.bit_depth.value, w.noise_dn.value = 12, 3.0
    w.min_confidence.value, w.keep_depth_holes.value = 0.8, True
    w.depth_unit.value = DEPTH_FRAMES
    assert w.run() is not None, w.message.value
    _wait(qtbot, w)
    expected = fuse_stack(frames, bit_depth=12, noise_dn=3.0, min_confidence=0.8, fill_depth=False)
    layers = _by_name(viewer)
    np.testing.assert_array_equal(layers["cam fused"].data, expected.image)
    np.testing.assert_array_equal(layers["cam depth (frame)"].data, expected.depth)
    assert np.isnan(expected.depth).any()  # holes kept, as asked
    settings = layers["cam depth (frame)"].metadata["nanoro_optics"]["settings"]
    assert settings["bit_depth"] == 12 and settings["fill_depth"] is False
    # a bit depth the data exceed: the fusion says so and adds nothing
    w.bit_depth.value = 8
    assert w.run() is not None
    _wait(qtbot, w)
    assert "above 255, the largest of bit_depth=8" in w.message.value
    assert sorted(_by_name(viewer)) == ["cam", "cam depth (frame)", "cam fused"]


# -- cancel and errors ---------------------------------------------------------------------
def test_cancel_leaves_no_layer(viewer: Any, qtbot: Any) -> None:
    frames = synthetic_stack((64, 64), 12, seed=1, channels=1, dtype=np.uint16).frames
    src = viewer.add_image(frames, name="stack")
    w = _widget_on(viewer, src)
    aborted: list[bool] = []
    worker = w.run()
    assert worker is not None
    worker.aborted.connect(lambda: aborted.append(True))
    w.cancel()  # before the worker's first yield: it stops after one frame
    _wait(qtbot, w)
    assert aborted == [True]
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert w.last_run is None
    assert "cancelled" in w.message.value
    assert w.run_button.enabled and not w.cancel_button.enabled
    # and the widget runs again afterwards
    assert w.run() is not None
    _wait(qtbot, w)
    assert len(viewer.layers) == 3


class _Gated:
    """A z-stack whose frame ``gate`` waits, when the worker reads it, until ``release`` is set.

    The test can then close the widget while the fusion is certainly mid-stack, however
    fast the machine fuses: no race against the fusion's speed.
    """

    def __init__(self, data: np.ndarray, gate: int) -> None:
        self._data, self.gate = data, gate
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.gui_thread = threading.get_ident()
        self.reached, self.release = threading.Event(), threading.Event()

    def __getitem__(self, key: Any) -> Any:
        worker = threading.get_ident() != self.gui_thread
        if worker and isinstance(key, int) and key == self.gate:  # the fusion's read of it
            self.reached.set()
            if not self.release.wait(60):
                raise TimeoutError("the test never released the frame")
        return self._data[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._data, dtype=dtype)


N_GATED = 8


def _follows(viewer: Any, w: FusionWidget) -> bool:
    """Whether one of the viewer's layer-list events calls the widget's own handlers.

    (napari connects a docked magicgui widget's ``reset_choices`` itself, and leaves it.)
    """
    emitters = [getattr(viewer.layers.events, n) for n in ("inserted", "removed", "reordered")]
    callbacks = [cb for e in emitters for cb in e.callbacks]
    mine = [cb for cb in callbacks if isinstance(cb, tuple) and cb[0]() is w]
    return any(name != "reset_choices" for _, name in mine)


def _start_gated_run(viewer: Any, qtbot: Any) -> tuple[FusionWidget, Any, _Gated, list[int]]:
    """Dock a widget as napari does and start a run that holds at frame 2 of 8."""
    frames = synthetic_stack((48, 48), N_GATED, seed=2, channels=1, dtype=np.uint16).frames
    gated = _Gated(frames, gate=2)
    src = viewer.add_image(gated, name="stack", contrast_limits=(0, 65535))
    w = FusionWidget(viewer)
    dock = viewer.window.add_dock_widget(w, name="Extended depth of field")
    assert _follows(viewer, w)
    w.layer_box.value = src
    worker = w.run()
    assert worker is not None, w.message.value
    yielded: list[int] = []
    worker.yielded.connect(yielded.append)
    assert gated.reached.wait(60)  # the worker is inside frame 2
    return w, dock, gated, yielded


def _end_gated_run(qtbot: Any, w: FusionWidget, gated: _Gated) -> None:
    gated.release.set()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    qtbot.wait(20)  # any layer addition the widget might still have queued would run here


def test_dock_close_button_stops_the_fusion_and_adds_nothing(viewer: Any, qtbot: Any) -> None:
    w, dock, gated, yielded = _start_gated_run(viewer, qtbot)
    try:
        dock.title.close_button.click()  # the dock's x: napari's remove_dock_widget
    finally:
        gated.release.set()
    _end_gated_run(qtbot, w, gated)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert len(yielded) < N_GATED  # stopped after the frame it was in
    assert w.native.parent() is None  # napari detached it (and did not delete it)
    assert not _follows(viewer, w)  # it stopped following the layer list
    viewer.add_image(np.zeros((3, 8, 8)), name="later")


def test_removing_the_source_layer_stops_the_fusion(viewer: Any, qtbot: Any) -> None:
    w, _dock, gated, yielded = _start_gated_run(viewer, qtbot)
    try:
        viewer.layers.remove("stack")
    finally:
        gated.release.set()
    _end_gated_run(qtbot, w, gated)
    assert len(viewer.layers) == 0
    assert len(yielded) < N_GATED
    assert w.message.value == "layer 'stack' was removed: fusion stopped, no layer added"
    assert w.run_button.enabled and not w.running


def test_closing_the_viewer_stops_the_fusion(viewer: Any, qtbot: Any) -> None:
    w, _dock, gated, yielded = _start_gated_run(viewer, qtbot)
    added: list[str] = []
    viewer.layers.events.inserted.connect(lambda e: added.append(e.value.name))
    try:
        viewer.close()
    finally:
        gated.release.set()
    _end_gated_run(qtbot, w, gated)
    assert added == [] and len(viewer.layers) == 0
    assert len(yielded) < N_GATED


def _multiscale(viewer: Any) -> Any:
    base = np.zeros((4, 64, 64), np.uint16)
    return viewer.add_image([base, base[:, ::2, ::2]], name="bad", multiscale=True)


NO_Z_AXIS = {
    "2-D grey": (lambda v: v.add_image(np.zeros((32, 40), np.uint16), name="bad"), "2-D image"),
    "2-D RGB": (
        lambda v: v.add_image(np.zeros((32, 40, 3), np.uint8), name="bad", rgb=True),
        "2-D RGB image",
    ),
}


@pytest.mark.parametrize("case", list(NO_Z_AXIS))
def test_layers_without_a_z_axis_are_not_offered(viewer: Any, case: str) -> None:
    make, needle = NO_Z_AXIS[case]
    stack = viewer.add_image(np.zeros((3, 32, 40), np.uint16), name="stack")
    layer = make(viewer)  # now the active layer
    w = FusionWidget(viewer)
    assert w.layer_box.choices == (None, stack)
    assert w.layer_box.value is stack
    with pytest.raises(ValueError, match=needle):  # and refused, should one be passed
        _widget.stack_from_layer(layer)


BAD_LAYERS = {
    "one frame": (
        lambda v: v.add_image(np.zeros((1, 32, 40), np.uint16), name="bad"),
        "single frame",
    ),
    "ragged (multiscale levels)": (_multiscale, "multiscale"),
    "extra axis": (
        lambda v: v.add_image(np.zeros((2, 3, 16, 16), np.uint16), name="bad"),
        "split the other axes",
    ),
    "no layer": (lambda v: None, "no image layer"),
}


@pytest.mark.parametrize("case", list(BAD_LAYERS))
def test_bad_layer_gets_a_message_not_a_traceback(viewer: Any, case: str) -> None:
    make, needle = BAD_LAYERS[case]
    layer = make(viewer)
    before = [lay.name for lay in viewer.layers]
    w = _widget_on(viewer, layer)
    assert w.run() is None
    assert w.message.value.startswith("cannot fuse: "), w.message.value
    assert needle in w.message.value
    assert not w.running and w.run_button.enabled
    assert [lay.name for lay in viewer.layers] == before


def test_a_long_refusal_wraps_and_the_dock_keeps_its_width(viewer: Any, qtbot: Any) -> None:
    name = "sample 12 of the afternoon session, objective 20x, stage position A7 " * 2
    layer = viewer.add_image(np.zeros((1, 16, 16), np.uint16), name=name)
    w = _widget_on(viewer, layer)
    window = viewer.window._qt_window
    window.show()  # laid out by Qt (offscreen): size hints are those of a real dock
    qtbot.waitExposed(window)
    before = w.native.sizeHint().width()
    width = w.native.width()
    assert w.run() is None
    assert len(w.message.value) > 200  # the layer's name is in it
    qtbot.wait(10)  # the layout request the new text posts
    assert w.native.sizeHint().width() <= before
    assert w.native.width() == width
    label = w.message.native
    assert label.wordWrap()
    assert label.height() >= label.heightForWidth(label.width()) > 3 * label.fontMetrics().height()
    window.hide()


def test_non_image_layer_is_refused_by_name(viewer: Any) -> None:
    labels = viewer.add_labels(np.zeros((3, 16, 16), np.uint8), name="seg")
    with pytest.raises(ValueError, match="'seg' is a Labels layer"):
        _widget.stack_from_layer(labels)
    w = FusionWidget(viewer)
    assert labels not in w.layer_box.choices  # only image layers are offered


def test_zero_z_scale_is_refused(viewer: Any) -> None:
    src = viewer.add_image(np.zeros((3, 16, 16), np.uint16), name="s")
    w = _widget_on(viewer, src)
    w.depth_unit.value = DEPTH_FROM_STEP
    w.z_step_um.value = 0.0
    assert w.run() is None
    assert "z step is 0.0" in w.message.value


def test_error_in_the_fusion_is_shown_and_adds_no_layer(viewer: Any, qtbot: Any) -> None:
    frames = synthetic_stack((48, 48), 4, seed=2, channels=1, dtype=np.float32).frames
    frames[2, 5, 7] = np.nan
    src = viewer.add_image(frames, name="nan")
    w = _widget_on(viewer, src)
    assert w.run() is not None
    _wait(qtbot, w)
    assert w.message.value.startswith("fusion failed: frame 2 has a non-finite pixel")
    assert [layer.name for layer in viewer.layers] == ["nan"]


def test_bad_option_is_refused_before_the_run(viewer: Any) -> None:
    src = viewer.add_image(np.zeros((3, 16, 16), np.uint16), name="s")
    w = _widget_on(viewer, src)
    w.window_px.value = 4  # even: FusionRule refuses it
    assert w.run() is None
    assert "window_px must be odd" in w.message.value


# -- off the GUI thread ---------------------------------------------------------------------
class _Recorded:
    """An array whose frames note when (and in which thread) they were read."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads: list[tuple[float, int]] = []

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            self.reads.append((time.perf_counter(), threading.get_ident()))
        return self._data[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._data, dtype=dtype)


def test_fusion_runs_off_the_gui_thread_while_the_event_loop_ticks(viewer: Any, qtbot: Any) -> None:
    from qtpy.QtCore import QTimer

    frames = synthetic_stack((512, 512), 20, seed=4, channels=1, dtype=np.uint16).frames
    recorded = _Recorded(frames)
    src = viewer.add_image(recorded, name="big", contrast_limits=(0, 65535))
    recorded.reads.clear()  # napari's own reads while adding the layer
    w = _widget_on(viewer, src)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    assert w.run() is not None
    _wait(qtbot, w)
    timer.stop()
    gui = threading.get_ident()
    assert w.last_run is not None
    assert w.last_run.thread_id != gui
    assert len(recorded.reads) == 20
    assert {tid for _, tid in recorded.reads} == {w.last_run.thread_id}
    first, last = recorded.reads[0][0], recorded.reads[-1][0]
    # the GUI thread's timer fired while the worker was between its first and last frame
    during = [t for t in ticks if first < t < last]
    assert during, (len(ticks), last - first)
    np.testing.assert_array_equal(_by_name(viewer)["big fused"].data, fuse_stack(frames).image)


# -- the reader -----------------------------------------------------------------------------
def test_reader_opens_what_the_cli_writes(tmp_path: Path) -> None:
    from nanoro_optics.cli import main

    frames = synthetic_stack((48, 56), 4, seed=5, channels=1, dtype=np.uint16).frames
    stack_path = tmp_path / "stack.tif"
    import tifffile

    tifffile.imwrite(stack_path, frames, photometric="minisblack")
    out, depth, conf = tmp_path / "fused.tif", tmp_path / "depth.tif", tmp_path / "conf.tif"
    argv = ["fuse", str(stack_path), "-o", str(out), "--depth-map", str(depth)]
    assert main([*argv, "--confidence", str(conf), "--z-step-um", "2", "-q"]) == 0
    expected = fuse_stack(frames, z_um=2.0 * np.arange(4))
    assert _reader.napari_get_reader(str(out)) is None  # a plain image: napari's own reader
    reader = _reader.napari_get_reader([str(depth), str(conf)])
    assert reader is not None
    (d, d_kw, d_kind), (c, c_kw, _) = reader([str(depth), str(conf)])
    assert d_kind == "image"
    assert d_kw["name"] == "depth depth (um)"
    assert d_kw["metadata"]["nanoro_optics"]["unit"] == "um"
    assert d_kw["colormap"] == _reader.DEPTH_COLORMAP
    np.testing.assert_array_equal(d, expected.depth)
    assert c_kw["name"] == "conf confidence"
    np.testing.assert_array_equal(c, expected.confidence)
    # without --z-step-um the depth is in frames, and the name says so
    assert main([*argv, "--overwrite", "-q"]) == 0
    ((_, kw, _),) = _reader.read_fusion(str(depth))
    assert kw["name"] == "depth depth (frame)"
    # the halo map: an overlay of where the correction acted (255), not a depth map
    from nanoro_optics.io import write_depth_map

    corrected = np.zeros((48, 56), bool)
    corrected[10:20, 5:9] = True
    write_depth_map(tmp_path / "halo.tif", corrected, kind="halo")
    ((h, h_kw, h_kind),) = _reader.read_fusion(str(tmp_path / "halo.tif"))
    assert h_kind == "image" and h_kw["name"] == "halo halo correction"
    assert h.dtype == np.uint8 and np.array_equal(h == 255, corrected)
    assert h_kw["colormap"] == "red" and h_kw["blending"] == "additive"


def test_reader_opens_the_fusion_ome_tiff(viewer: Any, tmp_path: Path) -> None:
    frames = synthetic_stack((40, 48), 4, seed=6).frames  # RGB uint8
    res = fuse_stack(frames, z_um=[0.0, 1.0, 2.0, 3.0])
    path = write_fusion_ome(
        tmp_path / "r.ome.tif",
        res.image,
        res.depth,
        res.confidence,
        pixel_size_um=0.65,
        z_um=[0.0, 1.0, 2.0, 3.0],
        channel_names=["R", "G", "B"],
        settings={"levels": 5},
    )
    reader = _reader.napari_get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    by = _by_name(viewer)
    assert set(by) == {"r fused", "r depth (um)", "r confidence"}
    assert by["r fused"].rgb
    np.testing.assert_array_equal(by["r fused"].data, res.image)
    np.testing.assert_array_equal(by["r depth (um)"].data, res.depth)
    np.testing.assert_array_equal(by["r confidence"].data, res.confidence)
    for layer in by.values():
        np.testing.assert_allclose(layer.scale, (0.65, 0.65))
    meta = by["r depth (um)"].metadata["nanoro_optics"]
    assert meta["z_um"] == [0.0, 1.0, 2.0, 3.0] and meta["settings"] == {"levels": 5}


def test_reader_multichannel_ome_tiff_one_layer_per_channel(tmp_path: Path) -> None:
    img = np.arange(2 * 8 * 10, dtype=np.uint16).reshape(8, 10, 2)
    maps = np.zeros((8, 10), np.float32)
    path = write_fusion_ome(
        tmp_path / "m.ome.tiff",
        img,
        maps,
        maps,
        pixel_size_um=1.0,
        z_um=[0.0, 1.0],
        channel_names=["DAPI", "GFP"],
    )
    (fused, kw, _), *_ = _reader.read_fusion(str(path))
    assert kw["channel_axis"] == 0 and kw["name"] == ["m fused DAPI", "m fused GFP"]
    np.testing.assert_array_equal(np.moveaxis(fused, 0, -1), img)


def test_reader_leaves_other_files_alone(tmp_path: Path) -> None:
    import tifffile

    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 4), np.float32))
    other_ome = tmp_path / "x.ome.tif"
    tifffile.imwrite(other_ome, np.zeros((2, 4, 4), np.uint8), ome=True)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    for p in (plain, other_ome, junk, tmp_path / "missing.tif", tmp_path / "a.png"):
        assert _reader.napari_get_reader(str(p)) is None, p
    ours = write_depth_map(tmp_path / "d.tif", np.zeros((4, 4)))
    assert _reader.napari_get_reader([str(ours), str(plain)]) is None  # all or nothing
    with pytest.raises(ValueError, match="not a fusion result"):
        _reader.read_fusion(str(plain))


def test_napari_is_imported_by_the_plugin_not_the_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nanoro_optics, nanoro_optics.napari, nanoro_optics.io, "
        "nanoro_optics.fusion; "
        "print(sorted(m for m in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'magicgui', 'vispy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_napari_finds_the_widget_and_the_reader_through_the_manifest(
    viewer: Any, tmp_path: Path
) -> None:
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()  # make_napari_viewer's own: it discovers no plugin itself
    try:
        pm.get_manifest("nanoro_optics")
    except KeyError:
        pm.register(PluginManifest.from_distribution("nanoro_optics"))
    _, widget = viewer.window.add_plugin_dock_widget("nanoro_optics", "Extended depth of field")
    assert isinstance(widget, FusionWidget)
    path = write_depth_map(tmp_path / "h.tif", np.arange(12.0).reshape(3, 4), unit="um")
    (layer,) = viewer.open(str(path), plugin="nanoro_optics")
    assert layer.name == "h depth (um)"
    assert layer.colormap.name == _reader.DEPTH_COLORMAP
    np.testing.assert_array_equal(layer.data, np.arange(12.0).reshape(3, 4))
    # the widget follows the layer list: a 2-D map is no z-stack; a new z-stack is picked
    assert widget.layer_box.choices == (None,)
    stack = viewer.add_image(np.zeros((3, 4, 4)), name="stack")
    assert widget.layer_box.choices == (None, stack)
    assert widget.layer_box.value is stack


def test_a_script_after_the_menu_finds_the_menu_s_dock(viewer: Any) -> None:
    """Plugins > Extended depth of field, then add_plugin_dock_widget: one dock, one widget."""
    from napari._app_model import get_app_model
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()
    try:
        pm.get_manifest("nanoro_optics")
    except KeyError:
        pm.register(PluginManifest.from_distribution("nanoro_optics"))
    get_app_model().commands.execute_command("nanoro_optics.fusion_widget").result()
    docks = viewer.window._wrapped_dock_widgets
    assert len(docks) == 1, list(docks)
    (menu_dock,) = docks.values()
    dock, widget = viewer.window.add_plugin_dock_widget("nanoro_optics", "Extended depth of field")
    assert dock is menu_dock and isinstance(widget, FusionWidget)
    assert len(viewer.window._wrapped_dock_widgets) == 1


# -- what the user meets after a run ---------------------------------------------------------
def _run_to_end(qtbot: Any, w: FusionWidget) -> None:
    assert w.run() is not None, w.message.value
    _wait(qtbot, w)


def test_after_a_run_the_fused_image_is_on_top_and_selected(viewer: Any, qtbot: Any) -> None:
    frames = synthetic_stack((40, 48), 4, seed=7, channels=1, dtype=np.uint16).frames
    src = viewer.add_image(frames, name="s", scale=(2.0, 0.5, 0.5), units=("um", "um", "um"))
    other = viewer.add_image(np.zeros((3, 8, 8)), name="other")  # above the source
    w = _widget_on(viewer, src)
    w.confidence.value = True
    _run_to_end(qtbot, w)
    names = [layer.name for layer in viewer.layers]
    assert names == ["s", "other", "s confidence", "s depth (um)", "s fused"]
    fused, depth, conf = (viewer.layers[n] for n in ("s fused", "s depth (um)", "s confidence"))
    assert viewer.layers.selection.active is fused
    assert depth.visible and depth.colorbar.visible  # the legend, in um (its name, metadata)
    assert depth.metadata["nanoro_optics"]["unit"] == "um"
    assert not conf.visible and not other.colorbar.visible
    for layer in (fused, depth, conf):
        assert tuple(str(u) for u in layer.units) == ("micrometer", "micrometer")


def test_a_re_run_replaces_the_previous_result_or_keeps_it_named(viewer: Any, qtbot: Any) -> None:
    frames = synthetic_stack((40, 48), 4, seed=8, channels=1, dtype=np.uint16).frames
    src = viewer.add_image(frames, name="s")
    w = _widget_on(viewer, src)
    w.confidence.value = True
    _run_to_end(qtbot, w)
    first = viewer.layers["s fused"]
    w.hard.value, w.confidence.value = True, False
    _run_to_end(qtbot, w)
    # the same layers, new data: replaced in place (the confidence of the first run goes)
    assert [layer.name for layer in viewer.layers] == ["s", "s depth (um)", "s fused"]
    assert viewer.layers["s fused"] is first
    np.testing.assert_array_equal(first.data, fuse_stack(frames, sharpness=None).image)
    assert first.metadata["nanoro_optics"]["settings"]["sharpness"] is None
    w.keep_earlier.value, w.window_px.value = True, 3
    _run_to_end(qtbot, w)
    assert [layer.name for layer in viewer.layers] == [
        "s",
        "s depth (um)",
        "s fused",
        "s depth (um; hard, window 3)",
        "s fused (hard, window 3)",
    ]
    np.testing.assert_array_equal(
        viewer.layers["s fused (hard, window 3)"].data,
        fuse_stack(frames, sharpness=None, window_px=3).image,
    )


def test_controls_say_auto_show_the_z_step_and_have_the_cli_s_tooltips(viewer: Any) -> None:
    from nanoro_optics.fusion import FusionOptions

    src = viewer.add_image(np.zeros((3, 8, 8)), name="s", scale=(5.0, 1, 1), translate=(2, 0, 0))
    w = _widget_on(viewer, src)
    for box in (w.levels, w.bit_depth):
        assert box.value == 0 and box.native.currentText() == "auto"
    assert w.noise_dn.value == 0 and w.noise_dn.native.text() == "auto"
    assert w.z_info.value == "z step in use: 5 um (layer's z scale), first frame at 2 um"
    w.depth_unit.value = DEPTH_FROM_STEP
    w.z_step_um.value = -1.5
    assert w.z_info.value == "z step in use: -1.5 um (typed), 0 at the first frame"
    w.depth_unit.value = DEPTH_FRAMES
    assert w.z_info.value == "depth in frames (0 = first frame)"
    same = {"levels", "sharpness", "window_px", "align", "bit_depth", "noise_dn", "z_step_um"}
    for name in same:  # the options' one help text, which the CLI's --help shows too
        assert getattr(w, name).tooltip == FusionOptions.help(name), name
    assert w.keep_depth_holes.tooltip == FusionOptions.help("fill_depth")
    assert FusionOptions.help("sharpness") in str(w.hard.tooltip)
    untipped = [c for c in w if not c.tooltip]
    assert untipped == [w.z_info, w.progress, w.message]  # every control has one


def test_first_run_notice_while_kernels_compile(
    viewer: Any, qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from numba.core import event

    from nanoro_optics._numba import COMPILE_NOTICE
    from nanoro_optics.napari import _widget

    real = _widget.fuse_frames
    compiled = threading.Event()

    def compiling_first(data: Any, fuser: Any, n: int) -> Any:
        # numba's compile event, raised in the worker as numba raises it for a real compile
        event.start_event("numba:compile", data={"dispatcher": None, "args": None})
        event.end_event("numba:compile", data={"dispatcher": None, "args": None})
        compiled.set()
        return (yield from real(data, fuser, n))

    frames = synthetic_stack((32, 32), 3, seed=9, channels=1, dtype=np.uint16).frames
    w = _widget_on(viewer, viewer.add_image(frames, name="s"))
    monkeypatch.setattr(_widget, "fuse_frames", compiling_first)
    assert w.run() is not None
    assert w.message.value == "fusing 3 frames of 's'..."
    # the notice reaches the GUI thread while the worker runs (queued from the worker)
    qtbot.waitUntil(lambda: COMPILE_NOTICE in str(w.message.value), timeout=30_000)
    assert w.message.value == f"fusing 3 frames of 's'; {COMPILE_NOTICE}"
    assert compiled.is_set()
    _wait(qtbot, w)
    # the same run again: its kernels compiled (or loaded) in the first, nothing is said
    monkeypatch.setattr(_widget, "fuse_frames", real)
    assert w.run() is not None
    _wait(qtbot, w)
    assert COMPILE_NOTICE not in str(w.message.value)


# -- the height surface ----------------------------------------------------------------------
def test_height_surface_vertices_sit_at_the_depth_on_the_pixel_grid() -> None:
    from nanoro_optics.napari._surface import height_surface

    rng = np.random.default_rng(0)
    depth = rng.uniform(-3.0, 7.0, (9, 13))
    depth[4, 6] = np.nan  # a hole: no triangle touches it
    grey = rng.integers(0, 4096, (9, 13)).astype(np.uint16)
    s = height_surface(depth, grey, scale_yx=(0.5, 0.25), translate_yx=(10.0, -2.0))
    assert s.step_px == 1 and s.colors is None
    z, y, x = s.vertices.T
    i, j = np.divmod(np.arange(9 * 13), 13)
    np.testing.assert_allclose(y, 10.0 + 0.5 * i)
    np.testing.assert_allclose(x, -2.0 + 0.25 * j)
    ok = np.isfinite(depth.ravel())
    np.testing.assert_allclose(z[ok], depth.ravel()[ok], rtol=1e-6)  # float32 vertices
    assert s.values is not None
    np.testing.assert_array_equal(s.values, grey.ravel())
    hole = 4 * 13 + 6
    assert hole not in s.faces
    assert len(s.faces) == 2 * 8 * 12 - 6  # the six triangles around the hole left out
    # a colour image gives RGBA colours; a large map a coarser grid with its edges kept
    rgb = rng.integers(0, 256, (700, 300, 3)).astype(np.uint8)
    big = height_surface(np.zeros((700, 300)), rgb, max_side=100)
    assert big.step_px == 8 and big.values is None and big.colors is not None
    assert big.vertices[:, 1].max() == 699 and big.vertices[:, 2].max() == 299
    np.testing.assert_allclose(big.colors[0], [*(rgb[0, 0] / 255), 1.0], rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 40),
    w=st.integers(2, 40),
    max_side=st.integers(2, 12),
    seed=st.integers(0, 2**16),
)
def test_height_surface_faces_join_grid_neighbours_with_a_depth(
    h: int, w: int, max_side: int, seed: int
) -> None:
    """Every triangle joins three neighbours on the sampled grid, all with a depth; the grid
    keeps the map's edges and has at most ``max_side`` vertices a side."""
    from nanoro_optics.napari._surface import height_surface

    rng = np.random.default_rng(seed)
    depth = rng.normal(size=(h, w))
    depth[rng.random((h, w)) < 0.2] = np.nan
    depth[0, 0] = 1.0  # at least one depth
    s = height_surface(depth, rng.random((h, w)), scale_yx=(0.5, 2.0), max_side=max_side)
    rows = np.unique(s.vertices[:, 1]) / 0.5
    cols = np.unique(s.vertices[:, 2]) / 2.0
    assert rows[0] == cols[0] == 0 and rows[-1] == h - 1 and cols[-1] == w - 1
    assert len(rows) <= max_side and len(cols) <= max_side
    assert np.diff(rows).max() <= s.step_px and np.diff(cols).max() <= s.step_px
    r = np.rint(s.vertices[:, 1] / 0.5).astype(int)
    c = np.rint(s.vertices[:, 2] / 2.0).astype(int)
    on_map = depth[r, c]
    ok = np.isfinite(on_map)
    np.testing.assert_allclose(s.vertices[ok, 0], on_map[ok], rtol=1e-6, atol=1e-6)
    assert ok[s.faces].all()  # no triangle touches a pixel without a depth
    ri, ci = np.searchsorted(rows, r[s.faces]), np.searchsorted(cols, c[s.faces])
    assert (np.ptp(ri, axis=1) == 1).all() and (np.ptp(ci, axis=1) == 1).all()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros(5), np.zeros(5)), {}, "depth must be a non-empty 2-D array"),
        ((np.zeros((2, 2)), np.zeros((2, 3))), {}, "image must be"),
        ((np.full((2, 2), np.nan), np.zeros((2, 2))), {}, "no finite value"),
        ((np.zeros((2, 2)), np.zeros((2, 2))), {"scale_yx": (0.0, 1.0)}, "scale_yx"),
        ((np.zeros((2, 2)), np.zeros((2, 2))), {"max_side": 1}, "max_side must be at least 2"),
    ],
)
def test_height_surface_refuses_bad_input(args: Any, kwargs: Any, match: str) -> None:
    from nanoro_optics.napari._surface import height_surface

    with pytest.raises(ValueError, match=match):
        height_surface(*args, **kwargs)


@pytest.mark.parametrize("rgb", [False, True])
def test_show_as_height_surface(viewer: Any, qtbot: Any, rgb: bool) -> None:
    channels = 3 if rgb else 1
    frames = synthetic_stack((40, 48), 4, seed=10, channels=channels, dtype=np.uint8).frames
    src = viewer.add_image(frames, name="s", rgb=rgb, scale=(2.0, 0.65, 0.65))
    w = _widget_on(viewer, src)
    assert not w.surface_button.enabled
    _run_to_end(qtbot, w)
    assert w.surface_button.enabled
    surface = w.show_height_surface()
    assert surface is not None, w.message.value
    assert surface.name == "s height surface"
    assert viewer.dims.ndisplay == 3
    assert [layer.name for layer in viewer.layers if layer.visible] == ["s height surface"]
    depth, fused = viewer.layers["s depth (um)"].data, viewer.layers["s fused"].data
    vertices = surface.data[0]
    np.testing.assert_allclose(vertices[:, 0], depth.ravel(), rtol=1e-6)
    assert np.ptp(vertices[:, 0]) > 0  # a relief, in um
    np.testing.assert_allclose(vertices[48 + 1, 1:], (0.65, 0.65), rtol=1e-6)  # pixel (1, 1)
    if rgb:
        np.testing.assert_allclose(surface.vertex_colors[:, 0], fused[..., 0].ravel() / 255)
    else:
        np.testing.assert_array_equal(surface.data[2], fused.ravel())
    assert "height surface of 's'" in w.message.value
    # again: replaced, not piled up
    w.show_height_surface()
    assert [layer.name for layer in viewer.layers].count("s height surface") == 1


# -- the reader: pixel size and units ---------------------------------------------------------
def _map_file(path: Path, *, record: dict[str, Any], **tiff_kw: Any) -> Path:
    """A depth map as a TIFF with a JSON record, written with tifffile itself."""
    import json

    import tifffile

    from nanoro_optics.io import DEPTH_MAP_KEY

    data = np.arange(20.0, dtype=np.float32).reshape(4, 5)
    description = json.dumps({DEPTH_MAP_KEY: record})
    tifffile.imwrite(path, data, description=description, metadata=None, **tiff_kw)
    return path


@pytest.mark.parametrize(
    ("tiff_kw", "scale"),
    [
        ({"resolution": (1e4 / 0.5, 1e4 / 0.25), "resolutionunit": "CENTIMETER"}, (0.25, 0.5)),
        ({"resolution": (25_400 / 2.0, 25_400 / 2.0), "resolutionunit": "INCH"}, (2.0, 2.0)),
    ],
)
def test_reader_takes_the_pixel_size_from_the_tiff_resolution(
    viewer: Any, tmp_path: Path, tiff_kw: dict[str, Any], scale: tuple[float, float]
) -> None:
    path = _map_file(tmp_path / "d.tif", record={"kind": "depth", "unit": "um"}, **tiff_kw)
    ((data, kw, _),) = _reader.read_fusion(str(path))
    layer = viewer.add_image(data, **kw)
    np.testing.assert_allclose(layer.scale, scale, rtol=1e-9)
    assert tuple(str(u) for u in layer.units) == ("micrometer", "micrometer")
    assert kw["metadata"]["nanoro_optics"]["pixel_size_um"] == pytest.approx(list(scale))


def test_reader_prefers_the_record_s_pixel_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the record as io.map_record returns it once the writers keep the pixel size
    record = {"kind": "depth", "unit": "um", "pixel_size_um": 0.65}
    res = {"resolution": (1e4 / 0.5, 1e4 / 0.5), "resolutionunit": "CENTIMETER"}
    path = _map_file(tmp_path / "d.tif", record=record, **res)
    monkeypatch.setattr(_reader, "map_record", lambda p: dict(record))
    ((_, kw, _),) = _reader.read_fusion(str(path))
    assert kw["scale"] == pytest.approx((0.65, 0.65))
    assert kw["units"] == ("um", "um")


def test_reader_without_a_pixel_size_leaves_the_scale_alone(tmp_path: Path) -> None:
    plain = _map_file(tmp_path / "p.tif", record={"kind": "depth", "unit": "frame"})
    no_unit = _map_file(
        tmp_path / "n.tif", record={"kind": "confidence"}, resolution=(3, 3), resolutionunit="NONE"
    )  # a resolution without a unit says nothing about um
    for path in (plain, no_unit):
        ((_, kw, _),) = _reader.read_fusion(str(path))
        assert "scale" not in kw and "units" not in kw
        assert _reader.pixel_size_um(path) is None
