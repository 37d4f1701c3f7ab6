"""The selection rule of the focus fuser: activity, soft selection, consistency across scales.

For every coefficient of the finest ``focus_levels`` band-pass levels the rule measures an
*activity*: the mean, over a ``window_px`` square (``coarse_window_px``, if given, from the
third level on), of the energy of the Laplacian
coefficients summed over the channels, each channel weighted by ``1 / (C sigma_c**2)``
where ``sigma_c`` is that channel's noise (estimated from the first frame, see
:func:`~nanoro_optics.fusion.noise.estimate_noise`, or given as ``noise_dn``) -- the
"window-based activity" of Li et al. [2]_ in units of the noise energy -- plus a floor of
``noise_floor`` noise energies, plus ``inherit`` times the activity of the finer level
filtered by ``[1, 2, 1] / 4`` and decimated (so a coarse coefficient also answers to the
detail beneath it). The fused coefficient is the weighted mean of the frames' coefficients
with weights ``(a_k / max_j a_j) ** sharpness``:

* it is the plain maximum-activity selection of Burt & Kolczynski [1]_ as ``sharpness``
  grows (``sharpness=None`` selects exactly that: the hard rule);
* frames whose activity is close to the best one share the weight, so on a noisy stack the
  near-focus frames are averaged and their noise falls (a hard pick keeps the noise of one
  frame), and a flat region, where every frame measures the same noise energy, is averaged
  over the whole stack rather than turned into the noisiest frame's noise;
* activity in units of each channel's noise follows the data, not the container: 12-bit
  data in uint16 frames, a dim channel beside a bright one (fluorescence: nuclei in blue,
  puncta in red) and float frames of any scale are all measured against their own noise,
  and the floor sits at the noise, so dim detail above the noise is selected and the dark
  background below it is averaged. All channels share the weights (colour stays consistent);
* levels coarser than ``focus_levels`` measure no energy of their own and are blended with
  the activity inherited from the finer levels, as is the low-pass residual: the coarse
  content follows the frames that are sharp beneath it instead of the largest coarse
  coefficients, which, where frames differ in brightness or position at coarse scales,
  would pick contradictory frames level by level and overshoot (dark or bright bands);
* the window and the inherited activity act as the consistency filter: a coefficient's choice
  follows its neighbours and the finer scales, not the noise of a single coefficient;
* ``coarse_window_px`` sets another window from the third level on (scales of 4 px and
  more); 1 makes each coefficient there answer to its own energy (plus what it inherits),
  as in the max-abs rule, which keeps a sharp occluding edge's energy from spreading onto
  the background beside it. On the benchmark's 1024 px occlusion scene that gains 0.24 dB
  (with ``focus_levels=4``), but it loses 0.1-0.5 dB on 512 px scenes of the same kind and
  1.3 dB on the clean synthetic stack, so the default keeps one window for every level.

The collapsed image is finally kept inside the range the frames recorded at each pixel (see
:class:`~nanoro_optics.fusion.stack.StackFuser`).

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

from nanoro_optics._validation import check_bool, check_int, check_range

__all__ = ["FusionRule"]

#: smallest ``noise_floor`` (noise energies): a normal float32 whose inverse is finite
NOISE_FLOOR_MIN = 1e-12


@dataclass(frozen=True)
class FusionRule:
    """Options of the fusion rule (see the module docstring for what each one does).

    Parameters
    ----------
    sharpness : int or None, optional
        Exponent of the soft weights ``(a / a_max) ** sharpness``, 1 to 64; ``None`` is the hard
        maximum-activity rule (ties broken by the coefficient values, not by frame order).
    window_px : int, optional
        Side of the square window of the local energy at the two finest levels, odd, 1 to
        15 px (of that level).
    coarse_window_px : int or None, optional
        The same at the coarser measured levels (the third to the ``focus_levels``-th), odd,
        1 to 15 (1: each coefficient's own energy); None (default) uses ``window_px``.
    inherit : float, optional
        Weight of the finer level's activity in a level's activity, 0 to 100.
    min_confidence : float, optional
        Depth confidence (0 to 1) below which a pixel's own depth estimate is not used:
        it is filled from the confident pixels around it, or NaN with ``fill_depth=False``.
    focus_levels : int, optional
        Number of the finest band-pass levels whose own energy measures focus, 1 to 32;
        coarser levels follow them (default 3: scales up to about 8 px).
    noise_floor : float, optional
        Activity floor in units of the noise energy, ``1e-12`` to ``1e6``; larger values
        average more of the flat, noise-only regions and select less of the detail near
        the noise.
    fill_depth : bool, optional
        Fill the pixels of low depth confidence from their confident neighbours
        (:func:`~nanoro_optics.fusion.depth.fill_depth`; default), or leave them NaN.
    """

    sharpness: int | None = 4
    window_px: int = 5
    coarse_window_px: int | None = None
    inherit: float = 1.0
    min_confidence: float = 0.6
    focus_levels: int = 3
    noise_floor: float = 0.25
    fill_depth: bool = True

    def __post_init__(self) -> None:
        if self.sharpness is not None:
            object.__setattr__(self, "sharpness", check_int(self.sharpness, "sharpness", 1, 64))
        given = (
            ("window_px",) if self.coarse_window_px is None else ("window_px", "coarse_window_px")
        )
        for name in given:
            window = check_int(getattr(self, name), name, 1, 15)
            if window % 2 == 0:
                raise ValueError(f"{name} must be odd, got {window}")
            object.__setattr__(self, name, window)
        object.__setattr__(self, "inherit", check_range(self.inherit, "inherit", 0.0, 100.0))
        object.__setattr__(
            self, "min_confidence", check_range(self.min_confidence, "min_confidence", 0.0, 1.0)
        )
        object.__setattr__(
            self, "focus_levels", check_int(self.focus_levels, "focus_levels", 1, 32)
        )
        object.__setattr__(self, "fill_depth", check_bool(self.fill_depth, "fill_depth"))
        # (the kernels divide by the floor in float32: 1e-300 was 0 there, a numba
        # ZeroDivisionError; below 1e-12 noise energies it selects nothing more anyway)
        floor = check_range(self.noise_floor, "noise_floor", NOISE_FLOOR_MIN, 1e6)
        object.__setattr__(self, "noise_floor", floor)

    def window_at(self, level: int) -> int:
        """Return the activity window (px of that level) the rule uses at pyramid ``level``."""
        if level < 2 or self.coarse_window_px is None:
            return self.window_px
        return self.coarse_window_px

    def replace(self, **changes: Any) -> FusionRule:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)
