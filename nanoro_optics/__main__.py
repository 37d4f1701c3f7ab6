"""``python -m nanoro_optics`` runs the command line."""

import sys

from .cli import main

sys.exit(main())
