"""Z-scan plans for focus stacking: distance = spacing x count, limits, positions, useq.

The focus-stacking procedure of Urwin (2021) [1]_ sets a scan up with three numbers, of
which only two are independent: the distance the stage travels, the spacing between images
and the count of steps (images = count + 1). :class:`ZScanPlan` holds the three as a frozen
value with methods that compute one from the other two; :class:`ZScanLimits` holds the
objective-dependent defaults and limits; :func:`plan_for_sample` follows that procedure from
the top and bottom of a sample. Scans run top to bottom and never go below the start.

Also here: SerialEM-style focus-range sampling (:func:`focus_levels`,
:func:`extended_focus_levels`) and interchange with useq-schema Z plans
(:func:`to_useq`, :func:`from_useq`, and :func:`check_mda_sequence` for a whole
``useq.MDASequence``; these need the ``useq`` extra). :func:`resolve_objective` turns a
preset name into its :class:`~nanoro_optics.optics.Objective`.

References
----------
.. [1] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021).
.. [2] SerialEM help, Calibration menu, "Set Focus Range" and "Extended Autofocus",
   https://bio3d.colorado.edu/SerialEM/hlp/html/menu_calibration.htm
.. [3] useq-schema, https://pymmcore-plus.github.io/useq-schema/
"""

from __future__ import annotations

from ._levels import ExtendedFocusLevels, extended_focus_levels, focus_levels
from ._limits import ZScanLimits, plan_for_sample, resolve_objective
from ._plan import MAX_COUNT, ROUNDING, SYNC_RTOL, PlanProblemsError, Rounding, ZScanPlan
from ._useq import EVEN_RTOL, check_mda_sequence, from_useq, to_useq

__all__ = [
    "EVEN_RTOL",
    "MAX_COUNT",
    "ROUNDING",
    "SYNC_RTOL",
    "ExtendedFocusLevels",
    "PlanProblemsError",
    "Rounding",
    "ZScanLimits",
    "ZScanPlan",
    "check_mda_sequence",
    "extended_focus_levels",
    "focus_levels",
    "from_useq",
    "plan_for_sample",
    "resolve_objective",
    "to_useq",
]
