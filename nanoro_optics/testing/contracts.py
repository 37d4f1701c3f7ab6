"""Behavioural conformance suites for Z-stage and camera drivers.

:func:`check_zstage_contract` and :func:`check_camera_contract` run a driver through the
behaviour :func:`nanoro_optics.acquire.run_zscan` relies on (the contract in
:mod:`nanoro_optics.hardware.protocols`) and raise one :class:`AssertionError` listing
every broken rule with an explanation. Call them from your own pytest with a factory that
returns your driver::

    from nanoro_optics.testing import check_zstage_contract

    def test_my_stage_follows_the_contract():
        check_zstage_contract(lambda: MyStage(port="COM3"), step_um=0.5, tolerance_um=0.05)

Each check gets a fresh object from the factory (``factory()``), reads the position it
starts from, and moves the stage back there at the end. The suites do not sleep: waits
are the driver's own ``wait_until_idle`` (a mock on a simulated clock takes no real
time).

What the stage suite does to real hardware
------------------------------------------
All moves go *up* from the position the stage is in when a check starts (away from the
specimen, like a Z-scan), by at most ``max(step_um, stop_move_um)``, and end with a
move back to that position. Three further commands target ``limit_margin_um`` above the
upper limit, NaN and +infinity; a conforming driver refuses them without moving, but a
driver that *clips* will travel to its upper limit, so leave room above the objective.
Commands below the start (and beyond the lower limit) are sent only with
``allow_below_start=True``, which is for mocks and test benches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_positive
from ..hardware.errors import StageLimitError, StageTimeoutError
from ..hardware.protocols import Camera, ZStage
from .assertions import assert_stack_consistent

__all__ = [
    "CAMERA_CHECKS",
    "ZSTAGE_CHECKS",
    "ContractReport",
    "check_camera_contract",
    "check_zstage_contract",
]

#: Checks of :func:`check_zstage_contract`, in the order they run.
ZSTAGE_CHECKS = (
    "protocol",
    "position_after_move",
    "refuses_out_of_limits",
    "refuses_non_finite",
    "wait_and_timeout",
    "stop",
)
#: Checks of :func:`check_camera_contract`, in the order they run.
CAMERA_CHECKS = ("protocol", "exposure", "refuses_bad_exposure", "snap")


@dataclass(frozen=True)
class ContractReport:
    """Outcome of a contract suite.

    Attributes
    ----------
    subject : str
        What was checked (the type name of the factory's product).
    passed : tuple of str
        Names of the checks that passed.
    failed : tuple of (str, str)
        ``(check, explanation)`` of every failed check.
    """

    subject: str
    passed: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.failed

    def message(self) -> str:
        """Readable summary: one paragraph per failed check."""
        total = len(self.passed) + len(self.failed)
        if self.ok:
            return f"{self.subject}: all {total} checks passed ({', '.join(self.passed)})"
        lines = [f"{self.subject}: {len(self.failed)} of {total} checks failed"]
        lines += [f"  - {name}: {why}" for name, why in self.failed]
        if self.passed:
            lines.append(f"  passed: {', '.join(self.passed)}")
        return "\n".join(lines)


class _CheckFailed(AssertionError):
    """A broken rule, with the explanation shown in the report."""


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; any exception becomes a check failure naming the call."""
    try:
        return fn(*args, **kwargs)
    except _CheckFailed:
        raise
    except Exception as exc:
        raise _CheckFailed(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _um(value: float) -> str:
    return f"{value:.6g} um"


def _select(checks: Iterable[str] | None, known: tuple[str, ...]) -> tuple[str, ...]:
    if checks is None:
        return known
    chosen = tuple(checks)
    bad = [c for c in chosen if c not in known]
    if bad:
        raise ValueError(f"unknown check(s) {bad}; choose from {known}")
    return tuple(c for c in known if c in chosen)


def _run_suite(
    kind: str,
    factory: Callable[[], Any],
    names: tuple[str, ...],
    run_one: Callable[[str, Any], None],
    restore: Callable[[Any], None] | None,
    raise_on_failure: bool,
) -> ContractReport:
    if not callable(factory):
        raise TypeError(f"the factory must be callable (returning a fresh {kind}), got {factory!r}")
    passed: list[str] = []
    failed: list[tuple[str, str]] = []
    subject = kind
    for name in names:
        try:
            device = factory()
        except Exception as exc:
            failed.append((name, f"the factory raised {type(exc).__name__}: {exc}"))
            continue
        subject = f"{kind} contract for {type(device).__name__}"
        why: str | None = None
        try:
            run_one(name, device)
        except _CheckFailed as exc:
            why = str(exc)
        except Exception as exc:  # a bug in the driver the check did not anticipate
            why = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            if restore is not None:
                try:
                    restore(device)
                except _CheckFailed as exc:
                    why = (why + "; then " if why else "") + str(exc)
        if why is None:
            passed.append(name)
        else:
            failed.append((name, why))
    report = ContractReport(subject, tuple(passed), tuple(failed))
    if raise_on_failure and not report.ok:
        raise AssertionError(report.message())
    return report


# ------------------------------------------------------------------------------ Z stage


@dataclass(frozen=True)
class _StageOptions:
    step_um: float
    tolerance_um: float
    stop_move_um: float
    limit_margin_um: float
    timeout_s: float
    allow_below_start: bool


class _StageChecks:
    """The stage checks; ``home`` is the position the stage had when the check began."""

    def __init__(self, stage: Any, opts: _StageOptions) -> None:
        self.stage = stage
        self.o = opts
        self.home: float | None = None

    # -- helpers ------------------------------------------------------------------------
    def position(self, when: str) -> float:
        z = _call(f"get_position_um() {when}", self.stage.get_position_um)
        if isinstance(z, bool) or not isinstance(z, (int, float, np.integer, np.floating)):
            raise _CheckFailed(
                f"get_position_um() {when} returned {type(z).__name__} {z!r}, not a number"
            )
        if not math.isfinite(float(z)):
            raise _CheckFailed(f"get_position_um() {when} returned {z!r}, not a finite number")
        return float(z)

    def limits(self) -> tuple[float, float]:
        try:
            raw = self.stage.limits_um
            lo, hi = (float(v) for v in raw)
        except Exception as exc:
            raise _CheckFailed(
                f"limits_um must be a pair of numbers (lo, hi), reading it gave "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise _CheckFailed(f"limits_um must be finite with lo < hi, got {raw!r}")
        return lo, hi

    def move(self, z: float) -> float:
        """Move to ``z``, wait, and return the position read afterwards."""
        t = self.o.timeout_s
        _call(f"move_to_um({z!r}, timeout_s={t!r})", self.stage.move_to_um, z, timeout_s=t)
        _call(
            f"wait_until_idle(timeout_s={t!r}) after a move to {_um(z)}",
            self.stage.wait_until_idle,
            timeout_s=t,
        )
        return self.position(f"after a move to {_um(z)}")

    def up(self, distance: float) -> float:
        """Return a target ``distance`` above home (or below, if allowed and needed)."""
        assert self.home is not None
        lo, hi = self.limits()
        if self.home + distance <= hi:
            return self.home + distance
        if self.o.allow_below_start and self.home - distance >= lo:
            return self.home - distance
        raise _CheckFailed(
            f"cannot test: the stage at {_um(self.home)} is less than {_um(distance)} below "
            f"its upper limit {_um(hi)}; start lower or pass a smaller step_um/stop_move_um"
        )

    def expect_at(self, z: float, target: float, what: str) -> None:
        if abs(z - target) > self.o.tolerance_um:
            raise _CheckFailed(
                f"{what}, get_position_um() reported {_um(z)}, {_um(abs(z - target))} from "
                f"the target {_um(target)} (tolerance {_um(self.o.tolerance_um)}): the "
                "reported position is stale or the stage did not go where it was sent"
            )

    # -- checks -------------------------------------------------------------------------
    def protocol(self) -> None:
        members = ("limits_um", "get_position_um", "move_to_um", "wait_until_idle", "stop")
        missing = [m for m in members if not hasattr(self.stage, m)]
        if missing or not isinstance(self.stage, ZStage):
            raise _CheckFailed(f"does not follow the ZStage protocol; missing {missing}")
        lo, hi = self.limits()
        z = self.position("at the start")
        tol = self.o.tolerance_um
        if not lo - tol <= z <= hi + tol:
            raise _CheckFailed(f"the position {_um(z)} is outside limits_um ({lo!r}, {hi!r})")
        t = self.o.timeout_s
        _call(f"wait_until_idle(timeout_s={t!r}) on an idle stage", self.stage.wait_until_idle,
              timeout_s=t)  # fmt: skip
        again = self.position("after waiting on an idle stage")
        if abs(again - z) > tol:
            raise _CheckFailed(
                f"an idle stage moved from {_um(z)} to {_um(again)} while nothing was commanded"
            )

    def position_after_move(self) -> None:
        assert self.home is not None
        s = self.o.step_um
        for target in (self.up(s), self.up(0.5 * s), self.home):
            z = self.move(target)
            self.expect_at(z, target, f"after move_to_um({target!r}) and wait_until_idle()")

    def _refused(self, z: float, why: str, expected: tuple[type[BaseException], ...]) -> None:
        before = self.position(f"before move_to_um({z!r})")
        t = self.o.timeout_s
        try:
            self.stage.move_to_um(z, timeout_s=t)
        except expected:
            pass
        except Exception as exc:
            names = " or ".join(e.__name__ for e in expected)
            raise _CheckFailed(
                f"move_to_um({z!r}) ({why}) raised {type(exc).__name__}: {exc}; it must raise "
                f"{names}"
            ) from exc
        else:
            try:
                self.stage.wait_until_idle(timeout_s=t)
                after = f"; the stage then reported {_um(self.position('after it'))}"
            except _CheckFailed:
                raise
            except Exception as exc:
                after = f"; waiting afterwards raised {type(exc).__name__}: {exc}"
            names = " or ".join(e.__name__ for e in expected)
            raise _CheckFailed(
                f"move_to_um({z!r}) ({why}) was accepted{after}. A driver must refuse such a "
                f"target with {names} before moving, never clip it to the limit"
            )
        _call(f"wait_until_idle(timeout_s={t!r}) after a refused move", self.stage.wait_until_idle,
              timeout_s=t)  # fmt: skip
        after_z = self.position(f"after the refused move_to_um({z!r})")
        if abs(after_z - before) > self.o.tolerance_um:
            raise _CheckFailed(
                f"move_to_um({z!r}) ({why}) was refused but the stage moved from {_um(before)} "
                f"to {_um(after_z)}"
            )

    def refuses_out_of_limits(self) -> None:
        lo, hi = self.limits()
        m = self.o.limit_margin_um
        self._refused(hi + m, f"{_um(m)} above the upper limit {_um(hi)}", (StageLimitError,))
        if self.o.allow_below_start:
            self._refused(lo - m, f"{_um(m)} below the lower limit {_um(lo)}", (StageLimitError,))

    def refuses_non_finite(self) -> None:
        for z in (math.nan, math.inf, -math.inf):
            if z < 0 and not self.o.allow_below_start:
                continue
            self._refused(z, "not a finite position", (ValueError, TypeError))

    def wait_and_timeout(self) -> None:
        target = self.up(self.o.step_um)
        t = self.o.timeout_s
        _call(f"move_to_um({target!r}, timeout_s={t!r})", self.stage.move_to_um, target,
              timeout_s=t)  # fmt: skip
        try:
            self.stage.wait_until_idle(timeout_s=0.0)
        except StageTimeoutError:
            pass  # still moving: the honest answer
        except Exception as exc:
            raise _CheckFailed(
                f"wait_until_idle(timeout_s=0.0) right after a move raised "
                f"{type(exc).__name__}: {exc}; a wait that runs out of time must raise "
                "StageTimeoutError (a TimeoutError)"
            ) from exc
        else:
            z = self.position("after wait_until_idle(timeout_s=0.0) returned")
            if abs(z - target) > self.o.tolerance_um:
                raise _CheckFailed(
                    f"wait_until_idle(timeout_s=0.0) returned while the stage was at {_um(z)}, "
                    f"{_um(abs(z - target))} from its target {_um(target)}: a wait must not "
                    "return before the move ends; it must raise StageTimeoutError instead"
                )
        _call(f"wait_until_idle(timeout_s={t!r}) after a timed-out wait",
              self.stage.wait_until_idle, timeout_s=t)  # fmt: skip
        z = self.position("after the move finished")
        self.expect_at(z, target, "after a timed-out wait and a full wait_until_idle()")

    def stop(self) -> None:
        assert self.home is not None
        t = self.o.timeout_s
        before = self.position("before stop() on an idle stage")
        _call("stop() on an idle stage", self.stage.stop)
        _call(f"wait_until_idle(timeout_s={t!r}) after stop()", self.stage.wait_until_idle,
              timeout_s=t)  # fmt: skip
        z = self.position("after stop() on an idle stage")
        if abs(z - before) > self.o.tolerance_um:
            raise _CheckFailed(f"stop() on an idle stage moved it from {_um(before)} to {_um(z)}")

        far = self.up(self.o.stop_move_um)
        _call(f"move_to_um({far!r}, timeout_s={t!r})", self.stage.move_to_um, far, timeout_s=t)
        at_stop = self.position("right after the move command")
        _call("stop() during a move", self.stage.stop)
        _call(f"wait_until_idle(timeout_s={t!r}) after stop()", self.stage.wait_until_idle,
              timeout_s=t)  # fmt: skip
        end = self.position("after stop() and wait_until_idle()")
        tol = self.o.tolerance_um
        low, high = min(self.home, far) - tol, max(self.home, far) + tol
        if not low <= end <= high:
            raise _CheckFailed(
                f"after stop() during a move from {_um(self.home)} to {_um(far)} the stage "
                f"ended at {_um(end)}, outside the path of the move"
            )
        if abs(at_stop - far) > tol and abs(end - far) <= tol:
            raise _CheckFailed(
                f"stop() was called while the stage was at {_um(at_stop)}, "
                f"{_um(abs(far - at_stop))} short of its target {_um(far)}, yet it ended at the "
                "target: stop() did not halt the move"
            )
        again = self.position("a second time after stop()")
        if abs(again - end) > tol:
            raise _CheckFailed(
                f"after stop() and wait_until_idle() the stage kept moving, from {_um(end)} to "
                f"{_um(again)}"
            )
        z = self.move(self.home)
        self.expect_at(z, self.home, "a move after stop() must work again; after it")


def check_zstage_contract(
    stage_factory: Callable[[], Any],
    *,
    step_um: float = 1.0,
    tolerance_um: float = 0.1,
    stop_move_um: float | None = None,
    limit_margin_um: float = 1.0,
    timeout_s: float = 10.0,
    allow_below_start: bool = False,
    checks: Iterable[str] | None = None,
    raise_on_failure: bool = True,
) -> ContractReport:
    """Run a Z-stage driver through the ZStage contract; raise listing every broken rule.

    =========================== =================================================================
    check                       rule
    =========================== =================================================================
    ``protocol``                has the ZStage members; ``limits_um`` a finite pair ``lo < hi``;
                                the position is finite, inside the limits and steady at rest;
                                ``wait_until_idle`` returns at once on an idle stage
    ``position_after_move``     after ``move_to_um(z)`` and ``wait_until_idle()`` the position
                                reads ``z`` (within ``tolerance_um``), for three targets in turn:
                                no stale readings
    ``refuses_out_of_limits``   a target ``limit_margin_um`` past the upper limit (and the lower
                                one with ``allow_below_start``) raises ``StageLimitError`` and the
                                stage does not move: refused, not clipped
    ``refuses_non_finite``      NaN and infinite targets raise ``ValueError``/``TypeError``, no
                                motion
    ``wait_and_timeout``        ``wait_until_idle(timeout_s=0)`` right after a move either raises
                                ``StageTimeoutError`` or returns with the move over; a full wait
                                then ends at the target
    ``stop``                    ``stop()`` is safe at rest; during a move it halts the stage short
                                of the target (when the stage was not already there), on the
                                path, and it stays put; moves work again afterwards
    =========================== =================================================================

    Parameters
    ----------
    stage_factory : callable
        ``stage_factory()`` returns the stage to check; called once per check.
    step_um : float, keyword-only
        Size of the test moves (> 0; default 1 um).
    tolerance_um : float, keyword-only
        How far a reported position may be from the target (>= 0; default 0.1 um). Use at
        least the stage's repeatability plus its backlash.
    stop_move_um : float, keyword-only
        Length of the move that ``stop()`` interrupts; default ``10 x step_um``. It should be
        longer than the stage's stopping distance.
    limit_margin_um : float, keyword-only
        How far past a limit the refused targets are (> 0; default 1 um).
    timeout_s : float, keyword-only
        Timeout passed to every move and wait (> 0; default 10 s).
    allow_below_start : bool, keyword-only
        Also send targets below the start position (the lower-limit refusal, -inf). Off by
        default: on a microscope, below is towards the specimen.
    checks : iterable of str, keyword-only
        Run only these checks (names in :data:`ZSTAGE_CHECKS`).
    raise_on_failure : bool, keyword-only
        Raise when a check fails (default); else return the report.

    Returns
    -------
    ContractReport
        The names of the checks that passed (and failed, without ``raise_on_failure``).

    Raises
    ------
    AssertionError
        One for the whole suite, listing every failed check with an explanation.
    ValueError, TypeError
        For bad options.

    Notes
    -----
    See the module documentation for what the suite does to real hardware: every move is
    small and upward from where the stage is, and the stage is sent back there after each
    check.

    Examples
    --------
    >>> from nanoro_optics.hardware import MockZStage
    >>> report = check_zstage_contract(lambda: MockZStage(limits_um=(0.0, 100.0)))
    >>> report.ok, len(report.passed)
    (True, 6)
    """
    names = _select(checks, ZSTAGE_CHECKS)
    step = check_positive(step_um, "step_um")
    opts = _StageOptions(
        step_um=step,
        tolerance_um=check_positive(tolerance_um, "tolerance_um", allow_zero=True),
        stop_move_um=(
            10.0 * step if stop_move_um is None else check_positive(stop_move_um, "stop_move_um")
        ),
        limit_margin_um=check_positive(limit_margin_um, "limit_margin_um"),
        timeout_s=check_positive(timeout_s, "timeout_s"),
        allow_below_start=bool(allow_below_start),
    )
    runners: dict[int, _StageChecks] = {}

    def run_one(name: str, stage: Any) -> None:
        checker = _StageChecks(stage, opts)
        runners[id(stage)] = checker
        if name != "protocol":
            if not isinstance(stage, ZStage):
                raise _CheckFailed("does not follow the ZStage protocol (see the protocol check)")
            checker.home = checker.position("at the start of the check")
        else:
            checker.home = None
        getattr(checker, name)()

    def restore(stage: Any) -> None:
        checker = runners.pop(id(stage), None)
        if checker is None or checker.home is None:
            return
        home = checker.home
        try:
            stage.move_to_um(home, timeout_s=opts.timeout_s)
            stage.wait_until_idle(timeout_s=opts.timeout_s)
        except Exception as exc:
            raise _CheckFailed(
                f"returning to the start position {_um(home)} failed ({type(exc).__name__}: {exc})"
            ) from exc

    return _run_suite("ZStage", stage_factory, names, run_one, restore, raise_on_failure)


# ------------------------------------------------------------------------------ camera


@dataclass(frozen=True)
class _CameraOptions:
    n_snaps: int
    timeout_s: float
    exposure_rtol: float


def _camera_protocol(cam: Any, o: _CameraOptions) -> None:
    members = ("exposure_ms", "set_exposure_ms", "snap")
    missing = [m for m in members if not hasattr(cam, m)]
    if missing or not isinstance(cam, Camera):
        raise _CheckFailed(f"does not follow the Camera protocol; missing {missing}")
    _exposure(cam)


def _exposure(cam: Any) -> float:
    try:
        e = cam.exposure_ms
    except Exception as exc:
        raise _CheckFailed(f"reading exposure_ms raised {type(exc).__name__}: {exc}") from exc
    if isinstance(e, bool) or not isinstance(e, (int, float, np.integer, np.floating)):
        raise _CheckFailed(f"exposure_ms is {type(e).__name__} {e!r}, not a number")
    if not (math.isfinite(float(e)) and e > 0):
        raise _CheckFailed(f"exposure_ms is {e!r}; it must be finite and > 0")
    return float(e)


def _camera_exposure(cam: Any, o: _CameraOptions) -> None:
    e0 = _exposure(cam)
    try:
        for new in (2.0 * e0, e0):
            _call(f"set_exposure_ms({new!r})", cam.set_exposure_ms, new)
            got = _exposure(cam)
            if abs(got - new) > o.exposure_rtol * new:
                raise _CheckFailed(
                    f"after set_exposure_ms({new!r}) exposure_ms reads {got!r} (relative "
                    f"tolerance {o.exposure_rtol!r}): the setting did not take"
                )
    finally:
        try:
            cam.set_exposure_ms(e0)
        except Exception:  # restoring is best effort; the failure above is the news
            pass


def _camera_refuses_bad_exposure(cam: Any, o: _CameraOptions) -> None:
    e0 = _exposure(cam)
    for bad in (0.0, -1.0, math.nan, math.inf):
        try:
            cam.set_exposure_ms(bad)
        except (ValueError, TypeError):
            pass
        except Exception as exc:
            raise _CheckFailed(
                f"set_exposure_ms({bad!r}) raised {type(exc).__name__}: {exc}; it must raise "
                "ValueError"
            ) from exc
        else:
            got = _exposure_or_text(cam)
            try:
                cam.set_exposure_ms(e0)
            except Exception:
                pass
            raise _CheckFailed(
                f"set_exposure_ms({bad!r}) was accepted (exposure_ms now reads {got}); a bad "
                "exposure must raise ValueError, not be clipped or passed on"
            )
        got_e = _exposure(cam)
        if got_e != e0:
            raise _CheckFailed(
                f"the refused set_exposure_ms({bad!r}) changed exposure_ms from {e0!r} to {got_e!r}"
            )


def _exposure_or_text(cam: Any) -> str:
    try:
        return repr(cam.exposure_ms)
    except Exception as exc:
        return f"<{type(exc).__name__}: {exc}>"


def _camera_snap(cam: Any, o: _CameraOptions) -> None:
    t = o.timeout_s
    frames = [_call("snap()", cam.snap)]
    for k in range(1, o.n_snaps):
        frames.append(_call(f"snap(timeout_s={t!r}) (snap {k + 1})", cam.snap, timeout_s=t))
    before = [np.array(f, copy=True) if isinstance(f, np.ndarray) else f for f in frames]
    try:
        assert_stack_consistent(frames)
    except AssertionError as exc:
        raise _CheckFailed(
            f"{o.n_snaps} snaps must be fresh numpy arrays of one shape and dtype: {exc}"
        ) from exc
    # a later snap must not write into an earlier frame (a driver reusing a buffer through
    # a view that hides the sharing, e.g. a copy-on-read cache)
    _call("snap() (one more)", cam.snap, timeout_s=t)
    for k, (f, b) in enumerate(zip(frames, before, strict=True)):
        if not np.array_equal(f, b, equal_nan=f.dtype.kind == "f"):
            raise _CheckFailed(f"frame {k} changed after a later snap(): the driver reuses memory")


_CAMERA_RUNNERS: dict[str, Callable[[Any, _CameraOptions], None]] = {
    "protocol": _camera_protocol,
    "exposure": _camera_exposure,
    "refuses_bad_exposure": _camera_refuses_bad_exposure,
    "snap": _camera_snap,
}


def check_camera_contract(
    camera_factory: Callable[[], Any],
    *,
    n_snaps: int = 3,
    timeout_s: float = 10.0,
    exposure_rtol: float = 0.05,
    checks: Iterable[str] | None = None,
    raise_on_failure: bool = True,
) -> ContractReport:
    """Run a camera driver through the Camera contract; raise listing every broken rule.

    ========================= ==================================================================
    check                     rule
    ========================= ==================================================================
    ``protocol``              has the Camera members; ``exposure_ms`` is finite and > 0
    ``exposure``              ``set_exposure_ms(x)`` then ``exposure_ms`` reads ``x`` (within
                              ``exposure_rtol``: cameras quantise exposure); restored after
    ``refuses_bad_exposure``  0, -1, NaN and infinity raise ``ValueError`` (or ``TypeError``)
                              and leave the exposure unchanged
    ``snap``                  ``snap()`` and ``snap(timeout_s=...)`` return ``n_snaps`` fresh
                              numpy arrays: 2-D or ``(rows, cols, 1|3|4)``, of one shape and one
                              integer or float dtype, finite, sharing no memory, and not
                              changed by a later snap
    ========================= ==================================================================

    Parameters
    ----------
    camera_factory : callable
        ``camera_factory()`` returns the camera to check; called once per check.
    n_snaps : int, keyword-only
        Frames taken by the ``snap`` check (>= 2; default 3), plus one more.
    timeout_s : float, keyword-only
        Timeout passed to ``snap`` (> 0; default 10 s).
    exposure_rtol : float, keyword-only
        Relative tolerance of the exposure read back (>= 0; default 0.05).
    checks : iterable of str, keyword-only
        Run only these checks (names in :data:`CAMERA_CHECKS`).
    raise_on_failure : bool, keyword-only
        Raise when a check fails (default); else return the report.

    Returns
    -------
    ContractReport

    Raises
    ------
    AssertionError
        One for the whole suite, listing every failed check with an explanation.

    Notes
    -----
    On real hardware the suite takes ``n_snaps + 1`` frames at the camera's current
    exposure and twice that exposure, changes the exposure and puts it back.

    Examples
    --------
    >>> from nanoro_optics.hardware import MockZStage, SimulatedCamera, Specimen
    >>> spec = Specimen.synthetic((16, 16))
    >>> check_camera_contract(lambda: SimulatedCamera(MockZStage(), spec)).ok
    True
    """
    names = _select(checks, CAMERA_CHECKS)
    if isinstance(n_snaps, bool) or not isinstance(n_snaps, int) or n_snaps < 2:
        raise ValueError(f"n_snaps must be an int >= 2, got {n_snaps!r}")
    opts = _CameraOptions(
        n_snaps=n_snaps,
        timeout_s=check_positive(timeout_s, "timeout_s"),
        exposure_rtol=check_positive(exposure_rtol, "exposure_rtol", allow_zero=True),
    )

    def run_one(name: str, cam: Any) -> None:
        if name != "protocol" and not isinstance(cam, Camera):
            raise _CheckFailed("does not follow the Camera protocol (see the protocol check)")
        _CAMERA_RUNNERS[name](cam, opts)

    return _run_suite("Camera", camera_factory, names, run_one, None, raise_on_failure)
