"""Small guards for public arguments.

Every guard raises :class:`ValueError` or :class:`TypeError` with a message that names the
argument, the offending value and the limit it broke. Nothing here clips or coerces a value
silently: a caller gets the number it passed or an error.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "INDEX_RANGE",
    "LENGTH_MAX_UM",
    "NA_MIN",
    "WAVELENGTH_RANGE_UM",
    "as_float_array",
    "as_float_array_in",
    "check_choice",
    "check_finite_real",
    "check_int",
    "check_positive",
    "check_range",
    "return_like",
]


#: Ranges of the optical arguments that the formulas accept. Outside them the results
#: overflow or underflow float64 (``depth_of_field(na=5e-324)`` was inf) or describe no
#: light microscope: numerical apertures from 0.001 (and at most the medium's index),
#: refractive indices from 1 (vacuum) to 5 (beyond germanium in the infrared), vacuum
#: wavelengths from 10 nm (extreme UV) to 100 um (far infrared).
NA_MIN = 1e-3
INDEX_RANGE = (1.0, 5.0)
WAVELENGTH_RANGE_UM = (0.01, 100.0)
#: Largest distance (um) a formula takes: 1 km, so that squares of ratios of lengths stay
#: far inside float64.
LENGTH_MAX_UM = 1e9


def _describe(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item()) if arr.dtype.kind in "biufc" else repr(value)
    return f"array of shape {arr.shape}"


def _first_bad(arr: np.ndarray, bad: np.ndarray) -> str:
    """Describe the first element of ``arr`` flagged by ``bad``."""
    if arr.ndim == 0:
        return repr(float(arr))
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"{float(arr[idx])!r} at index {idx}"


def as_float_array(
    value: npt.ArrayLike,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    allow_nan: bool = False,
    allow_inf: bool = False,
) -> np.ndarray:
    """Convert ``value`` to a float64 array and check it element-wise.

    Parameters
    ----------
    value : array_like
        A real scalar or array.
    name : str
        The argument's name, used in error messages.
    positive, nonnegative : bool, optional
        Require every element > 0 (or >= 0).
    allow_nan, allow_inf : bool, optional
        Accept NaN (or +-inf) elements. Both are refused by default.

    Returns
    -------
    numpy.ndarray
        A float64 array (0-d for a scalar input).

    Raises
    ------
    TypeError
        If ``value`` is not real-valued numeric data (bool, complex, strings, objects).
    ValueError
        If an element is NaN, infinite, or breaks the sign requirement.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got bool {value!r}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged sequences and the like
        raise TypeError(f"{name} must be a real number or array, got {value!r}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must be a real number or array of real numbers, got dtype {arr.dtype} "
            f"({_describe(value)})"
        )
    arr = arr.astype(np.float64, copy=False)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got an array of shape {arr.shape}")
    if not allow_nan:
        bad = np.isnan(arr)
        if bad.any():
            raise ValueError(f"{name} must not be NaN, got {_first_bad(arr, bad)}")
    if not allow_inf:
        bad = np.isinf(arr)
        if bad.any():
            raise ValueError(f"{name} must be finite, got {_first_bad(arr, bad)}")
    if positive:
        bad = ~(arr > 0) & ~np.isnan(arr)
        if bad.any():
            raise ValueError(f"{name} must be > 0, got {_first_bad(arr, bad)}")
    if nonnegative:
        bad = ~(arr >= 0) & ~np.isnan(arr)
        if bad.any():
            raise ValueError(f"{name} must be >= 0, got {_first_bad(arr, bad)}")
    return arr


def as_float_array_in(
    value: npt.ArrayLike, name: str, lo: float, hi: float, what: str = ""
) -> np.ndarray:
    """:func:`as_float_array` with every element inside ``[lo, hi]`` (``what`` says why)."""
    arr = as_float_array(value, name)
    bad = (arr < lo) | (arr > hi)
    if bad.any():
        why = f" ({what})" if what else ""
        raise ValueError(f"{name} must be within [{lo!r}, {hi!r}]{why}, got {_first_bad(arr, bad)}")
    return arr


def check_finite_real(value: Any, name: str) -> float:
    """Return ``value`` as a finite Python float, or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out!r}")
    return out


def check_interval(value: Any, name: str) -> tuple[float, float]:
    """Return a pair ``(lo, hi)`` of finite floats with ``lo < hi``, or raise naming ``name``."""
    try:
        lo_raw, hi_raw = value
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a pair (lo, hi), got {value!r}") from exc
    lo = check_finite_real(lo_raw, f"{name}[0]")
    hi = check_finite_real(hi_raw, f"{name}[1]")
    if not lo < hi:
        raise ValueError(f"{name} must satisfy lo < hi, got {value!r}")
    return lo, hi


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float that is > 0 (>= 0 with ``allow_zero``)."""
    out = check_finite_real(value, name)
    if allow_zero and out < 0:
        raise ValueError(f"{name} must be >= 0, got {out!r}")
    if not allow_zero and out <= 0:
        raise ValueError(f"{name} must be > 0, got {out!r}")
    return out


def check_range(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_inclusive: bool = True,
    hi_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float inside ``[lo, hi]`` (ends as requested)."""
    out = check_finite_real(value, name)
    if lo is not None and (out < lo or (not lo_inclusive and out == lo)):
        op = ">=" if lo_inclusive else ">"
        raise ValueError(f"{name} must be {op} {lo!r}, got {out!r}")
    if hi is not None and (out > hi or (not hi_inclusive and out == hi)):
        op = "<=" if hi_inclusive else "<"
        raise ValueError(f"{name} must be {op} {hi!r}, got {out!r}")
    return out


def check_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as an int inside ``[lo, hi]``; floats and bools are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    out = int(value)
    if lo is not None and out < lo:
        raise ValueError(f"{name} must be >= {lo}, got {out}")
    if hi is not None and out > hi:
        raise ValueError(f"{name} must be <= {hi}, got {out}")
    return out


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a bool; anything but a Python or numpy bool is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming the options."""
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {options!r}, got {value!r}")
    return str(value)


def return_like(result: np.ndarray, *inputs: Any) -> Any:
    """Return a Python float when every input was a scalar, else the array.

    This gives the ufunc convention: scalars in, scalar out; arrays in, arrays out.
    """
    if all(np.ndim(x) == 0 and not isinstance(x, np.ndarray) for x in inputs):
        return float(result)
    return result
