"""Autofocus: focus measures, best focus, the specimen's Z range, and the scan that covers it.

=================================== ===========================================================
:func:`focus_score`,                focus measures of a frame or of each tile of it, in units
:func:`tile_scores`                 of the frame's noise energy (noise alone scores 1):
                                    normalised variance, Brenner, Tenengrad, variance of
                                    Laplacian, an objective-sized band-pass (:mod:`.measures`)
:func:`find_focus`                  best focus with a bracketing sweep and a sub-step fit
:func:`find_sample_range`           the highest and lowest Z where part of the field is sharp
:func:`auto_zscan`                  range -> :func:`~nanoro_optics.zscan.plan_for_sample` ->
                                    :func:`~nanoro_optics.acquire.run_zscan`
:class:`FocusNotFoundError`         refusal (a ValueError): nothing above the noise, or a peak
                                    on an edge of the search range; carries the curve
:class:`FocusSearchError`           a device fault during a search; carries the curve
=================================== ===========================================================

The searches keep the executor's safety rules (see :mod:`.search`); the range and
:func:`auto_zscan` are in :mod:`.sample_range`.
"""

from __future__ import annotations

from .measures import MEASURES, FocusBand, focus_band, focus_score, frame_noise, tile_scores
from .sample_range import SampleRange, auto_zscan, find_sample_range
from .search import FocusCurve, FocusNotFoundError, FocusResult, FocusSearchError, find_focus

__all__ = [
    "MEASURES",
    "FocusBand",
    "FocusCurve",
    "FocusNotFoundError",
    "FocusResult",
    "FocusSearchError",
    "SampleRange",
    "auto_zscan",
    "find_focus",
    "find_sample_range",
    "focus_band",
    "focus_score",
    "frame_noise",
    "tile_scores",
]
