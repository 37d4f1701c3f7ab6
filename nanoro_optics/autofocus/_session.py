"""The safe motion and capture of a focus search: one place that moves the stage and snaps.

Every search of :mod:`nanoro_optics.autofocus` goes through :class:`_Session`, which keeps
the executor's rules through its public safe-motion layer
(:class:`~nanoro_optics.acquire.MotionGuard`, :class:`~nanoro_optics.acquire.ReadingCheck`):
the search range is checked against the stage limits before anything moves, every commanded
position (an overshoot included) is inside the search range and the limits, every device
call has a deadline of ``timeout_s`` kept in real time (and moves on the stage's clock too),
each reading is checked after every move, the overshoot's included (finite, inside the
limits, not below the bottom of the search range, close to the commanded position), each
frame is copied and checked against the first (NaN frames refused), a stage fault stops
the stage and moves it no more, and every error carries the focus curve measured so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..acquire import MotionGuard, ReadingCheck
from ..hardware.errors import (
    AcquisitionError,
    AcquisitionInterrupted,
    StageLimitError,
    StagePositionError,
)
from .measures import (
    FocusBand,
    _as_frame,
    _energy_maps,
    _grey,
    _tile_means,
    frame_noise,
    noise_threshold,
)

__all__: list[str] = []


@dataclass(frozen=True, eq=False)
class FocusCurve:
    """The frames of a focus search, in capture order, and their focus scores.

    Attributes
    ----------
    commanded_um, z_um : numpy.ndarray
        Commanded and measured (reported before the snap) stage position of each frame.
    scores : numpy.ndarray
        The search's focus measure of each frame, in units of the noise energy
        (noise alone scores about 1).
    coarse_scores : numpy.ndarray
        The coarse, wide-band measure the search used to bracket the focus (same units).
    noise_dn : float
        Noise standard deviation (DN) the scores are normalised by: the median of the
        frames' own estimates (NaN without frames).
    measure : str
        Name of the measure of ``scores``.
    """

    commanded_um: np.ndarray
    z_um: np.ndarray
    scores: np.ndarray
    coarse_scores: np.ndarray
    noise_dn: float
    measure: str

    def __post_init__(self) -> None:
        for name in ("commanded_um", "z_um", "scores", "coarse_scores"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.z_um.size)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(z_um, scores)`` sorted by increasing measured z."""
        order = np.argsort(self.z_um, kind="stable")
        return self.z_um[order], self.scores[order]


class FocusSearchError(AcquisitionError):
    """A focus search stopped on a device fault; ``curve`` (also ``partial``) is what it measured.

    An :class:`~nanoro_optics.hardware.errors.AcquisitionError`, so code that handles a
    failed scan handles a failed search too. The device's error is ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        curve: FocusCurve,
        stage_stopped: bool = False,
    ) -> None:
        super().__init__(message, partial=curve, stage_stopped=stage_stopped)
        self.curve = curve


class _Interrupted(Exception):
    pass


class _Session:
    """Moves, snaps and scores for one search; see the module notes for its rules."""

    def __init__(
        self,
        stage: Any,
        camera: Any,
        *,
        search: tuple[float, float],
        limits: tuple[float, float],
        fine: tuple[str, FocusBand | None],
        coarse: tuple[FocusBand, ...],
        tile_px: int,
        timeout_s: float | None,
        backlash_um: float,
        position_tolerance_um: float,
        readout_tolerance_um: float,
        max_frames: int,
    ) -> None:
        if camera is None:  # the guard accepts a stage alone; a search needs both
            raise TypeError("camera must follow the Camera protocol, got NoneType")
        self.guard = MotionGuard(stage, camera, timeout_s=timeout_s)
        self.stage, self.camera = stage, camera
        self.lo, self.hi = search
        self.limits = limits
        self.fine, self.coarse, self.tile_px = fine, coarse, tile_px
        self.backlash = backlash_um
        self.max_frames = max_frames
        self.check = ReadingCheck(
            self.lo,
            limits[0],
            limits[1],
            readout_tolerance_um,
            position_tolerance_um,
            floor_name="the bottom of the search range",
        )
        self.commanded: list[float] = []
        self.measured: list[float] = []
        #: per view (False: the frames as they are; True: square-root stabilised, see
        #: _stabiliser), everything measured; the view used is True once a frame looked
        #: like sparse fluorescence
        self.views = {False: _Store(), True: _Store()}
        self.sparse = False
        self.moves: list[float] = []
        self.first: np.ndarray | None = None
        self.last_target: float | None = None
        self.position: float | None = None

    # ------------------------------------------------------------------ results
    @property
    def frames(self) -> int:
        return len(self.measured)

    def noise_dn(self) -> float:
        """Noise the scores are divided by: the median of the frames' own estimates.

        A median, so that a sharp frame's texture does not inflate its own score's unit.
        """
        noise = self.views[self.sparse].noise
        return float(np.median(noise)) if noise else math.nan

    def curve(self, coarse_index: int = 0) -> FocusCurve:
        v = self.views[self.sparse]
        s2 = self.noise_dn() ** 2
        coarse = [c[coarse_index] for c in v.coarse_energy] if self.coarse else []
        return FocusCurve(
            commanded_um=np.asarray(self.commanded),
            z_um=np.asarray(self.measured),
            scores=np.asarray(v.fine_energy) / s2 if v.noise else np.zeros(0),
            coarse_scores=np.asarray(coarse) / s2 if v.noise else np.zeros(0),
            noise_dn=self.noise_dn(),
            measure=self.fine[0],
        )

    def tiles(self, which: str, index: int = 0) -> np.ndarray:
        """(frames, ty, tx) tile scores of the fine or a coarse measure."""
        v = self.views[self.sparse]
        s2 = self.noise_dn() ** 2
        if which == "fine":
            return np.stack(v.fine_tiles) / s2
        return np.stack([c[index] for c in v.coarse_tiles]) / s2

    def threshold(self, which: str, index: int = 0, *, tile: bool = True) -> float:
        """Score that noise alone exceeds rarely, per tile or per whole frame."""
        assert self.first is not None
        n = self.tile_px**2 if tile else int(np.prod(self.first.shape[:2]))
        if which == "fine":
            name, band = self.fine
            return noise_threshold(name, None if band is None else band.sigmas_px, n)
        return noise_threshold("bandpass", self.coarse[index].sigmas_px, n)

    # ------------------------------------------------------------------ motion
    def _command(self, z: float) -> None:
        # the last guard: nothing outside the search range or the limits is ever sent
        if not (self.lo <= z <= self.hi and self.limits[0] <= z <= self.limits[1]):
            raise StageLimitError(  # pragma: no cover - the searches never ask for one
                f"target {z!r} um is outside the search range [{self.lo!r}, {self.hi!r}] um or "
                f"the stage limits {self.limits}"
            )
        self.moves.append(z)
        self.guard.move(z)
        self.last_target = z

    def _go(self, z: float) -> float:
        """Move to ``z`` (from above when the stage has play), check the readings.

        The reading after an overshoot is checked too (the limits and the floor only), so
        a stage moving the wrong way is stopped before its second move.
        """
        if self.backlash > 0 and (self.last_target is None or z > self.last_target):
            top = min(z + self.backlash, self.hi)
            self._command(top)
            self.guard.read(top, index=self.frames, check=self.check, overshoot=True)
        self._command(z)
        z_meas = self.guard.read(z, index=self.frames, check=self.check)
        if z_meas > self.hi + self.check.readout_tolerance_um:
            raise StagePositionError(
                f"the stage reported {z_meas!r} um, above the search range's top {self.hi!r} um",
                measured_um=z_meas,
                commanded_um=z,
                index=self.frames,
            )
        self.position = z_meas
        return z_meas

    def _stage_fault(self, exc: BaseException) -> FocusSearchError:
        self.guard.stop()
        return FocusSearchError(
            f"stage fault during the focus search after {self.frames} frame(s) "
            f"({type(exc).__name__}: {exc}); the stage was stopped",
            curve=self.curve(),
            stage_stopped=True,
        )

    def _interrupted(self) -> AcquisitionInterrupted:
        self.guard.stop()
        return AcquisitionInterrupted(
            f"focus search interrupted after {self.frames} frame(s); the stage was stopped",
            partial=self.curve(),
        )

    def snap_at(self, z: float) -> int:
        """Take one frame at ``z``; return its index. Raises FocusSearchError on a fault.

        The guard's worker thread ends with each frame, so a search that stops between
        frames (a refusal) leaves no thread behind.
        """
        try:
            return self._snap_at(float(z))
        finally:
            self.guard.close()

    def _snap_at(self, z: float) -> int:
        if self.frames >= self.max_frames:
            raise FocusSearchError(
                f"the search needs more than max_frames={self.max_frames} frames; stopped "
                f"before the move to {z!r} um",
                curve=self.curve(),
            )
        try:
            z_meas = self._go(z)
        except KeyboardInterrupt:
            raise self._interrupted() from None
        except Exception as exc:
            raise self._stage_fault(exc) from exc
        try:
            frame = self.guard.snap(self.frames)
            self._score(frame)
        except KeyboardInterrupt:
            raise self._interrupted() from None
        except Exception as exc:
            raise FocusSearchError(
                f"frame {self.frames} of the focus search failed ({type(exc).__name__}: {exc}); "
                f"the stage was left at {z_meas!r} um",
                curve=self.curve(),
            ) from exc
        if self.first is None:
            self.first = frame
        self.commanded.append(z)
        self.measured.append(z_meas)
        return self.frames - 1

    def finish_at(self, z: float) -> float:
        """Move to the result ``z`` (checked); return the reading there."""
        try:
            return self._go(float(z))
        except KeyboardInterrupt:
            raise self._interrupted() from None
        except Exception as exc:
            raise self._stage_fault(exc) from exc
        finally:
            self.guard.close()

    # ------------------------------------------------------------------ scoring
    def _score(self, frame: np.ndarray) -> None:
        f3 = _as_frame(frame)
        g = _grey(f3)
        sigma = frame_noise(frame)
        black, sparse = _stabiliser(g, sigma)
        gs = np.sqrt(np.maximum(g - black, 1.0))
        scored = {False: self._measure(g, sigma), True: self._measure(gs, frame_noise(gs))}
        # appended together, after everything that can fail
        for view, values in scored.items():
            self.views[view].append(*values)
        self.sparse = self.sparse or sparse

    def _measure(self, g: np.ndarray, sigma: float) -> tuple[Any, ...]:
        name, band = self.fine
        e, gain = _energy_maps(g, name, None if band is None else band.sigmas_px)
        if name == "brenner":
            e = e[:, :-2]
        coarse_whole, coarse_tiles = [], []
        for b in self.coarse:
            ec, gc = _energy_maps(g, "bandpass", b.sigmas_px)
            coarse_whole.append(float(ec.mean() / gc))
            coarse_tiles.append(_tile_means(ec, self.tile_px) / gc)
        return (
            sigma,
            float(e.mean() / gain),
            _tile_means(e, self.tile_px) / gain,
            coarse_whole,
            coarse_tiles,
        )


class _Store:
    """Everything measured of the frames in one view (energies in DN^2 over the gain)."""

    def __init__(self) -> None:
        self.noise: list[float] = []
        self.fine_energy: list[float] = []
        self.fine_tiles: list[np.ndarray] = []
        self.coarse_energy: list[list[float]] = []
        self.coarse_tiles: list[list[np.ndarray]] = []

    def append(
        self,
        noise: float,
        fine: float,
        fine_tiles: np.ndarray,
        coarse: list[float],
        coarse_tiles: list[np.ndarray],
    ) -> None:
        self.noise.append(noise)
        self.fine_energy.append(fine)
        self.fine_tiles.append(fine_tiles)
        self.coarse_energy.append(coarse)
        self.coarse_tiles.append(coarse_tiles)


def _stabiliser(g: np.ndarray, sigma: float) -> tuple[float, bool]:
    """Black level of a square-root transform, and whether the frame looks photon-limited.

    Sparse fluorescence is a dark background with a few bright objects, whose shot noise
    (variance proportional to the signal) is far above the background's: in units of the
    background noise the defocused glow around an object would score as structure. The
    square root of the signal above the black level makes shot noise uniform (Anscombe
    [1]_). A frame looks photon-limited when its median lies within 15 % of its range
    above the 1st percentile and its bright end is more than 20 noise sigmas above; once
    one frame of a search does, the whole search is scored on the square roots. The black
    level is the 1st percentile less three noise sigmas.

    References
    ----------
    .. [1] F. J. Anscombe, "The transformation of Poisson, binomial and negative-binomial
       data", Biometrika 35, 246-254 (1948), doi:10.1093/biomet/35.3-4.246
    """
    p1, med, p999 = np.percentile(g, [1.0, 50.0, 99.9])
    span = p999 - p1
    return float(p1 - 3.0 * sigma), bool(span > 20.0 * sigma and med - p1 < 0.15 * span)
