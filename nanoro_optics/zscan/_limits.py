"""The Z-scan limits of Urwin (2021) for an objective, and the plan that covers a sample."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import optics
from .._validation import (
    LENGTH_MAX_UM,
    check_choice,
    check_int,
    check_positive,
    check_range,
)
from ._plan import MAX_COUNT, SYNC_RTOL, ZScanPlan, _count_for, _fmt

__all__ = ["ZScanLimits", "plan_for_sample", "resolve_objective"]


def _dof_at(
    objective: optics.Objective, n: float, wavelength_um: float, detector_um: float
) -> float:
    return float(
        optics.depth_of_field(
            objective.na,
            wavelength_um=wavelength_um,
            n=n,
            magnification=objective.magnification,
            detector_um=detector_um,
        )
    )


def resolve_objective(objective: optics.Objective | str) -> optics.Objective:
    """Return ``objective`` itself, or the preset of that name in :data:`optics.OBJECTIVES`.

    Parameters
    ----------
    objective : Objective or str
        An objective, or a preset name of :data:`nanoro_optics.optics.OBJECTIVES`.

    Returns
    -------
    Objective
        The objective.

    Raises
    ------
    ValueError
        An unknown preset name (the message lists the known ones).
    TypeError
        Neither an ``Objective`` nor a string.

    Examples
    --------
    >>> from nanoro_optics.zscan import resolve_objective
    >>> resolve_objective("Nikon MRP70101").name
    'Nikon MRP70101'
    """
    if isinstance(objective, optics.Objective):
        return objective
    if isinstance(objective, str):
        if objective not in optics.OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; known: {sorted(optics.OBJECTIVES)}")
        return optics.OBJECTIVES[objective]
    raise TypeError(
        f"objective must be an Objective or a preset name, got {type(objective).__name__} "
        f"{objective!r}"
    )


@dataclass(frozen=True)
class ZScanLimits:
    """Limits and defaults of a Z scan for one objective (Urwin 2021, "Defaults and Limits").

    Parameters
    ----------
    min_spacing_um, default_spacing_um, max_spacing_um : float
        Spacing limits in um, ``0 < min <= default <= max``.
    max_distance_um : float, optional
        Largest distance in um; default ``max_count x max_spacing_um``.
    default_distance_um : float, optional
        Default distance in um; default ``default_spacing_um``.
    min_count, default_count, max_count : int, keyword-only
        Step-count limits, ``0 <= min <= default <= max <= 99``; default 0, 1 and 99.
    description : str, keyword-only
        Where the limits come from (e.g. the objective), shown in problems.

    Examples
    --------
    >>> lim = ZScanLimits.for_objective("Nikon MRP70101")
    >>> round(lim.default_spacing_um, 3), round(lim.max_spacing_um, 3)
    (11.8, 17.818)
    >>> ZScanPlan(6.0, 0.6, 10).problems(lim)
    ['spacing 0.6 um is below the minimum 1.18 um (Nikon MRP70101)']
    """

    min_spacing_um: float
    default_spacing_um: float
    max_spacing_um: float
    max_distance_um: float | None = None
    default_distance_um: float | None = None
    min_count: int = field(default=0, kw_only=True)
    default_count: int = field(default=1, kw_only=True)
    max_count: int = field(default=MAX_COUNT, kw_only=True)
    description: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        lo = check_positive(self.min_spacing_um, "min_spacing_um")
        mid = check_positive(self.default_spacing_um, "default_spacing_um")
        hi = check_positive(self.max_spacing_um, "max_spacing_um")
        if not lo <= mid <= hi:
            raise ValueError(
                "spacing limits must satisfy min <= default <= max, got "
                f"min_spacing_um={lo!r}, default_spacing_um={mid!r}, max_spacing_um={hi!r}"
            )
        cmin = check_int(self.min_count, "min_count", 0, MAX_COUNT)
        cmax = check_int(self.max_count, "max_count", cmin, MAX_COUNT)
        cdef = check_int(self.default_count, "default_count", cmin)
        if cdef > cmax:
            raise ValueError(f"default_count={cdef} must be <= max_count={cmax}")
        dmax = (
            cmax * hi
            if self.max_distance_um is None
            else check_positive(self.max_distance_um, "max_distance_um", allow_zero=True)
        )
        ddef = (
            mid
            if self.default_distance_um is None
            else check_positive(self.default_distance_um, "default_distance_um", allow_zero=True)
        )
        if ddef > dmax:
            raise ValueError(f"default_distance_um={ddef!r} must be <= max_distance_um={dmax!r}")
        if not isinstance(self.description, str):
            raise TypeError(f"description must be a str, got {self.description!r}")
        for name, value in (
            ("min_spacing_um", lo),
            ("default_spacing_um", mid),
            ("max_spacing_um", hi),
            ("max_distance_um", dmax),
            ("default_distance_um", ddef),
            ("min_count", cmin),
            ("default_count", cdef),
            ("max_count", cmax),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def for_objective(
        cls,
        objective: optics.Objective | str,
        *,
        wavelength_um: float = optics.DEFAULT_WAVELENGTH_UM,
        detector_um: float = optics.DEFAULT_DETECTOR_UM,
    ) -> ZScanLimits:
        """Return the limits of Urwin (2021) for an objective.

        - default spacing: the total depth of field (:func:`nanoro_optics.optics.
          depth_of_field`, ``lambda0 n / NA^2 + n e / (M NA)``) of the objective used as a
          dry lens (n = 1.0);
        - maximum spacing: that of the equivalent oil lens, i.e. the same objective (same
          NA and magnification) with n = :data:`~nanoro_optics.optics.OIL_INDEX` (1.51);
        - minimum spacing: a tenth of the default;
        - default distance: the default spacing; maximum distance: 99 x the maximum spacing;
        - count 0..99, default 1.

        A lens with NA > 1 has no dry equivalent (NA cannot exceed n); its default spacing
        is then the depth of field in its own immersion medium. Likewise, the maximum is
        never below the default (a lens with NA > 1.51 keeps its own medium's value).

        Parameters
        ----------
        objective : Objective or str
            An :class:`~nanoro_optics.optics.Objective` or a key of
            :data:`~nanoro_optics.optics.OBJECTIVES`.
        wavelength_um, detector_um : float, keyword-only
            Vacuum wavelength and detector resolution of the depth-of-field formula
            (defaults 0.70 and 1.5 um, which reproduce the objective table,
            :data:`~nanoro_optics.optics.OBJECTIVES`).

        Returns
        -------
        ZScanLimits

        References
        ----------
        .. [1] Nikon MicroscopyU, "Depth of Field and Depth of Focus",
           https://www.microscopyu.com/microscopy-basics/depth-of-field-and-depth-of-focus
        .. [2] I. Urwin, "Nanoro Microscope Focus Stacking", rev. 1 (2021), "Defaults and
           Limits".
        """
        obj = resolve_objective(objective)
        lam = check_positive(wavelength_um, "wavelength_um")
        e = check_positive(detector_um, "detector_um")
        dry = 1.0 if obj.na <= 1.0 else obj.n_immersion
        default = _dof_at(obj, dry, lam, e)
        maximum = _dof_at(obj, optics.OIL_INDEX, lam, e) if obj.na <= optics.OIL_INDEX else 0.0
        return cls(
            default / 10.0,
            default,
            max(maximum, default),
            description=obj.name,
        )

    def default_plan(self, *, start_um: float | None = None) -> ZScanPlan:
        """Return the initial plan: default distance, spacing and count.

        It is synchronised for the defaults of Urwin (2021) (distance = spacing, count 1), and may
        not be for customised defaults.
        """
        assert self.default_distance_um is not None  # filled in __post_init__
        return ZScanPlan(
            self.default_distance_um, self.default_spacing_um, self.default_count, start_um=start_um
        )

    def problems(self, plan: ZScanPlan) -> list[str]:
        """List the limits ``plan`` breaks (synchronisation is :meth:`ZScanPlan.problems`)."""
        where = f" ({self.description})" if self.description else ""
        found: list[str] = []
        s = plan.spacing_um
        if s < self.min_spacing_um:
            found.append(
                f"spacing {_fmt(s)} um is below the minimum {_fmt(self.min_spacing_um)} um{where}"
            )
        if s > self.max_spacing_um:
            found.append(
                f"spacing {_fmt(s)} um is above the maximum {_fmt(self.max_spacing_um)} um{where}"
            )
        assert self.max_distance_um is not None
        if plan.distance_um > self.max_distance_um * (1.0 + SYNC_RTOL):
            found.append(
                f"distance {_fmt(plan.distance_um)} um is above the maximum "
                f"{_fmt(self.max_distance_um)} um{where}"
            )
        if not self.min_count <= plan.count <= self.max_count:
            found.append(f"count {plan.count} is outside {self.min_count}..{self.max_count}{where}")
        return found


def plan_for_sample(
    top_um: float,
    bottom_um: float,
    *,
    spacing_um: float | None = None,
    objective: optics.Objective | str | None = None,
    margin_steps: int = 1,
    rounding: str = "cover",
) -> ZScanPlan:
    """Plan a scan that covers a sample from below its bottom to above its top.

    The procedure of Urwin (2021) [1]_: focus on the top and the bottom of the item, cover the depth
    between them with images no further apart than the depth of field, and add
    ``margin_steps`` steps beyond each end so the stack goes into focus and out again.
    The plan starts ``margin_steps`` spacings below the bottom (its lowest position, where
    the scan ends) and runs top to bottom.

    Parameters
    ----------
    top_um, bottom_um : float
        Stage Z (um) focused on the top and on the bottom of the sample; ``top >= bottom``.
    spacing_um : float, optional
        Largest spacing allowed (um). Default: the default spacing of ``objective``
        (its depth of field as a dry lens, :meth:`ZScanLimits.for_objective`).
    objective : Objective or str, optional
        The objective in use. With ``spacing_um`` as well, the spacing must not exceed the
        objective's maximum spacing.
    margin_steps : int, keyword-only
        Extra steps below the bottom and above the top (>= 0; default 1).
    rounding : {"cover", "extend"}, keyword-only
        When the depth is not a whole number of spacings: "cover" (default) shrinks the
        spacing to ``depth / ceil(depth / spacing)``; "extend" keeps the spacing and
        spreads the extra distance equally below the bottom and above the top. Either way
        the spacing is never above ``spacing_um``. ("nearest" may exceed the spacing or
        leave part of the sample uncovered, so it is refused here.)

    Returns
    -------
    ZScanPlan
        A synchronised plan with ``start_um`` set. Its positions reach at least
        ``margin_steps`` spacings beyond both ends of the sample, up to float rounding and
        the count tolerance: a depth within ``SYNC_RTOL`` (1e-9) of a whole number of
        spacings counts as that number, so coverage may fall short by that fraction of a
        spacing.

    Raises
    ------
    ValueError
        For non-finite values, ``top_um < bottom_um``, a spacing that is not > 0 or is
        above the objective's maximum, neither spacing nor objective, or a sample that
        needs more than 99 steps.

    References
    ----------
    .. [1] I. Urwin, "Nanoro Microscope Focus Stacking", rev. 1 (2021), "What is Focus
       Stacking?" (worked examples) and "Count".

    Examples
    --------
    >>> p = plan_for_sample(40.0, 0.0, spacing_um=10.0)
    >>> p.start_um, p.distance_um, p.count, p.image_count
    (-10.0, 60.0, 6, 7)
    >>> plan_for_sample(40.0, 0.0, spacing_um=8.0).positions_um().tolist()
    [48.0, 40.0, 32.0, 24.0, 16.0, 8.0, 0.0, -8.0]
    """
    top = check_range(top_um, "top_um", -LENGTH_MAX_UM, LENGTH_MAX_UM)
    bottom = check_range(bottom_um, "bottom_um", -LENGTH_MAX_UM, LENGTH_MAX_UM)
    if top < bottom:
        raise ValueError(f"top_um={top!r} must be >= bottom_um={bottom!r}")
    margin = check_int(margin_steps, "margin_steps", 0, MAX_COUNT)
    rounding = check_choice(rounding, "rounding", ("cover", "extend"))
    if spacing_um is None and objective is None:
        raise ValueError("give spacing_um or objective (its depth of field sets the spacing)")
    if objective is not None:
        limits = ZScanLimits.for_objective(objective)
        if spacing_um is None:
            s = limits.default_spacing_um
        else:
            s = check_positive(spacing_um, "spacing_um")
            if s > limits.max_spacing_um:
                raise ValueError(
                    f"spacing_um={s!r} is above the maximum {limits.max_spacing_um!r} um for "
                    f"{limits.description}"
                )
    else:
        s = check_positive(spacing_um, "spacing_um")
    if s > LENGTH_MAX_UM:
        raise ValueError(f"spacing_um must be <= {LENGTH_MAX_UM!r}, got {s!r}")

    depth = top - bottom
    what = (
        f"a {depth:.6g} um deep sample (top_um={top!r}, bottom_um={bottom!r}) at spacing_um={s!r}"
    )
    steps = _count_for(depth / s, rounding, what)
    count = steps + 2 * margin
    if count > MAX_COUNT:
        raise ValueError(
            f"{what} needs {steps} steps plus 2 x margin_steps={margin}, {count} in all; the "
            f"count must be <= {MAX_COUNT} (use a larger spacing)"
        )
    if rounding == "cover" and steps > 0:
        spacing = min(depth / steps, s)
        start = bottom - margin * spacing
    else:
        spacing = s
        start = bottom - margin * spacing - (steps * spacing - depth) / 2.0
    if not math.isfinite(start):  # pragma: no cover - finite inputs of sane size
        raise ValueError(f"start position overflowed for top_um={top!r}, bottom_um={bottom!r}")
    return ZScanPlan(count * spacing, spacing, count, start_um=start)
