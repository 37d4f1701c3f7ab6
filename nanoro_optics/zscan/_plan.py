"""The Z-scan plan value: distance = spacing x count, the Compute buttons, positions."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._validation import (
    LENGTH_MAX_UM,
    check_choice,
    check_finite_real,
    check_int,
    check_positive,
)

if TYPE_CHECKING:
    from ._limits import ZScanLimits

__all__ = [
    "MAX_COUNT",
    "ROUNDING",
    "SYNC_RTOL",
    "PlanProblemsError",
    "Rounding",
    "ZScanPlan",
]

#: Largest step count a plan may have (100 images, the limit of Urwin 2021).
MAX_COUNT = 99

#: Relative tolerance of ``distance == spacing x count`` (see :attr:`ZScanPlan.synchronised`).
SYNC_RTOL = 1e-9

#: How a step count is rounded when distance / spacing is not a whole number.
Rounding = Literal["nearest", "cover", "extend"]
ROUNDING: tuple[str, ...] = ("nearest", "cover", "extend")


class PlanProblemsError(ValueError):
    """A plan that must not run was asked to run; ``problems`` lists why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("Z-scan plan cannot run: " + "; ".join(problems))


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _count_for(quotient: float, rounding: str, what: str) -> int:
    """Whole step count for ``distance / spacing == quotient`` under ``rounding``.

    "nearest" rounds half up (4.5 -> 5, the example of Urwin 2021). "cover" and "extend" round up,
    except that a quotient within float noise (``SYNC_RTOL``) of a whole number is that
    number, so ``0.3 / 0.1`` gives 3 steps, not 4.
    """
    if not math.isfinite(quotient) or quotient > MAX_COUNT + 1:
        raise ValueError(
            f"{what} needs {quotient:.6g} steps; the count must be <= {MAX_COUNT} "
            "(use a larger spacing or a shorter distance)"
        )
    nearest = math.floor(quotient + 0.5)
    if rounding == "nearest" or abs(quotient - nearest) <= SYNC_RTOL * max(1.0, quotient):
        count = nearest
    else:
        count = math.ceil(quotient)
    if count > MAX_COUNT:
        raise ValueError(
            f"{what} needs {count} steps ({rounding} rounding of {quotient:.6g}); the count "
            f"must be <= {MAX_COUNT} (use a larger spacing or a shorter distance)"
        )
    return count


@dataclass(frozen=True)
class ZScanPlan:
    """A focus-stacking Z scan: ``count`` steps of ``spacing_um`` over ``distance_um``.

    The three numbers of a Z-scan set-up (Urwin 2021 [1]_). Only two are independent
    (``distance = spacing x count``), but the value holds all three so that a plan can be
    *out of sync* exactly as a set-up can be after its count is rounded: such a plan
    is a legal value, :attr:`synchronised` is False and :meth:`problems` says so; it is
    refused by anything that runs it (:meth:`require_runnable`), as a set-up that is out
    of sync must not run.

    The scan runs top to bottom: the first image is ``distance_um`` above the start, then
    the stage moves down one spacing at a time and the last image is taken at the start.
    It never goes below the start, where the user placed the lens (Urwin 2021, "Physical
    movement of the Z stage").

    Parameters
    ----------
    distance_um : float
        Total Z travel in um, finite and >= 0.
    spacing_um : float
        Distance between consecutive images in um, finite and > 0.
    count : int
        Number of steps, 0..99 (:data:`MAX_COUNT`); ``image_count = count + 1``.
    start_um : float or None, keyword-only
        The lowest position (where the lens was placed) in um. None means "wherever the
        stage is when the scan starts"; positions are then relative to the start.

    Raises
    ------
    ValueError, TypeError
        For a negative, NaN or infinite distance, a NaN or infinite start, a spacing that is
        not > 0 and finite, or a count that is not an integer in 0..99. The message names
        the argument and value.

    Notes
    -----
    Limits that depend on the objective (the minimum and maximum spacing and distance of
    Urwin 2021) are not part of the value; :meth:`problems` checks them against a
    :class:`ZScanLimits`.

    References
    ----------
    .. [1] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021):
       the Distance / Spacing / Count set-up, how each is computed, limits and capture order.

    Examples
    --------
    The 40 um sample of Urwin (2021) with a 10 um depth of field, one step of margin at each end:

    >>> plan = ZScanPlan(60.0, 10.0, 6, start_um=-10.0)
    >>> plan.image_count, plan.synchronised
    (7, True)
    >>> plan.positions_um().tolist()
    [50.0, 40.0, 30.0, 20.0, 10.0, 0.0, -10.0]

    Rounding the count, 54 / 12 = 4.5 to 5, leaves the plan out of sync:

    >>> odd = ZScanPlan(54.0, 12.0, 1).compute_count()
    >>> odd.count, odd.synchronised
    (5, False)
    >>> odd.compute_spacing().spacing_um
    10.8
    """

    distance_um: float
    spacing_um: float
    count: int
    start_um: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "distance_um", check_positive(self.distance_um, "distance_um", allow_zero=True)
        )
        object.__setattr__(self, "spacing_um", check_positive(self.spacing_um, "spacing_um"))
        object.__setattr__(self, "count", check_int(self.count, "count", 0, MAX_COUNT))
        if self.start_um is not None:
            object.__setattr__(self, "start_um", check_finite_real(self.start_um, "start_um"))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_distance_spacing(
        cls,
        distance_um: float,
        spacing_um: float,
        *,
        rounding: Rounding = "cover",
        start_um: float | None = None,
    ) -> ZScanPlan:
        """Plan from a distance and a largest spacing; the count follows by ``rounding``.

        Parameters
        ----------
        distance_um : float
            Total Z travel in um (>= 0).
        spacing_um : float
            Requested spacing in um (> 0).
        rounding : {"cover", "extend", "nearest"}, keyword-only
            How to make a whole step count from ``distance / spacing`` (Urwin 2021: "move 5
            times instead of 4.5, then either increase the distance or lower the spacing"):

            - "cover" (default): round up and shrink the spacing to ``distance / count``, so
              the whole distance is covered and the spacing is never above the request.
            - "extend": round up and keep the spacing; the distance grows to
              ``spacing x count``.
            - "nearest": as the Count button of Urwin (2021): round half up and keep both
              numbers. The plan may be out of sync (:attr:`synchronised` False), which
              :meth:`problems` reports; follow with :meth:`compute_spacing` or
              :meth:`compute_distance`.

            A quotient within ``SYNC_RTOL`` of a whole number counts as that number.
        start_um : float or None, keyword-only
            Lowest position in um, or None for "where the stage is".

        Returns
        -------
        ZScanPlan

        Raises
        ------
        ValueError
            For bad values, or when the count would exceed 99.

        Examples
        --------
        >>> p = ZScanPlan.from_distance_spacing(54.0, 12.0)
        >>> p.count, p.spacing_um, p.distance_um
        (5, 10.8, 54.0)
        >>> ZScanPlan.from_distance_spacing(54.0, 12.0, rounding="extend").distance_um
        60.0
        """
        d = check_positive(distance_um, "distance_um", allow_zero=True)
        s = check_positive(spacing_um, "spacing_um")
        rounding = check_choice(rounding, "rounding", ROUNDING)  # type: ignore[assignment]
        count = _count_for(d / s, rounding, f"distance_um={d!r} at spacing_um={s!r}")
        if rounding == "nearest" or count == 0:
            return cls(d, s, count, start_um=start_um)
        if rounding == "extend":
            return cls(s * count, s, count, start_um=start_um)
        # float noise may put d / count one ulp above the request: never exceed it
        return cls(d, min(d / count, s), count, start_um=start_um)

    @classmethod
    def from_distance_count(
        cls, distance_um: float, count: int, *, start_um: float | None = None
    ) -> ZScanPlan:
        """Plan from a distance and a step count; spacing = distance / count.

        Raises
        ------
        ValueError
            For bad values, or ``count == 0`` or ``distance_um == 0`` (the spacing is then
            undefined or zero; use :meth:`from_spacing_count`).

        Examples
        --------
        >>> ZScanPlan.from_distance_count(6.0, 3).spacing_um
        2.0
        """
        d = check_positive(distance_um, "distance_um", allow_zero=True)
        n = check_int(count, "count", 0, MAX_COUNT)
        if n == 0 or d == 0:
            raise ValueError(
                f"the spacing is undefined for distance_um={d!r} and count={n}; "
                "give the spacing instead (ZScanPlan.from_spacing_count)"
            )
        if d / n == 0:  # (a subnormal distance)
            raise ValueError(f"distance_um={d!r} over count={n} steps gives a spacing of 0")
        return cls(d, d / n, n, start_um=start_um)

    @classmethod
    def from_spacing_count(
        cls, spacing_um: float, count: int, *, start_um: float | None = None
    ) -> ZScanPlan:
        """Plan from a spacing and a step count; distance = spacing x count.

        Examples
        --------
        >>> ZScanPlan.from_spacing_count(2.0, 3).distance_um
        6.0
        """
        s = check_positive(spacing_um, "spacing_um")
        if s > LENGTH_MAX_UM:
            raise ValueError(f"spacing_um must be <= {LENGTH_MAX_UM!r}, got {s!r}")
        n = check_int(count, "count", 0, MAX_COUNT)
        return cls(s * n, s, n, start_um=start_um)

    def replace(self, **changes: Any) -> ZScanPlan:
        """Return a copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ the Compute buttons

    def compute_distance(self) -> ZScanPlan:
        """Press the Distance button: distance = spacing x count (the result is synchronised)."""
        return self.replace(distance_um=self.spacing_um * self.count)

    def compute_spacing(self) -> ZScanPlan:
        """Press the Spacing button: spacing = distance / count (the result is synchronised).

        Raises
        ------
        ValueError
            When ``count == 0`` with a non-zero distance, or ``distance == 0`` with a
            non-zero count: no positive spacing makes those synchronised.
        """
        if self.count == 0:
            if self.synchronised:
                return self
            raise ValueError(
                f"cannot compute a spacing for count=0 and distance_um={self.distance_um!r}; "
                "set the count first (compute_count)"
            )
        spacing = self.distance_um / self.count
        if spacing == 0:  # a zero distance, or one that underflows when divided
            raise ValueError(
                f"cannot compute a spacing for distance_um={self.distance_um!r} and "
                f"count={self.count}: the spacing would be 0"
            )
        return self.replace(spacing_um=spacing)

    def compute_count(self) -> ZScanPlan:
        """Compute the count: distance / spacing rounded to the nearest integer.

        Halves round up (54 / 12 = 4.5 -> 5). The result may be out of sync; that is legal
        and reported by :attr:`synchronised` and :meth:`problems`, as in Urwin (2021).

        Raises
        ------
        ValueError
            When the rounded count would exceed 99.
        """
        q = self.distance_um / self.spacing_um
        what = f"distance_um={self.distance_um!r} at spacing_um={self.spacing_um!r}"
        return self.replace(count=_count_for(q, "nearest", what))

    # ------------------------------------------------------------------ derived values

    @property
    def image_count(self) -> int:
        """Number of images, ``count + 1``."""
        return self.count + 1

    @property
    def synchronised(self) -> bool:
        """Whether ``distance = spacing x count`` holds.

        The tolerance is relative: ``|distance - spacing x count| <= SYNC_RTOL x
        max(distance, spacing x count, spacing)`` with ``SYNC_RTOL = 1e-9``, i.e. agreement
        to nine significant digits (picometres for ordinary scans), which absorbs float
        rounding of the Compute buttons and nothing a stage could resolve.
        """
        product = self.spacing_um * self.count
        scale = max(self.distance_um, product, self.spacing_um)
        return abs(self.distance_um - product) <= SYNC_RTOL * scale

    @property
    def top_um(self) -> float | None:
        """Highest position (the first image) in um, or None when the start is not set."""
        if self.start_um is None:
            return None
        return self.start_um + self.count * self.spacing_um

    def problems(self, limits: ZScanLimits | None = None) -> list[str]:
        """List what stops this plan from running; empty when it may run.

        Parameters
        ----------
        limits : ZScanLimits, optional
            Objective-dependent limits (the spacing, distance and count limits of Urwin 2021).
            Without them only synchronisation is checked.

        Returns
        -------
        list of str
            One sentence per problem, naming the value and the limit it breaks.

        Examples
        --------
        >>> ZScanPlan(54.0, 12.0, 5).problems()
        ['out of sync: distance 54 um != spacing 12 um x count 5 = 60 um; use compute_distance() or compute_spacing()']
        """  # noqa: E501
        found: list[str] = []
        if not self.synchronised:
            found.append(
                f"out of sync: distance {_fmt(self.distance_um)} um != spacing "
                f"{_fmt(self.spacing_um)} um x count {self.count} = "
                f"{_fmt(self.spacing_um * self.count)} um; use compute_distance() or "
                "compute_spacing()"
            )
        if limits is not None:
            found.extend(limits.problems(self))
        return found

    def require_runnable(self, limits: ZScanLimits | None = None) -> ZScanPlan:
        """Return the plan if it has no :meth:`problems`, else raise naming them.

        Raises
        ------
        PlanProblemsError
            A ``ValueError`` whose ``problems`` attribute lists the problems.
        """
        found = self.problems(limits)
        if found:
            raise PlanProblemsError(found)
        return self

    def positions_um(self, start_um: float | None = None) -> np.ndarray:
        """Image positions in capture order: from the top down to the start.

        Position ``i`` (0-based) is ``start + (count - i) x spacing``, computed directly so
        no rounding accumulates: the first image is ``count x spacing`` (= the distance)
        above the start, each next one a spacing lower, the last exactly at the start and
        none below it.

        Parameters
        ----------
        start_um : float, optional
            The stage position where the scan starts, used when the plan's own
            ``start_um`` is None. If both are None the positions are relative to the start
            (start taken as 0). Giving a different value from the plan's own start is an
            error.

        Returns
        -------
        numpy.ndarray
            ``image_count`` float64 positions in um, strictly decreasing.

        Raises
        ------
        ValueError
            If the plan is out of sync (it must not run), if ``start_um`` contradicts the
            plan's start, or if the spacing is too small to tell positions apart at the
            start's magnitude in float64.

        Examples
        --------
        >>> ZScanPlan(5.0, 1.0, 5).positions_um(start_um=100.0).tolist()
        [105.0, 104.0, 103.0, 102.0, 101.0, 100.0]
        """
        if start_um is not None:
            start_um = check_finite_real(start_um, "start_um")
            if self.start_um is not None and start_um != self.start_um:
                raise ValueError(
                    f"start_um={start_um!r} contradicts the plan's start_um={self.start_um!r}; "
                    "give a start only for a plan whose start_um is None"
                )
        start = self.start_um if self.start_um is not None else (start_um or 0.0)
        if not self.synchronised:
            raise PlanProblemsError(self.problems())
        steps = np.arange(self.count, -1, -1, dtype=np.float64)
        positions = start + steps * self.spacing_um
        if self.count and not np.all(np.diff(positions) < 0):
            raise ValueError(
                f"spacing_um={self.spacing_um!r} is too small to separate positions near "
                f"start_um={start!r} in double precision"
            )
        return positions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary of the plan."""
        return {
            "distance_um": self.distance_um,
            "spacing_um": self.spacing_um,
            "count": self.count,
            "image_count": self.image_count,
            "start_um": self.start_um,
            "synchronised": self.synchronised,
        }

    # ------------------------------------------------------------------ useq-schema

    def to_useq(self, *, start_um: float | None = None) -> Any:
        """Export as a useq-schema Z plan (see :func:`nanoro_optics.zscan.to_useq`)."""
        from ._useq import to_useq

        return to_useq(self, start_um=start_um)

    @classmethod
    def from_useq(
        cls, zplan: Any, *, current_um: float | None = None, spacing_um: float | None = None
    ) -> ZScanPlan:
        """Build from a useq-schema Z plan (see :func:`nanoro_optics.zscan.from_useq`)."""
        from ._useq import from_useq

        return from_useq(zplan, current_um=current_um, spacing_um=spacing_um)
