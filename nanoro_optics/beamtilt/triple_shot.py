"""Drift-immune beam-tilt shift from three shots at tilt -, +, - (SerialEM's autofocus).

References
----------
.. [1] D. N. Mastronarde, SerialEM help, "Autofocus" (three shots so that constant drift
   cancels; shift and drift reported in unbinned pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .correlation import ShiftResult, measure_shift

__all__ = ["TripleShotResult", "measure_triple_shot"]


@dataclass(frozen=True)
class TripleShotResult:
    """Outcome of :func:`measure_triple_shot`.

    Attributes
    ----------
    shift_px : tuple of float
        Beam-tilt-induced shift of the ``+`` image relative to the ``-`` images,
        ``(p1 - p2) / 2`` (px), free of constant drift.
    drift_px : tuple of float
        Drift per shot interval, ``(p1 + p2) / 2`` (px).
    first, second : ShiftResult
        ``p1`` = shift from shot 1 to shot 2, ``p2`` = shift from shot 2 to shot 3.
    reliable : bool
        Both correlations reliable.
    """

    shift_px: tuple[float, float]
    drift_px: tuple[float, float]
    first: ShiftResult
    second: ShiftResult
    reliable: bool


def measure_triple_shot(
    first: npt.ArrayLike,
    second: npt.ArrayLike,
    third: npt.ArrayLike,
    **options: Any,
) -> TripleShotResult:
    """Drift-immune beam-tilt shift from three shots at tilt ``-t``, ``+t``, ``-t``.

    With constant drift ``delta`` per shot interval and tilt-induced shift ``S`` of the
    ``+t`` image relative to the ``-t`` images, ``p1 = shift(first -> second) = S + delta``
    and ``p2 = shift(second -> third) = -S + delta``, so ``S = (p1 - p2) / 2`` and
    ``delta = (p1 + p2) / 2`` (SerialEM's autofocus [1]_).

    Parameters
    ----------
    first, second, third : array_like
        The three images, taken in this order at tilt ``-t``, ``+t``, ``-t``.
    **options
        Keyword options passed to :func:`measure_shift`.

    Returns
    -------
    TripleShotResult
        Shift and drift per interval (px), both correlations, and a reliability flag.

    References
    ----------
    SerialEM help, "Autofocus" (module reference [1]_).
    """
    from .correlation import _check_image

    for image, name in ((first, "first"), (second, "second"), (third, "third")):
        _check_image(image, name)  # (measure_shift names them reference and moving)
    r1 = measure_shift(first, second, **options)
    r2 = measure_shift(second, third, **options)
    p1 = np.asarray(r1.shift_px)
    p2 = np.asarray(r2.shift_px)
    s = (p1 - p2) / 2.0
    d = (p1 + p2) / 2.0
    return TripleShotResult(
        shift_px=(float(s[0]), float(s[1])),
        drift_px=(float(d[0]), float(d[1])),
        first=r1,
        second=r2,
        reliable=r1.reliable and r2.reliable,
    )
