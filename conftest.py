"""Root pytest configuration: doctests run over the package, except the entry point."""

collect_ignore = ["nanoro_optics/__main__.py"]
