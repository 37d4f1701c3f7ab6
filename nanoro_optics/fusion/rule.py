"""The selection rule of the focus fuser: activity, soft selection, inter-scale guard.

For every coefficient of every band-pass level the rule measures an *activity*: the mean
energy of the luminance of the Laplacian coefficients in a ``window_px`` square (the
"window-based activity" of Li et al. [2]_), plus ``inherit`` times the activity of the finer
level filtered by ``[1, 2, 1] / 4`` and decimated (so a coarse coefficient also answers to the
detail beneath it). The fused coefficient is the weighted mean of the frames' coefficients
with weights ``(a_k / max_j a_j) ** sharpness``:

* it is the plain maximum-activity selection of Burt & Kolczynski [1]_ as ``sharpness``
  grows (``sharpness=None`` selects exactly that: the hard rule);
* frames whose activity is close to the best one share the weight, so on a noisy stack the
  near-focus frames are averaged and their noise falls (a hard pick keeps the noise of one
  frame), and a flat region, where every frame measures the same noise energy, is averaged
  over the whole stack rather than turned into the noisiest frame's noise;
* the window and the inherited activity act as the consistency filter: a coefficient's choice
  follows its neighbours and the finer scales, not the noise of a single coefficient;
* the inherited activity is the halo guard: next to a sharp bright edge the finer levels are
  overwhelmingly active in the frame where the edge is sharp, so the coarse levels follow that
  frame too and do not copy in the defocused glow of another frame.

The coarsest level (the low-pass residual) is blended with the same weights, computed from
the inherited activity alone.

References
----------
.. [1] P. J. Burt and R. J. Kolczynski, "Enhanced image capture through fusion", Proc. 4th
   ICCV, 173-182 (1993). https://doi.org/10.1109/ICCV.1993.378222
.. [2] H. Li, B. S. Manjunath and S. K. Mitra, "Multisensor image fusion using the wavelet
   transform", Graph. Models Image Process. 57(3), 235-245 (1995).
   https://doi.org/10.1006/gmip.1995.1022
.. [3] T. Mertens, J. Kautz and F. Van Reeth, "Exposure fusion", Pacific Graphics 2007,
   382-390. https://doi.org/10.1109/PG.2007.17
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from nanoro_optics._validation import check_int, check_range

__all__ = ["FusionRule", "luminance_weights"]

#: Rec. ITU-R BT.709 luma weights of linear R, G, B
REC709 = (0.2126, 0.7152, 0.0722)


@dataclass(frozen=True)
class FusionRule:
    """Options of the fusion rule (see the module docstring for what each one does).

    Parameters
    ----------
    sharpness : int or None, optional
        Exponent of the soft weights ``(a / a_max) ** sharpness``, 1 to 64; ``None`` is the hard
        maximum-activity rule (ties broken by the coefficient values, not by frame order).
    window_px : int, optional
        Side of the square window of the local energy, odd, 1 to 15 px.
    inherit : float, optional
        Weight of the finer level's activity in a level's activity, 0 to 100.
    min_confidence : float, optional
        Depth is NaN where the depth confidence is below this, 0 to 1.
    """

    sharpness: int | None = 4
    window_px: int = 5
    inherit: float = 1.0
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.sharpness is not None:
            object.__setattr__(self, "sharpness", check_int(self.sharpness, "sharpness", 1, 64))
        window = check_int(self.window_px, "window_px", 1, 15)
        if window % 2 == 0:
            raise ValueError(f"window_px must be odd, got {window}")
        object.__setattr__(self, "window_px", window)
        object.__setattr__(self, "inherit", check_range(self.inherit, "inherit", 0.0, 100.0))
        object.__setattr__(
            self, "min_confidence", check_range(self.min_confidence, "min_confidence", 0.0, 1.0)
        )

    def replace(self, **changes: Any) -> FusionRule:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def luminance_weights(n_channels: int) -> np.ndarray:
    """Weights of the luminance projection of an image with ``n_channels`` channels.

    Rec. 709 luma weights for 3 (RGB) or 4 (RGBA, alpha ignored) channels; equal weights
    otherwise.

    References
    ----------
    .. [1] ITU-R Recommendation BT.709-6, "Parameter values for the HDTV standards for
       production and international programme exchange" (2015).
    """
    if n_channels == 3:
        return np.array(REC709, dtype=np.float32)
    if n_channels == 4:
        return np.array((*REC709, 0.0), dtype=np.float32)
    return np.full(n_channels, 1.0 / n_channels, dtype=np.float32)
