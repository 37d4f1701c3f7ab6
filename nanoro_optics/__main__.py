"""``python -m nanoro_optics`` runs the command line."""

from .cli import exit_main

exit_main()
