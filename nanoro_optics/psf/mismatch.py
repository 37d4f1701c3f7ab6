"""The depth correction for an index-mismatched interface: stage z to height in the sample.

:class:`IndexMismatch` turns a depth map in nominal stage z (the z of best focus, as the
fuser gives it) into the actual height in the sample, with one of the axial scaling models of
:mod:`.scaling` (:func:`~nanoro_optics.psf.actual_depth_um`). The live MDA handler, the
fusion options (``FusionOptions.index_mismatch``), and through them the CLI, use it.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from nanoro_optics._validation import (
    INDEX_RANGE,
    as_float_array,
    check_choice,
    check_finite_real,
    check_positive,
    check_range,
)

from .scaling import SCALING_MODELS, actual_depth_um, axial_scaling_factor

__all__ = ["IndexMismatch"]


@dataclass(frozen=True)
class IndexMismatch:
    """Correct the depth map for the focal shift at an interface of mismatched index.

    Focusing through an interface from the immersion medium (index ``n_immersion``) into
    a sample of another index (``n_sample``) moves the focus by more or less than the
    stage: a focus at nominal depth ``d`` below the interface (stage travel) lies at the
    actual depth :func:`nanoro_optics.psf.actual_depth_um` ``(d)``. Stage z is taken to grow
    upwards, away from the sample, as in :class:`~nanoro_optics.hardware.SimulatedCamera`:
    a stage z below ``interface_um`` focuses at nominal depth ``interface_um - z``, which
    is moved to the actual height ``interface_um - actual_depth_um(interface_um - z)``;
    a stage z at or above the interface is left as it is.

    Parameters
    ----------
    interface_um : float
        Stage z (um) at which the focus lies on the interface (e.g. the cover glass's
        lower face for an immersion objective looking into an aqueous sample).
    na, n_immersion, n_sample : float
        Numerical aperture and the refractive indices of the immersion medium and the
        sample (as for :func:`~nanoro_optics.psf.actual_depth_um`; indices from 1 to
        5, ``INDEX_RANGE``).
    model : str, optional
        One of :data:`nanoro_optics.psf.SCALING_MODELS` (default ``"wave"``).
    wavelength_um : float, optional
        Vacuum wavelength (um); required by ``"loginov"`` and ``"wave"``.

    Notes
    -----
    :class:`~nanoro_optics.mmcore.LiveFusion` and the fusion (``FusionOptions.index_mismatch``)
    apply the correction to the z positions of a group's frames
    (the knots, with the interface when it lies inside the loop) and maps the nominal
    depth map through the piecewise-linear function they define, the way the depth map
    itself interpolates between the frames' z positions. For the constant-factor models
    this is the per-pixel ``actual_depth_um`` up to float32 rounding; for the
    depth-dependent ones (``"loginov"``, ``"wave"``) the factor is exact at the frames'
    planes and interpolated between them. (``"wave"`` costs a vectorial focus search,
    a few ms, per z position: once per distinct z-loop of a sequence, not per pixel.)

    Examples
    --------
    >>> im = IndexMismatch(interface_um=100.0, na=1.3, n_immersion=1.518, n_sample=1.33,
    ...                    model="carlsson")
    >>> im.actual_z_um([90.0, 100.0, 104.0]).round(3).tolist()
    [91.238, 100.0, 104.0]
    """

    interface_um: float
    na: float
    n_immersion: float
    n_sample: float
    model: str = "wave"
    wavelength_um: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "interface_um", check_finite_real(self.interface_um, "interface_um"))
        set_(self, "na", check_positive(self.na, "na"))
        for name in ("n_immersion", "n_sample"):  # finite depths for finite z
            set_(self, name, check_range(getattr(self, name), name, *INDEX_RANGE))
        check_choice(self.model, "model", SCALING_MODELS)
        depth_model = self.model in ("loginov", "wave")
        if self.wavelength_um is not None:
            set_(self, "wavelength_um", check_positive(self.wavelength_um, "wavelength_um"))
        elif depth_model:
            raise ValueError(f"model {self.model!r} needs wavelength_um, got None")
        # the indices and NA as the model needs them (the wave model's own focus search is
        # not run here: it checks NA < n_immersion, as the cheap Carlsson factor does)
        axial_scaling_factor(
            self.na,
            n_immersion=self.n_immersion,
            n_sample=self.n_sample,
            model="carlsson" if self.model == "wave" else self.model,
            nfp_um=1.0 if self.model == "loginov" else None,
            wavelength_um=self.wavelength_um if self.model == "loginov" else None,
        )

    def actual_z_um(self, z_um: Any) -> np.ndarray:
        """Return the actual heights (um, stage coordinates) focused at stage z ``z_um``.

        Parameters
        ----------
        z_um : array_like
            Finite nominal stage z positions (um).

        Returns
        -------
        numpy.ndarray
            float64, of ``z_um``'s shape.
        """
        z = np.array(as_float_array(z_um, "z_um"), dtype=np.float64)
        below = z < self.interface_um
        if np.any(below):
            nominal = self.interface_um - z[below]
            z[below] = self.interface_um - actual_depth_um(
                nominal,
                na=self.na,
                n_immersion=self.n_immersion,
                n_sample=self.n_sample,
                model=self.model,
                wavelength_um=self.wavelength_um,
            )
        return z

    def relabel(self, depth_um: Any, z_um: Any) -> np.ndarray:
        """Map a nominal depth map (um) of frames at ``z_um`` to actual heights (um).

        The correction is computed at the frames' z positions (and the interface, when
        it lies between them) and interpolated linearly between them; NaN stays NaN.

        Parameters
        ----------
        depth_um : array_like
            ``(H, W)`` nominal stage z of best focus (um), NaN where unknown.
        z_um : sequence of float
            The frames' nominal z positions (um), at least one.

        Returns
        -------
        numpy.ndarray
            float32 ``(H, W)``.
        """
        from ._mismatch_kernels import relabel

        raw = np.asarray(depth_um)
        if raw.dtype.kind not in "uif" or raw.ndim != 2:
            raise TypeError(
                f"depth_um must be a real (H, W) map, got shape {raw.shape} and dtype {raw.dtype}"
            )
        d = np.ascontiguousarray(raw, dtype=np.float32)
        if np.isinf(d).any():
            raise ValueError("depth_um has infinite values (NaN marks an unknown depth)")
        z = as_float_array(z_um, "z_um")
        if z.ndim != 1 or z.size == 0:
            raise ValueError(f"z_um must be a non-empty 1-D sequence, got shape {z.shape}")
        knots = np.unique(z)
        if knots[0] < self.interface_um < knots[-1]:  # the correction's kink
            knots = np.unique(np.append(knots, self.interface_um))
        if knots.size == 1:
            knots = np.array([knots[0], knots[0] + 1.0])  # one plane: a constant offset
        out = np.empty(d.shape, np.float32)
        relabel(d, knots, _actual_at(self, tuple(knots.tolist())), out)
        return out

    def settings(self) -> dict[str, Any]:
        """Return the correction's parameters (JSON-serialisable), as recorded in files."""
        return {**dataclasses.asdict(self), "function": "nanoro_optics.psf.actual_depth_um"}


@functools.lru_cache(maxsize=64)
def _actual_at(mismatch: IndexMismatch, knots: tuple[float, ...]) -> np.ndarray:
    """``mismatch.actual_z_um(knots)``, kept: time points repeat a position's z-loop."""
    out = mismatch.actual_z_um(np.asarray(knots))
    out.setflags(write=False)
    return out
