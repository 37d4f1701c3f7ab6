"""The napari widget *Extended depth of field* at work: the README's two pictures.

A synthetic RGB z-stack (tissue texture on a tilted, bumped surface, 2 um z step, 0.65 um
pixels) is opened as a layer of a napari viewer; the plugin's widget fuses it in its worker
thread, and the script saves

1. ``docs/napari_widget.png``: the window after the run: the fused image on top and
   selected, the depth map (um) below it with its colour bar, the widget docked on the right;
2. ``docs/napari_height_surface.png``: the depth map as a height surface in 3-D, coloured by
   the fused image (the widget's *Show as height surface*, true x/y pixel size), seen from
   above at a slant, its z drawn :data:`Z_EXAGGERATION` times taller for the picture.

Both are napari's own screenshots, which need OpenGL. Without a screen, run it under a
virtual display (Debian: ``apt-get install xvfb libgl1-mesa-dri libglx-mesa0`` and the
``libxcb-*`` libraries Qt needs)::

    Xvfb :99 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb LIBGL_ALWAYS_SOFTWARE=1 python examples/napari_screenshot.py

Where Qt finds no OpenGL at all (``QT_QPA_PLATFORM=offscreen`` on a machine without a
display), the script says so: it draws the first picture with Qt alone (the canvas painted
from the layers' colormaps, with a caption saying so) and skips the 3-D one.

Usage: ``python examples/napari_screenshot.py [--docs docs]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: the window's size in the pictures (small PNGs, still legible)
WINDOW_PX = (1280, 800)
#: the height surface's z drawn this many times taller than x/y in the picture
Z_EXAGGERATION = 4.0


def _to_qimage(rgba: np.ndarray):
    from qtpy.QtGui import QImage

    rgba = np.ascontiguousarray(rgba)
    h, w = rgba.shape[:2]
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def _layer_rgba(layer) -> np.ndarray:
    """The layer's data through its colormap and contrast limits, as napari shows it."""
    data = np.asarray(layer.data)
    lo, hi = layer.contrast_limits
    if layer.rgb:
        rgb = np.clip((data[..., :3].astype(np.float32) - lo) / (hi - lo), 0, 1)
        return (np.dstack([rgb, np.ones(rgb.shape[:2])]) * 255).astype(np.uint8)
    norm = np.clip((data.astype(np.float32) - lo) / (hi - lo), 0, 1)
    colours = layer.colormap.map(np.nan_to_num(norm).ravel()).reshape(*norm.shape, 4)
    return (colours * 255).astype(np.uint8)


def _paint_canvas(window_img, canvas_rect, fused, depth, caption: str) -> None:
    """Paint the fused layer and the depth's colour bar into ``canvas_rect`` (no OpenGL)."""
    from qtpy.QtCore import QRect, Qt
    from qtpy.QtGui import QColor, QLinearGradient, QPainter

    p = QPainter(window_img)
    p.fillRect(canvas_rect, QColor(0, 0, 0))
    pad, bar = 12, 16
    img = _to_qimage(_layer_rgba(fused))
    scaled = img.scaled(
        canvas_rect.width() - 2 * pad,
        canvas_rect.height() - 4 * pad - 3 * bar,
        Qt.AspectRatioMode.KeepAspectRatio,
    )
    x = canvas_rect.x() + (canvas_rect.width() - scaled.width()) // 2
    y = canvas_rect.y() + pad
    p.drawImage(x, y, scaled)
    by = y + scaled.height() + pad
    grad = QLinearGradient(x, 0, x + scaled.width(), 0)
    for t in np.linspace(0, 1, 9):
        grad.setColorAt(
            float(t), QColor.fromRgbF(*map(float, depth.colormap.map(np.array([t]))[0]))
        )
    p.fillRect(QRect(x, by, scaled.width(), bar // 2), grad)
    p.setPen(QColor(230, 230, 230))
    lo, hi = depth.contrast_limits
    row = QRect(x, by + bar // 2, scaled.width(), bar)
    p.drawText(row, 0, f"{lo:.1f} um")
    p.drawText(row, int(Qt.AlignmentFlag.AlignHCenter), depth.name)
    p.drawText(row, int(Qt.AlignmentFlag.AlignRight), f"{hi:.1f} um")
    p.setPen(QColor(150, 150, 150))
    p.drawText(QRect(x, by + 2 * bar, scaled.width(), bar), 0, caption)
    p.end()


def _save_small(image_path: Path) -> None:
    """Re-save a PNG with a 256-colour palette (a third of the size), where Pillow is installed."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(image_path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    small.save(image_path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", default="docs", help="folder of the two PNGs (default: docs)")
    args = ap.parse_args()

    import napari
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    from nanoro_optics.fusion import synthetic_stack
    from nanoro_optics.napari._headless import answer_gl_queries, opengl_available
    from nanoro_optics.napari._widget import FusionWidget

    app = QApplication.instance() or QApplication([])
    gl_ok = opengl_available()
    if not gl_ok:
        print("no OpenGL here (Qt cannot make a context): napari cannot draw its canvas")
        answer_gl_queries()
    viewer = napari.Viewer(show=gl_ok, title="napari: nanoro_optics extended depth of field")
    viewer.window.resize(*WINDOW_PX)
    frames = synthetic_stack((360, 480), 12, seed=2).frames  # RGB uint8, focus order
    src = viewer.add_image(
        frames, name="stack", rgb=True, scale=(2.0, 0.65, 0.65), units=("um", "um", "um")
    )
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Extended depth of field", area="right")
    widget.layer_box.value = src
    worker = widget.run()
    if worker is None:
        raise SystemExit(widget.message.value)
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    loop.exec()
    while widget.running:  # the result layers go in one per turn of the event loop
        app.processEvents()
    print(widget.message.value)
    fused = viewer.layers["stack fused"]
    depth = viewer.layers["stack depth (um)"]
    src.visible = False
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    out = docs / "napari_widget.png"
    if gl_ok:
        viewer.reset_view()
        app.processEvents()
        viewer.screenshot(str(out), canvas_only=False)
        how = "napari's screenshot (OpenGL)"
    else:
        qt_window = viewer.window._qt_window  # the main window: layer list, controls, dock
        qt_window.show()  # laid out and drawn by Qt's offscreen platform, no screen needed
        app.processEvents()
        image = qt_window.grab().toImage()
        canvas = viewer.window._qt_viewer.canvas.native
        rect = canvas.rect().translated(canvas.mapTo(qt_window, canvas.rect().topLeft()))
        caption = "headless, no OpenGL: canvas painted from the layers' colormaps"
        _paint_canvas(image, rect, fused, depth, caption)
        image.save(str(out))
        qt_window.hide()
        how = "Qt offscreen; canvas painted from the layers (no OpenGL here)"
    _save_small(out)
    print(f"wrote {out} ({how}, {out.stat().st_size // 1024} KB)")

    surface_out = docs / "napari_height_surface.png"
    if gl_ok:
        surface = widget.show_height_surface()
        if surface is None:
            raise SystemExit(widget.message.value)
        print(widget.message.value)
        surface.scale = (Z_EXAGGERATION, 1.0, 1.0)  # a 22 um relief on a 310 um field
        viewer.reset_view()
        viewer.scene.camera.angles = (-45.0, 0.0, 60.0)  # from above, at a slant
        for _ in range(3):  # nested layouts settle one level per pass
            app.processEvents()
        viewer.screenshot(str(surface_out), canvas_only=False)
        _save_small(surface_out)
        size_kb = surface_out.stat().st_size // 1024
        print(f"wrote {surface_out} (napari's screenshot, 3-D, {size_kb} KB)")
    else:
        print(f"skipped {surface_out}: the 3-D view needs OpenGL (run under Xvfb, see above)")
    # napari 0.9 on Mesa's software OpenGL crashes when a layer whose colour bar was drawn is
    # removed (as closing the viewer does): hide the bar first
    depth.colorbar.visible = False
    app.processEvents()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
