"""Typed protocols for the two devices a Z-scan needs: a focus (Z) stage and a camera.

The protocols are :func:`typing.runtime_checkable`, so ``isinstance(dev, ZStage)`` checks
that the members exist (not their signatures). Any object with these members works with
:func:`nanoro_optics.acquire.run_zscan`: the mock stage and simulated camera of this
package, the pymmcore-plus adapters, or a user's own driver wrapper. This module imports
nothing of the package.

Contract
--------
``ZStage``
    ``limits_um`` is the ``(lo, hi)`` travel range in um (``lo < hi``), larger values being
    further from the specimen (up). ``move_to_um(z_um, *, timeout_s=None)`` commands an
    absolute move; it raises :class:`~nanoro_optics.hardware.errors.StageLimitError` for a
    target outside ``limits_um`` and never clips. It may return before the move ends;
    ``wait_until_idle(timeout_s=None)`` blocks until motion and settling are over and raises
    :class:`~nanoro_optics.hardware.errors.StageTimeoutError` when ``timeout_s`` passes
    first. ``get_position_um()`` reads the measured position. ``stop()`` halts any motion
    at once and must be safe to call at any time, also after a fault.
``Camera``
    ``exposure_ms`` is the current exposure; ``set_exposure_ms(ms)`` changes it;
    ``snap(timeout_s=None)`` exposes one frame and returns it as a 2-D (grey) or
    ``(rows, cols, channels)`` (colour) numpy array, raising
    :class:`~nanoro_optics.hardware.errors.CameraError` on failure.

References
----------
.. [1] pymmcore-plus, ``CMMCorePlus.setPosition`` / ``waitForDevice`` / ``snap``,
   https://pymmcore-plus.github.io/pymmcore-plus/
.. [2] PEP 544, "Protocols: Structural subtyping (static duck typing)".
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Camera", "ZStage"]


@runtime_checkable
class ZStage(Protocol):
    """A focus drive moving along Z in micrometres (see the module's contract)."""

    @property
    def limits_um(self) -> tuple[float, float]:
        """Travel limits ``(lo, hi)`` in um."""
        ...

    def get_position_um(self) -> float:
        """Return the measured position in um."""
        ...

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        """Command an absolute move to ``z_um``; refuse (never clip) targets past a limit."""
        ...

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        """Block until the stage has stopped moving and settled."""
        ...

    def stop(self) -> None:
        """Halt any motion now."""
        ...


@runtime_checkable
class Camera(Protocol):
    """A camera that snaps single frames (see the module's contract)."""

    @property
    def exposure_ms(self) -> float:
        """Current exposure time in ms."""
        ...

    def set_exposure_ms(self, ms: float) -> None:
        """Set the exposure time in ms."""
        ...

    def snap(self, timeout_s: float | None = None) -> Any:
        """Expose and return one frame (2-D grey or 3-D colour numpy array)."""
        ...
