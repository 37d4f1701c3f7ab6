"""Autofocus test kit: a focus-curve camera, strategies, and a safety contract for searches.

==================================== =========================================================
:class:`FocusCurveCamera`            a fast camera whose frames blur with the distance from a
                                     known focus (a Gaussian-blurred texture plus noise), or
                                     show nothing (``contrast_dn=0``); it can fail on a snap
:func:`focus_curves`                 draws :class:`FocusCurveExample` (focus, width, contrast,
                                     noise) inside a search range; ``blank=True`` for fields
                                     with nothing to find
:func:`specimens`                    draws simulated specimens of the named kinds
                                     (:data:`~nanoro_optics.hardware.specimen_kinds.
                                     SPECIMEN_KINDS`) for :class:`~nanoro_optics.hardware.
                                     SimulatedCamera`
:func:`autofocus_scenarios`          a focus curve, a search range inside the stage limits, a
                                     start and a device fault (:class:`~nanoro_optics.testing.
                                     DeviceFault`)
:func:`check_autofocus_scenario`     runs a search on a scenario and asserts its safety rules
:func:`check_autofocus_contract`     the autofocus section of the contract suites: one
                                     scenario per misbehaviour, one report
==================================== =========================================================

The rules (:data:`AUTOFOCUS_CHECKS`): every position sent to the stage lies inside the
search range and the limits; after a stage fault the stage was stopped and not moved
again; every error carries what was measured (``err.curve`` or ``err.partial``); a
success leaves the stage at the focus it returns. They hold for
:func:`nanoro_optics.autofocus.find_focus` and
:func:`~nanoro_optics.autofocus.find_sample_range`, and any search of your own with the
signature ``search(stage, camera, *, search_um)`` can be checked the same way.

Examples
--------
>>> from functools import partial
>>> from nanoro_optics.autofocus import find_focus
>>> report = check_autofocus_contract(partial(find_focus, spacing_um=1.0), kinds=("fail",))
>>> report.ok
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .._validation import check_finite_real, check_int, check_interval, check_positive
from ..hardware.errors import CameraError
from ..hardware.mock_stage import MockZStage, SimulatedClock
from .contracts import ContractReport, _CheckFailed, _run_suite
from .strategies import DEVICE_FAULT_KINDS, DeviceFault

__all__ = [
    "AUTOFOCUS_CHECKS",
    "AutofocusScenario",
    "FocusCurveCamera",
    "FocusCurveExample",
    "autofocus_scenarios",
    "check_autofocus_contract",
    "check_autofocus_scenario",
    "focus_curves",
    "specimens",
]

#: The rules :func:`check_autofocus_scenario` asserts, by name.
AUTOFOCUS_CHECKS = ("inside_range", "stopped_after_stage_fault", "curve_on_error", "ends_at_focus")


def _true_position(stage: Any) -> float:
    """Where the carriage really is: a mock's own position (a reading may be faulty)."""
    if isinstance(stage, MockZStage):
        return stage._position_at(stage.clock.time())
    return float(stage.get_position_um())


class FocusCurveCamera:
    """A camera double whose frames are sharpest at ``focus_um`` (the ``Camera`` protocol).

    A fixed random texture is blurred by a Gaussian of ``0.5 + |z - focus_um| /
    width_um`` pixels (z the stage's true position), scaled to ``contrast_dn``, put on
    ``offset_dn`` and given Gaussian noise of ``noise_dn``, then rounded to ``dtype``.
    Cheap enough for thousands of searches.

    Parameters
    ----------
    stage : object with ``get_position_um()``
        The stage (a :class:`~nanoro_optics.hardware.MockZStage` is read without
        consuming its faulty readings).
    focus_um : float, keyword-only
        Where the frames are sharpest.
    width_um : float, keyword-only
        Defocus that widens the blur by one pixel (> 0).
    contrast_dn : float, keyword-only
        Standard deviation of the sharp texture (DN, >= 0; 0 is a blank field).
    noise_dn : float, keyword-only
        Noise standard deviation (DN, > 0).
    shape : (int, int), keyword-only
        Frame shape (default 48 x 48).
    dtype : numpy dtype, keyword-only
        uint16 (default) or float64.
    offset_dn : float, keyword-only
        Mean level (DN).
    fail_on_snap : int, keyword-only
        The k-th snap (1-based) raises :class:`~nanoro_optics.hardware.errors.CameraError`.
    seed : int, keyword-only
        Seed of the texture and the noise.

    Examples
    --------
    >>> stage = MockZStage(position_um=5.0)
    >>> cam = FocusCurveCamera(stage, focus_um=5.0, width_um=2.0)
    >>> cam.snap().shape, cam.snap_count
    ((48, 48), 1)
    """

    def __init__(
        self,
        stage: Any,
        *,
        focus_um: float,
        width_um: float = 2.0,
        contrast_dn: float = 200.0,
        noise_dn: float = 5.0,
        shape: tuple[int, int] = (48, 48),
        dtype: Any = np.uint16,
        offset_dn: float = 1000.0,
        fail_on_snap: int | None = None,
        seed: int = 0,
    ) -> None:
        if not callable(getattr(stage, "get_position_um", None)):
            raise TypeError(f"stage must have get_position_um(), got {type(stage).__name__}")
        self.stage = stage
        self.focus_um = check_finite_real(focus_um, "focus_um")
        self.width_um = check_positive(width_um, "width_um")
        self.contrast_dn = check_positive(contrast_dn, "contrast_dn", allow_zero=True)
        self.noise_dn = check_positive(noise_dn, "noise_dn")
        self.offset_dn = check_positive(offset_dn, "offset_dn", allow_zero=True)
        rows, cols = (check_int(n, "shape", 8) for n in shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.uint16), np.dtype(np.float64)):
            raise TypeError(f"dtype must be uint16 or float64, got {self.dtype}")
        self.fail_on_snap = None if fail_on_snap is None else check_int(fail_on_snap, "fail", 1)
        rng = np.random.default_rng(check_int(seed, "seed", 0))
        self._texture = rng.standard_normal((rows, cols))
        self._rng = rng
        self._exposure_ms = 1.0
        self.clock: SimulatedClock | None = getattr(stage, "clock", None)
        self.snap_count = 0

    @property
    def exposure_ms(self) -> float:
        """Current exposure in ms."""
        return self._exposure_ms

    def set_exposure_ms(self, ms: float) -> None:
        """Set the exposure (> 0)."""
        self._exposure_ms = check_positive(ms, "ms")

    def blur_px(self, z_um: float) -> float:
        """Blur (Gaussian sigma, px) of a frame taken at ``z_um``."""
        return 0.5 + abs(z_um - self.focus_um) / self.width_um

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        """Return a frame at the stage's true position.

        Raises
        ------
        CameraError
            On the snap chosen by ``fail_on_snap``.
        """
        from scipy import ndimage

        self.snap_count += 1
        if self.fail_on_snap == self.snap_count:
            raise CameraError(f"injected camera fault on snap {self.snap_count}")
        z = _true_position(self.stage)
        sharp = ndimage.gaussian_filter(self._texture, self.blur_px(z), mode="wrap")
        img = self.offset_dn + self.contrast_dn * sharp
        img = img + self._rng.normal(0.0, self.noise_dn, img.shape)
        if self.clock is not None:
            self.clock.advance(self._exposure_ms / 1000.0)
        if self.dtype.kind == "u":
            return np.clip(np.rint(img), 0, 65535).astype(np.uint16)
        return img


@dataclass(frozen=True)
class FocusCurveExample:
    """Parameters of a :class:`FocusCurveCamera` (see :func:`focus_curves`)."""

    focus_um: float
    width_um: float
    contrast_dn: float
    noise_dn: float
    seed: int = 0

    @property
    def blank(self) -> bool:
        """True when the field has nothing to focus on."""
        return self.contrast_dn == 0.0

    def make_camera(self, stage: Any, **options: Any) -> FocusCurveCamera:
        """Make the camera for ``stage`` (``options`` as :class:`FocusCurveCamera`)."""
        return FocusCurveCamera(
            stage,
            focus_um=self.focus_um,
            width_um=self.width_um,
            contrast_dn=self.contrast_dn,
            noise_dn=self.noise_dn,
            seed=self.seed,
            **options,
        )


def focus_curves(
    *, search_um: tuple[float, float] = (0.0, 100.0), blank: bool = False, margin: float = 0.2
) -> SearchStrategy[FocusCurveExample]:
    """Draw focus curves whose focus lies inside ``search_um`` (away from its edges).

    Widths 2 to 6 um (a search with ``spacing_um=1``, i.e. a 2 um depth of field, samples
    them well) and a sharp texture 10 to 60 times the noise (1 to 10 DN).

    Parameters
    ----------
    search_um : (float, float), keyword-only
        The range the focus lies in.
    blank : bool, keyword-only
        Draw blank fields (``contrast_dn = 0``) instead.
    margin : float, keyword-only
        Fraction of the range kept free at each end (0 <= margin < 0.5).

    Returns
    -------
    SearchStrategy[FocusCurveExample]
    """
    lo, hi = check_interval(search_um, "search_um")
    m = check_finite_real(margin, "margin")
    if not 0.0 <= m < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {m!r}")
    span = hi - lo
    snr = st.just(0.0) if blank else st.floats(10.0, 60.0)
    return st.builds(
        lambda focus, width, ratio, noise, seed: FocusCurveExample(
            focus, width, ratio * noise, noise, seed
        ),
        st.floats(lo + m * span, hi - m * span),
        st.floats(2.0, 6.0),
        snr,
        st.floats(1.0, 10.0),
        st.integers(0, 2**16),
    )


def specimens(
    *,
    kinds: Sequence[str] | None = None,
    shape: tuple[int, int] = (32, 32),
    relief_um: Any = None,
    base_um: Any = None,
) -> SearchStrategy[Any]:
    """Draw simulated specimens of the named kinds (for ``SimulatedCamera``).

    Parameters
    ----------
    kinds : sequence of str, keyword-only
        Kinds from :data:`~nanoro_optics.hardware.specimen_kinds.SPECIMEN_KINDS` (default
        all but "blank").
    shape : (int, int), keyword-only
        Frame shape.
    relief_um, base_um : float or strategy, keyword-only
        Relief (default 0 to 20 um) and lowest point (default 0 to 50 um).

    Returns
    -------
    SearchStrategy[Specimen]
    """
    from ..hardware.specimen_kinds import SPECIMEN_KINDS, specimen_of_kind

    chosen = tuple(k for k in SPECIMEN_KINDS if k != "blank") if kinds is None else tuple(kinds)
    bad = [k for k in chosen if k not in SPECIMEN_KINDS]
    if not chosen or bad:
        raise ValueError(f"kinds must be a non-empty subset of {SPECIMEN_KINDS}, got {kinds!r}")

    def strat(value: Any, default: SearchStrategy[float]) -> SearchStrategy[float]:
        if value is None:
            return default
        return value if isinstance(value, SearchStrategy) else st.just(value)

    return st.builds(
        lambda kind, relief, base, seed: specimen_of_kind(
            kind, shape, relief_um=relief, base_um=base, seed=seed
        ),
        st.sampled_from(chosen),
        strat(relief_um, st.floats(0.0, 20.0)),
        strat(base_um, st.floats(0.0, 50.0)),
        st.integers(0, 2**16),
    )


@dataclass(frozen=True)
class AutofocusScenario:
    """A search to run: devices, range, start and a fault (see :func:`autofocus_scenarios`)."""

    curve: FocusCurveExample
    fault: DeviceFault
    search_um: tuple[float, float]
    limits_um: tuple[float, float]
    start_um: float

    def make_devices(self) -> tuple[Any, FocusCurveCamera]:
        """Make the (misbehaving) stage and the camera."""
        stage = self.fault.make_stage(limits_um=self.limits_um, position_um=self.start_um)
        fail = self.fault.at if self.fault.kind == "camera" else None
        return stage, self.curve.make_camera(stage, fail_on_snap=fail)


@st.composite
def _scenarios(draw: st.DrawFn, kinds: tuple[str, ...], max_at: int) -> AutofocusScenario:
    lo = draw(st.floats(-50.0, 50.0))
    span = draw(st.floats(20.0, 80.0))
    search = (lo, lo + span)
    limits = (lo - draw(st.floats(0.0, 20.0)), lo + span + draw(st.floats(0.0, 20.0)))
    start = draw(st.floats(limits[0], limits[1]))
    blank = draw(st.booleans().map(lambda b: b and draw(st.integers(0, 4)) == 0))
    curve = draw(focus_curves(search_um=search, blank=blank))
    fault = draw(
        st.builds(
            DeviceFault,
            kind=st.sampled_from(kinds),
            at=st.integers(1, max_at),
            size=st.floats(0.05, 20.0),
        )
    )
    return AutofocusScenario(curve, fault, search, limits, start)


def autofocus_scenarios(
    *, kinds: Sequence[str] = DEVICE_FAULT_KINDS, max_at: int = 30
) -> SearchStrategy[AutofocusScenario]:
    """Draw searches with a misbehaving stage or camera (or none), one in five blank.

    Parameters
    ----------
    kinds : sequence of str, keyword-only
        Fault kinds from :data:`~nanoro_optics.testing.DEVICE_FAULT_KINDS`.
    max_at : int, keyword-only
        The fault strikes on a move, reading or snap in ``1..max_at``.

    Returns
    -------
    SearchStrategy[AutofocusScenario]
    """
    chosen = tuple(kinds)
    if not chosen or any(k not in DEVICE_FAULT_KINDS for k in chosen):
        raise ValueError(f"kinds must be a non-empty subset of {DEVICE_FAULT_KINDS}")
    return _scenarios(chosen, check_int(max_at, "max_at", 1))


def check_autofocus_scenario(
    search: Callable[..., Any], scenario: AutofocusScenario, *, timeout_s: float = 1.0
) -> Any:
    """Run ``search(stage, camera, search_um=..., timeout_s=...)`` and assert the rules.

    Parameters
    ----------
    search : callable
        E.g. ``functools.partial(find_focus, spacing_um=1.0)``.
    scenario : AutofocusScenario
        Devices, range and fault.
    timeout_s : float, keyword-only
        Passed to the search (a slow stage must be timed out).

    Returns
    -------
    object
        The search's result, or the exception it raised.

    Raises
    ------
    AssertionError
        Naming the broken rule (:data:`AUTOFOCUS_CHECKS`).
    """
    stage, camera = scenario.make_devices()
    lo, hi = scenario.search_um
    try:
        outcome: Any = search(stage, camera, search_um=scenario.search_um, timeout_s=timeout_s)
        error: BaseException | None = None
    except (Exception, KeyboardInterrupt) as exc:
        outcome, error = exc, exc
    sent = stage.commanded_um
    outside = [z for z in sent if not (lo <= z <= hi)]
    if outside:
        raise _CheckFailed(
            f"inside_range: {len(outside)} position(s) sent outside search_um {scenario.search_um}"
            f", first {outside[0]!r} um ({scenario})"
        )
    stops = [i for i, e in enumerate(stage.log) if e.kind == "stop"]
    if stops:
        after = [e for e in stage.log[stops[0] :] if e.kind == "move"]
        if after:
            raise _CheckFailed(
                f"stopped_after_stage_fault: {len(after)} move(s) after stop(), first to "
                f"{after[0].commanded_um!r} um ({scenario})"
            )
    if error is not None:
        if getattr(error, "stage_stopped", False) and not stops:
            raise _CheckFailed(
                f"stopped_after_stage_fault: the error says the stage was stopped but stop() "
                f"was never called ({scenario})"
            )
        if not (hasattr(error, "curve") or hasattr(error, "partial")) and not isinstance(
            error, (ValueError, TypeError)
        ):
            raise _CheckFailed(
                f"curve_on_error: {type(error).__name__} carries no curve: {error} ({scenario})"
            )
        if isinstance(error, ValueError) and not hasattr(error, "curve") and sent:
            raise _CheckFailed(
                f"curve_on_error: {type(error).__name__} after {len(sent)} move(s) carries no "
                f"curve: {error} ({scenario})"
            )
        return outcome
    z = getattr(outcome, "z_um", None)
    if z is not None and not math.isclose(_true_position(stage), z, abs_tol=0.5 * (hi - lo)):
        raise _CheckFailed(  # pragma: no cover - a gross error only
            f"ends_at_focus: the stage is at {_true_position(stage)!r} um, the focus {z!r} um"
        )
    if z is not None and stage.commanded_um[-1] != z:
        raise _CheckFailed(
            f"ends_at_focus: the last move went to {stage.commanded_um[-1]!r} um, not to the "
            f"returned focus {z!r} um ({scenario})"
        )
    return outcome


def check_autofocus_contract(
    search: Callable[..., Any],
    *,
    kinds: Sequence[str] = DEVICE_FAULT_KINDS,
    at: Sequence[int] = (1, 3, 7),
    raise_on_failure: bool = True,
) -> ContractReport:
    """Run a search against each misbehaving device and report the broken rules.

    For every fault kind and strike number ``at``, a focus 30 um into a 0..60 um search
    range, a 48 x 48 :class:`FocusCurveCamera` and the misbehaving mock stage of
    :class:`~nanoro_optics.testing.DeviceFault`; :func:`check_autofocus_scenario` asserts
    the rules.

    Parameters
    ----------
    search : callable
        ``search(stage, camera, *, search_um, timeout_s)``.
    kinds : sequence of str, keyword-only
        Fault kinds (default all of :data:`~nanoro_optics.testing.DEVICE_FAULT_KINDS`).
    at : sequence of int, keyword-only
        Moves/readings/snaps on which the fault strikes.
    raise_on_failure : bool, keyword-only
        Raise an AssertionError listing the failures (default) instead of returning them.

    Returns
    -------
    ContractReport
    """
    if not callable(search):
        raise TypeError(f"search must be callable, got {search!r}")
    names = tuple(f"{k}@{a}" for k in kinds for a in at)
    curve = FocusCurveExample(30.0, 2.0, 200.0, 5.0)

    def factory() -> Callable[..., Any]:
        return search

    def run_one(name: str, fn: Any) -> None:
        kind, a = name.split("@")
        fault = DeviceFault(kind=kind, at=int(a), size=5.0)
        check_autofocus_scenario(
            fn, AutofocusScenario(curve, fault, (0.0, 60.0), (-10.0, 100.0), 70.0)
        )

    return _run_suite("autofocus", factory, names, run_one, None, raise_on_failure)
