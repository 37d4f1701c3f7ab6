"""Root pytest configuration: doctests run over the package, except the entry point."""

import os

# Qt (the napari plugin's tests) draws offscreen: CI and the developers' machines have no screen
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

collect_ignore = ["nanoro_optics/__main__.py"]
