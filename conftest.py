"""Root pytest configuration: doctests run over the package, except the entry point.

Qt (the napari plugin's tests) draws offscreen: CI and the developers' machines have no
screen. Where a Qt binding is installed but its Qt libraries cannot load (a machine without
libEGL or libxkbcommon, say), pytest-qt would abort the whole session at start-up; its
plugin and napari's are then left out, and ``tests/test_napari.py`` skips with the reason.
"""

import importlib
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

collect_ignore = ["nanoro_optics/__main__.py"]

#: the pytest plugins that load Qt when pytest configures them
QT_PLUGINS = ("pytest-qt", "napari")


def qt_load_error() -> ImportError | None:
    """Return the error of an installed Qt binding whose Qt libraries cannot load, or None."""
    for module in ("PyQt6.QtWidgets", "PySide6.QtWidgets", "PyQt5.QtWidgets"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            continue  # this binding is not installed
        except ImportError as exc:  # installed, but e.g. libEGL.so.1 is missing
            return exc
        return None  # one binding loads
    return None  # none installed: a missing test dependency, which the tests report


def pytest_addoption(parser, pluginmanager):
    """Leave out the Qt plugins where Qt cannot load (before they configure themselves)."""
    if qt_load_error() is not None:
        for name in QT_PLUGINS:
            pluginmanager.set_blocked(name)
