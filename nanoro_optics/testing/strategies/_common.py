"""What the strategies share: the unset-option marker, option coercion, scaled unit draws."""

from __future__ import annotations

from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

T = TypeVar("T")


class _Default:
    """Marker of an option left at its default (distinct from an explicit None)."""

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()


def _as_strategy(value: Any, default: SearchStrategy[T]) -> SearchStrategy[T]:
    """``default`` for an unset option, the value itself if it is a strategy, else ``just``."""
    if value is _DEFAULT:
        return default
    if isinstance(value, SearchStrategy):
        return value
    return st.just(value)


def _floats(lo: float, hi: float) -> SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# Strategies with bounds known only at draw time scale one prebuilt unit draw: building a
# new st.floats per example costs more than the rest of the example, and a unit draw
# shrinks to the lower bound all the same.
_UNIT = st.floats(0.0, 1.0)
_HALF_OPEN = st.floats(0.0, 0.5, exclude_max=True)
_SIGNED_UNIT = st.floats(-1.0, 1.0)


def _scaled(u: float, lo: float, hi: float) -> float:
    """``lo + u (hi - lo)`` for ``u`` in [0, 1], exactly ``hi`` at ``u = 1``."""
    if u >= 1.0:
        return hi
    return min(lo + u * (hi - lo), hi)


def _draw_between(draw: st.DrawFn, lo: float, hi: float, *, ends: bool = False) -> float:
    """Draw in ``[lo, hi]``; with ``ends``, each end comes up about a tenth of the time.

    A unit float is 0 in about a quarter of hypothesis' draws and 1 almost never; mirroring
    it on a coin flip shares those draws between the two ends. Shrinks to ``lo``.
    """
    u = draw(_UNIT)
    if ends and draw(st.booleans()):
        u = 1.0 - u
    return _scaled(u, lo, hi)
