"""The napari widget *Extended depth of field* at work, captured headless as a PNG.

A synthetic RGB z-stack (tissue texture on a tilted, bumped surface, 2 um z step, 0.65 um
pixels) is opened as a layer of a napari viewer that is never shown (Qt's offscreen
platform); the plugin's widget fuses it in its worker thread, and the script waits until the
fused image and the depth map (um) are layers, then saves the window.

napari draws its canvas with OpenGL. Where Qt can make an OpenGL context (a desktop, or a
display such as Xvfb), the PNG is napari's own screenshot of the whole window, in grid mode
(fused image beside the depth map). Where it cannot (a headless machine without a display,
like CI), the Qt widgets are still drawn by Qt (layer list, layer controls, the plugin's
dock widget), and the canvas area is painted with the result layers as napari would show
them: each layer's data through its own colormap and contrast limits, side by side as in
grid mode, with the depth map's range in um. The caption in the image says which.

Usage: ``python examples/napari_screenshot.py [-o docs/napari_widget.png]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _to_qimage(rgba: np.ndarray):
    from qtpy.QtGui import QImage

    rgba = np.ascontiguousarray(rgba)
    h, w = rgba.shape[:2]
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def _layer_rgba(layer) -> np.ndarray:
    """The layer's data through its colormap and contrast limits, as napari shows it."""
    data = np.asarray(layer.data)
    if layer.rgb:
        rgb = data[..., :3].astype(np.float32)
        lo, hi = layer.contrast_limits
        rgb = np.clip((rgb - lo) / (hi - lo), 0, 1)
        return (np.dstack([rgb, np.ones(rgb.shape[:2])]) * 255).astype(np.uint8)
    lo, hi = layer.contrast_limits
    norm = np.clip((data.astype(np.float32) - lo) / (hi - lo), 0, 1)
    colours = layer.colormap.map(np.nan_to_num(norm).ravel()).reshape(*norm.shape, 4)
    return (colours * 255).astype(np.uint8)


def _paint_canvas(window_img, canvas_rect, layers, caption: str) -> None:
    """Paint ``layers`` side by side (grid mode) into ``canvas_rect`` of the window image."""
    from qtpy.QtCore import QRect, Qt
    from qtpy.QtGui import QColor, QFont, QLinearGradient, QPainter

    p = QPainter(window_img)
    p.fillRect(canvas_rect, QColor(0, 0, 0))
    pad, bar = 12, 16
    cell_w = (canvas_rect.width() - pad * (len(layers) + 1)) // len(layers)
    font = QFont()
    font.setPointSize(10)
    p.setFont(font)
    for k, layer in enumerate(layers):
        img = _to_qimage(_layer_rgba(layer))
        h_avail = canvas_rect.height() - 6 * pad - 4 * bar
        scaled = img.scaled(cell_w, h_avail, Qt.AspectRatioMode.KeepAspectRatio)
        x = canvas_rect.x() + pad + k * (cell_w + pad)
        y = canvas_rect.y() + (canvas_rect.height() - scaled.height()) // 2
        p.drawImage(x, y, scaled)
        p.setPen(QColor(230, 230, 230))
        p.drawText(QRect(x, y - bar - pad // 2, cell_w, bar), 0, layer.name)
        if not layer.rgb and layer.colormap.name != "gray":  # a colour bar with its range
            by = y + scaled.height() + pad // 2
            grad = QLinearGradient(x, 0, x + scaled.width(), 0)
            for t in np.linspace(0, 1, 9):
                c = layer.colormap.map(np.array([t]))[0]
                grad.setColorAt(float(t), QColor.fromRgbF(*map(float, c)))
            p.fillRect(QRect(x, by, scaled.width(), bar // 2), grad)
            lo, hi = layer.contrast_limits
            unit = layer.metadata.get("nanoro_optics", {}).get("unit", "")
            p.drawText(QRect(x, by + bar // 2, scaled.width(), bar), 0, f"{lo:.1f} {unit}")
            p.drawText(
                QRect(x, by + bar // 2, scaled.width(), bar),
                int(Qt.AlignmentFlag.AlignRight),
                f"{hi:.1f} {unit}",
            )
    p.setPen(QColor(150, 150, 150))
    foot = QRect(canvas_rect.x() + pad, canvas_rect.bottom() - bar - pad, canvas_rect.width(), bar)
    p.drawText(foot, 0, caption)
    p.end()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="docs/napari_widget.png")
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
        answer_gl_queries()
    viewer = napari.Viewer(show=False, title="napari: nanoro_optics extended depth of field")
    viewer.window.resize(1600, 820)
    frames = synthetic_stack((360, 480), 12, seed=2).frames  # RGB uint8, focus order
    src = viewer.add_image(frames, name="stack", rgb=True, scale=(2.0, 0.65, 0.65))
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Extended depth of field", area="right")
    widget.layer_box.value = src
    widget.confidence.value = True
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
    viewer.layers.selection.active = depth
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if gl_ok:
        viewer.grid.enabled = True
        viewer.screenshot(str(out), canvas_only=False)
        how = "napari's screenshot (OpenGL)"
    else:
        qt_window = viewer.window._qt_window  # the main window: layer list, controls, dock
        qt_window.show()  # laid out and drawn by Qt's offscreen platform, no screen needed
        app.processEvents()
        image = qt_window.grab().toImage()
        canvas = viewer.window._qt_viewer.canvas.native
        rect = canvas.rect().translated(canvas.mapTo(qt_window, canvas.rect().topLeft()))
        caption = "headless, no OpenGL: canvas painted from the layers' colormaps (grid mode)"
        _paint_canvas(image, rect, [fused, depth], caption)
        image.save(str(out))
        qt_window.hide()
        how = "Qt offscreen; canvas painted from the layers (no OpenGL here)"
    print(f"wrote {out} ({how})")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
