"""Hypothesis strategies for nanoro_optics values: plans, objectives, stacks, faults, tilt pairs.

Every strategy draws only valid values by default, is built from ``st.builds`` /
``st.composite`` so failures shrink to simple examples (a preset objective, count 0, a
single frame, no fault, zero defocus), and takes keyword options that are either a fixed
value or a strategy, to pin a parameter or ask for edge cases::

    zscan_plans(count=0)                               # single-image plans
    zscan_plans(limits=lim, spacing_um=lim.max_spacing_um)   # spacing at its limit
    focus_stacks(n_frames=1)                           # single-frame stacks
    stage_faults(kinds=("fail",), max_move=1)          # a fault on the very first move

A value given explicitly is used as it is: a pinned option that contradicts ``limits``
(a count above ``limits.max_count``, say) gives plans that break those limits.
"""

from __future__ import annotations

from ._faults import (
    DEVICE_FAULT_KINDS,
    DeviceFault,
    StageFaultSchedule,
    device_faults,
    stage_faults,
)
from ._plans import (
    DEFAULT_SPACING_RANGE_UM,
    DEFAULT_START_RANGE_UM,
    objectives,
    zscan_limits,
    zscan_plans,
)
from ._stacks import FocusStackExample, focus_stacks
from ._tilt import beam_tilt_pairs

__all__ = [
    "DEFAULT_SPACING_RANGE_UM",
    "DEFAULT_START_RANGE_UM",
    "DEVICE_FAULT_KINDS",
    "DeviceFault",
    "FocusStackExample",
    "StageFaultSchedule",
    "beam_tilt_pairs",
    "device_faults",
    "focus_stacks",
    "objectives",
    "stage_faults",
    "zscan_limits",
    "zscan_plans",
]
