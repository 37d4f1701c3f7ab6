"""Beam-tilt-induced displacement (BTID) autofocus for transmission electron microscopes.

Two images taken with the beam tilted by ``-t`` and ``+t`` are displaced relative to each
other in proportion to the defocus (and the two-fold astigmatism); measuring that shift to a
small fraction of a pixel gives the defocus to a few nanometres.

========================================= ====================================================
:func:`measure_shift`                     sub-pixel shift by band-limited phase correlation
:func:`measure_triple_shot`               tilt -, +, - shift with constant drift cancelled
:func:`btid_displacement`                 the BTID model (defocus, astigmatism, coma, Cs)
:func:`simulate_tilt_pair`                simulated tilted image pairs and series
:class:`BeamTiltCalibration`              Leginon-style matrices; :func:`solve_defocus_stig`
:class:`FocusCalibrationCurve`            SerialEM-style displacement-vs-defocus curve
:func:`solve_btid_astigmatism`            focus and astigmatism from three tilt directions
========================================= ====================================================

Units: tilt in mrad (complex ``x + i y`` in the image frame), defocus and aberrations in um,
Cs in mm, pixel size in nm (``pixel_size_nm``), shifts in pixels ``(dy, dx)``.
"""

from __future__ import annotations

from .astigmatism import AstigmatismResult, solve_btid_astigmatism
from .correlation import ShiftResult, measure_shift
from .curve import (
    CurveComparison,
    FocusCalibrationCurve,
    extended_focus_levels,
    focus_levels,
)
from .leginon import BeamTiltCalibration, DefocusStigResult, solve_defocus_stig
from .model import (
    apparent_defocus,
    btid_displacement,
    defocus_error_budget,
    displacement_px,
    tilt_pair_displacement,
)
from .simulate import TiltPair, TiltSeries, simulate_tilt_pair, simulate_tilt_series
from .triple_shot import TripleShotResult, measure_triple_shot

__all__ = [
    "AstigmatismResult",
    "BeamTiltCalibration",
    "CurveComparison",
    "DefocusStigResult",
    "FocusCalibrationCurve",
    "ShiftResult",
    "TiltPair",
    "TiltSeries",
    "TripleShotResult",
    "apparent_defocus",
    "btid_displacement",
    "defocus_error_budget",
    "displacement_px",
    "extended_focus_levels",
    "focus_levels",
    "measure_shift",
    "measure_triple_shot",
    "simulate_tilt_pair",
    "simulate_tilt_series",
    "solve_btid_astigmatism",
    "solve_defocus_stig",
    "tilt_pair_displacement",
]
