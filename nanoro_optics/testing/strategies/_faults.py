"""Strategies for stage and device faults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..._validation import check_positive
from ._common import (
    _DEFAULT,
    _as_strategy,
    _floats,
)

__all__ = [
    "DEVICE_FAULT_KINDS",
    "DeviceFault",
    "StageFaultSchedule",
    "device_faults",
    "stage_faults",
]


@dataclass(frozen=True)
class StageFaultSchedule:
    """When a :class:`~nanoro_optics.hardware.MockZStage` fails (see :func:`stage_faults`).

    Attributes
    ----------
    fail_on_move : int or None
        The k-th accepted move (1-based) raises ``StageFault`` and leaves the stage faulted.
    hang_on_move : int or None
        The k-th accepted move never ends: waiting for it raises ``StageTimeoutError``.
    hang_timeout_s : float
        Simulated time a wait without a timeout spends on a hung move.
    """

    fail_on_move: int | None = None
    hang_on_move: int | None = None
    hang_timeout_s: float = 30.0

    @property
    def first_fault_move(self) -> int | None:
        """The move on which the first fault strikes, or None for a healthy stage."""
        moves = [m for m in (self.fail_on_move, self.hang_on_move) if m is not None]
        return min(moves) if moves else None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~nanoro_optics.hardware.MockZStage` for the schedule."""
        return {
            "fail_on_move": self.fail_on_move,
            "hang_on_move": self.hang_on_move,
            "hang_timeout_s": self.hang_timeout_s,
        }

    def make_stage(self, **options: Any) -> Any:
        """Make a :class:`~nanoro_optics.hardware.MockZStage` with this schedule and ``options``."""
        from ...hardware import MockZStage

        return MockZStage(**options, **self.kwargs())


_FAULT_KINDS = ("none", "fail", "hang", "both")


def _check_count(value: Any, name: str) -> None:
    """Refuse anything but an int >= 1 (a 1-based move, reading or snap number)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_kinds(kinds: Sequence[str], known: tuple[str, ...]) -> tuple[str, ...]:
    """Return ``kinds`` as a tuple if it is a non-empty subset of ``known``."""
    chosen = tuple(kinds)
    if not chosen or any(k not in known for k in chosen):
        raise ValueError(f"kinds must be a non-empty subset of {known}, got {chosen!r}")
    return chosen


def stage_faults(
    *, max_move: int = 20, kinds: Sequence[str] = _FAULT_KINDS
) -> SearchStrategy[StageFaultSchedule]:
    """Draw fault schedules for the mock stage: a fault, a hang, both, or none.

    Parameters
    ----------
    max_move : int, keyword-only
        Faults strike on a move in ``1..max_move`` (default 20; a Z-scan of ``n`` images
        makes ``n`` or ``n + 1`` moves, plus one back to the start).
    kinds : sequence of str, keyword-only
        Which schedules to draw, from ``"none"`` (a healthy stage), ``"fail"``
        (``StageFault``), ``"hang"`` (``StageTimeoutError``) and ``"both"``. Failures shrink
        to the first kind listed, then to move 1.

    Returns
    -------
    SearchStrategy[StageFaultSchedule]

    Examples
    --------
    >>> from hypothesis import find
    >>> find(stage_faults(kinds=("fail",), max_move=1), lambda f: True)
    StageFaultSchedule(fail_on_move=1, hang_on_move=None, hang_timeout_s=30.0)
    """
    _check_count(max_move, "max_move")
    kinds = _check_kinds(kinds, _FAULT_KINDS)
    moves = st.integers(1, max_move)
    options = {
        "none": st.just(StageFaultSchedule()),
        "fail": st.builds(StageFaultSchedule, fail_on_move=moves),
        "hang": st.builds(StageFaultSchedule, hang_on_move=moves),
        "both": st.builds(StageFaultSchedule, fail_on_move=moves, hang_on_move=moves),
    }
    return st.one_of([options[k] for k in kinds])


#: Kinds of :class:`DeviceFault`: what goes wrong, and the double that does it.
DEVICE_FAULT_KINDS = (
    "none",  # a healthy mock stage
    "fail",  # move `at` raises StageFault (MockZStage(fail_on_move=at))
    "hang",  # move `at` never ends (MockZStage(hang_on_move=at))
    "nan",  # reading `at` is NaN (NaNReadingStage)
    "overshoot",  # move `at` ends `size` um below its target (OvershootingStage)
    "slow",  # move `at` takes `size` s longer and ignores timeouts (SlowStage)
    "settling",  # every wait returns `size` ms early (SettlingStage)
    "camera",  # snap `at` raises CameraError (BufferReusingCamera(fail_on_snap=at))
)
_STAGE_FAULT_KINDS = frozenset(DEVICE_FAULT_KINDS[1:-1])


@dataclass(frozen=True)
class DeviceFault:
    """One misbehaviour of the stage or the camera during a scan (see :func:`device_faults`).

    The camera is always a :class:`~nanoro_optics.testing.doubles.BufferReusingCamera`:
    reusing one buffer is how real cameras behave, not a fault.

    Attributes
    ----------
    kind : str
        One of :data:`DEVICE_FAULT_KINDS`.
    at : int
        Which move, reading or snap (1-based) goes wrong.
    size : float
        ``overshoot_um`` of an overshoot, ``delay_s`` of a slow move, ``idle_early_ms`` of
        a settling stage; unused otherwise.
    """

    kind: str = "none"
    at: int = 1
    size: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DEVICE_FAULT_KINDS:
            raise ValueError(f"kind must be one of {DEVICE_FAULT_KINDS}, got {self.kind!r}")
        _check_count(self.at, "at")
        check_positive(self.size, "size")

    @property
    def stage_fault(self) -> bool:
        """True when the stage misbehaves (every kind but "none" and "camera")."""
        return self.kind in _STAGE_FAULT_KINDS

    def make_stage(self, **options: Any) -> Any:
        """Make the (misbehaving) mock stage with these ``MockZStage`` options."""
        from ...hardware import MockZStage
        from .. import doubles

        k, size = self.kind, self.size
        if k == "fail":
            return MockZStage(fail_on_move=self.at, **options)
        if k == "hang":
            return MockZStage(hang_on_move=self.at, **options)
        if k == "nan":
            return doubles.NaNReadingStage(nan_on_read=self.at, **options)
        if k == "overshoot":
            return doubles.OvershootingStage(
                overshoot_um=size, overshoot_on_move=self.at, **options
            )
        if k == "slow":
            return doubles.SlowStage(delay_s=size, slow_on_move=self.at, **options)
        if k == "settling":
            return doubles.SettlingStage(idle_early_ms=size, **options)
        return MockZStage(**options)

    def make_camera(self, **options: Any) -> Any:
        """Make the buffer-reusing camera (failing on snap ``at`` for kind "camera")."""
        from ..doubles import BufferReusingCamera

        if self.kind == "camera":
            options["fail_on_snap"] = self.at
        return BufferReusingCamera(**options)


def device_faults(
    *,
    kinds: Sequence[str] = DEVICE_FAULT_KINDS,
    max_at: int = 20,
    size: Any = _DEFAULT,
) -> SearchStrategy[DeviceFault]:
    """Draw device misbehaviours for a scan (see :data:`DEVICE_FAULT_KINDS`).

    Failed, hung, NaN-reading, overshooting, slow or settling stages, a failing camera, or
    none; build the devices with :meth:`DeviceFault.make_stage` and
    :meth:`DeviceFault.make_camera`.

    Parameters
    ----------
    kinds : sequence of str, keyword-only
        Kinds to draw from :data:`DEVICE_FAULT_KINDS` (default all); failures shrink to the
        first listed, then to ``at=1`` and a simple ``size``.
    max_at : int, keyword-only
        The fault strikes at a move, reading or snap in ``1..max_at`` (default 20).
    size : float or strategy, keyword-only
        The fault's size (default: 0.05 to 20, see :class:`DeviceFault`).

    Returns
    -------
    SearchStrategy[DeviceFault]

    Examples
    --------
    >>> from hypothesis import find
    >>> find(device_faults(kinds=("overshoot",), max_at=3), lambda f: True)
    DeviceFault(kind='overshoot', at=1, size=1.0)
    """
    _check_count(max_at, "max_at")
    kinds = _check_kinds(kinds, DEVICE_FAULT_KINDS)
    return st.builds(
        DeviceFault,
        kind=st.sampled_from(kinds),
        at=st.integers(1, max_at),
        size=_as_strategy(size, _floats(0.05, 20.0)),
    )
