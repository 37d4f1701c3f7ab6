"""The pixel limit: sizes read from file headers are checked before any memory is taken.

A PNG header can claim 100000 x 100000 pixels in 68 bytes, and a small deflate stream can
inflate to hundreds of megapixels (a "decompression bomb"). Every reader checks the size a
header claims against :data:`nanoro_optics.io.MAX_PIXELS` before it allocates or decodes.

The default, :data:`DEFAULT_MAX_PIXELS` (178,956,970 pixels, about 179 MP), is the size above
which Pillow refuses an image (twice its 89.5 MP warning level), and several times the largest
microscope camera sensors (about 25-65 MP in 2025); a 12 MP frame is far below it. To read
larger trusted files, raise it for the process (``nanoro_optics.io.MAX_PIXELS = 500_000_000``;
None, the default, means the environment variable's value or :data:`DEFAULT_MAX_PIXELS`), for
one call (``read_stack(..., max_pixels=...)``), or before start-up with the environment
variable ``NANORO_MAX_PIXELS``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

#: Pixels (height x width) above which a frame is refused unless the limit is raised.
DEFAULT_MAX_PIXELS = 178_956_970
ENV_VAR = "NANORO_MAX_PIXELS"


def _from_env() -> int:
    text = os.environ.get(ENV_VAR)
    if text is None or not text.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be a whole number of pixels, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{ENV_VAR} must be at least 1 pixel, got {text!r}")
    return value


def resolve_max_pixels(max_pixels: Any) -> int:
    """Return the limit for one call.

    ``max_pixels`` if given, else ``nanoro_optics.io.MAX_PIXELS`` if set, else the
    environment variable, else :data:`DEFAULT_MAX_PIXELS`.
    """
    name = "max_pixels"
    if max_pixels is None:
        package = sys.modules.get("nanoro_optics.io")
        max_pixels = getattr(package, "MAX_PIXELS", None)
        name = "nanoro_optics.io.MAX_PIXELS"
    if max_pixels is None:
        return _from_env()
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, float)):
        raise TypeError(f"{name} must be a number of pixels, got {max_pixels!r}")
    if not max_pixels >= 1:  # NaN too
        raise ValueError(f"{name} must be at least 1 pixel, got {max_pixels!r}")
    return int(min(max_pixels, 2**62))


def check_pixels(path: Path, height: int, width: int, limit: int, where: str = "") -> None:
    """Refuse a header's ``height x width`` above ``limit`` (a decompression bomb)."""
    n = int(height) * int(width)
    if n > limit:
        raise ValueError(
            f"cannot read {path}{where}: its header claims {width} x {height} = {n:,} pixels, "
            f"more than the limit of {limit:,} (a damaged file or a decompression bomb); if "
            "the file is trusted, raise the limit with max_pixels=, nanoro_optics.io.MAX_PIXELS "
            f"or the {ENV_VAR} environment variable"
        )
