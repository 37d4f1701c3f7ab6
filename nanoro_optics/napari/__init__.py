"""napari plugin: an extended-depth-of-field widget and a reader for fusion results.

Extra ``nanoro_optics[napari]`` (napari, magicgui and a Qt binding). napari finds the plugin
through the npe2 manifest ``napari.yaml`` beside this file (entry point
``napari.manifest``); it contributes

- the widget *Extended depth of field* (:class:`~._widget.FusionWidget`): fuses a z-stack
  image layer (grey or RGB, any integer or float dtype) with the library's streaming fuser
  (:class:`~nanoro_optics.fusion.StackFuser`) in a worker thread, with progress and cancel,
  and adds the fused image (on top), the depth map in um (with its colour bar) and
  optionally the confidence as layers on the source's y/x grid; it shows the depth map as a
  3-D height surface on request (:mod:`._surface`);
- a reader (:func:`~._reader.napari_get_reader`) for what the ``nanoro-optics fuse`` command
  and :func:`~nanoro_optics.io.write_fusion_ome` write: the OME-TIFF of a fusion (fused image,
  depth map and confidence with their pixel size) and the depth / confidence TIFFs (on their
  pixel size in um where the file gives one).

Importing this package imports neither napari nor Qt; its modules do.
"""

from __future__ import annotations

__all__: list[str] = []
