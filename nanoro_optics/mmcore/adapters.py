"""Adapters from a pymmcore-plus (Micro-Manager) core to the ZStage and Camera protocols.

:class:`MMCoreZStage` wraps the focus (Z) device of a ``pymmcore_plus.CMMCorePlus`` and
:class:`MMCoreCamera` its camera, so :func:`nanoro_optics.acquire.run_zscan` drives a real
microscope through Micro-Manager exactly as it drives the mock. Errors raised by the core
are translated into this package's errors (the original is chained as ``__cause__``):
anything from the stage becomes :class:`~nanoro_optics.hardware.errors.StageFault` (or
stays a ``StageLimitError``/``StageTimeoutError``), anything from the camera
:class:`~nanoro_optics.hardware.errors.CameraError`.

Micro-Manager has no API for a focus drive's travel limits, so ``limits_um`` must be given;
targets outside them are refused before the core is called.

:func:`simulated_core` builds a ``UniMMCore`` (pymmcore-plus' core with pure-Python
devices) whose focus device and camera delegate to any :class:`ZStage` and :class:`Camera`
of this package, e.g. :class:`~nanoro_optics.hardware.MockZStage` and
:class:`~nanoro_optics.hardware.SimulatedCamera`: the adapters can be tried (and are
tested) without hardware and without the Micro-Manager device adapters.

Requires the ``mmcore`` extra: ``pip install "nanoro_optics[mmcore]"``.

References
----------
.. [1] pymmcore-plus documentation, https://pymmcore-plus.github.io/pymmcore-plus/
   (``CMMCorePlus.setPosition``, ``deviceBusy``, ``stop``, ``snap``; ``UniMMCore`` and
   ``experimental.unicore`` Python devices).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_finite_real, check_interval, check_positive, check_range
from ..hardware.errors import (
    CameraError,
    CameraTimeoutError,
    HardwareError,
    StageFault,
    StageLimitError,
    StageTimeoutError,
)

__all__ = ["MMCoreCamera", "MMCoreZStage", "simulated_core"]

#: Longest polling interval (s) of :meth:`MMCoreZStage.wait_until_idle`.
MAX_POLL_S = 10.0
_EXTRA_HINT = 'install the extra: pip install "nanoro_optics[mmcore]"'


def _require_pymmcore_plus() -> Any:
    """Import pymmcore_plus or raise an ImportError that names the extra."""
    try:
        import pymmcore_plus
    except ImportError as exc:
        raise ImportError(f"the Micro-Manager adapters need pymmcore-plus; {_EXTRA_HINT}") from exc
    return pymmcore_plus


def _check_core(core: Any, methods: tuple[str, ...]) -> None:
    missing = [m for m in methods if not callable(getattr(core, m, None))]
    if missing:
        raise TypeError(
            f"core must be a pymmcore_plus.CMMCorePlus (or UniMMCore); "
            f"{type(core).__name__} lacks {', '.join(missing)}"
        )


class MMCoreZStage:
    """The focus device of a pymmcore-plus core, as a :class:`~nanoro_optics.hardware.ZStage`.

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        A core with the focus device loaded and initialised.
    device : str, optional
        Label of the Z stage; default the core's current focus device.
    limits_um : (float, float), keyword-only
        Travel limits ``(lo, hi)`` in um (required: Micro-Manager does not report them).
    poll_s : float, keyword-only
        Polling interval of :meth:`wait_until_idle` (default 5 ms, at most
        :data:`MAX_POLL_S`).

    Raises
    ------
    ImportError
        If pymmcore-plus is not installed (names the ``mmcore`` extra).
    ValueError
        If there is no focus device or the limits are not a finite ``lo < hi`` pair.
    """

    _METHODS = ("getPosition", "setPosition", "deviceBusy", "stop", "getTimeoutMs")

    def __init__(
        self,
        core: Any,
        device: str | None = None,
        *,
        limits_um: tuple[float, float],
        poll_s: float = 0.005,
    ) -> None:
        _require_pymmcore_plus()
        _check_core(core, (*self._METHODS, "getFocusDevice"))
        label = core.getFocusDevice() if device is None else device
        if not isinstance(label, str) or not label:
            raise ValueError(
                f"device must name the Z stage; the core has no focus device (got {label!r})"
            )
        self._limits = check_interval(limits_um, "limits_um")
        self.core = core
        self.device = label
        self.poll_s = check_range(poll_s, "poll_s", 0.0, MAX_POLL_S, lo_inclusive=False)

    @property
    def limits_um(self) -> tuple[float, float]:
        """Travel limits ``(lo, hi)`` in um, as given."""
        return self._limits

    def get_position_um(self) -> float:
        """Return the position the device reports (um)."""
        try:
            return float(self.core.getPosition(self.device))
        except Exception as exc:
            raise _stage_error(exc, f"reading the position of {self.device!r} failed") from exc

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        """Command an absolute move (``setPosition``); refuse targets outside the limits."""
        if timeout_s is not None:
            check_positive(timeout_s, "timeout_s", allow_zero=True)
        z = check_finite_real(z_um, "z_um")
        lo, hi = self._limits
        if not lo <= z <= hi:
            raise StageLimitError(f"z_um={z!r} is outside the stage limits [{lo!r}, {hi!r}] um")
        try:
            self.core.setPosition(self.device, z)
        except Exception as exc:
            raise _stage_error(exc, f"moving {self.device!r} to {z!r} um failed") from exc

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        """Poll ``deviceBusy`` until the device is idle.

        Raises
        ------
        StageTimeoutError
            After ``timeout_s`` (default: the core's timeout, ``getTimeoutMs``).
        StageFault
            If the core raises.
        """
        if timeout_s is None:
            limit_s = float(self.core.getTimeoutMs()) / 1000.0
        else:
            limit_s = check_positive(timeout_s, "timeout_s", allow_zero=True)
        deadline = time.monotonic() + limit_s
        while True:
            try:
                busy = bool(self.core.deviceBusy(self.device))
            except Exception as exc:
                raise _stage_error(exc, f"waiting for {self.device!r} failed") from exc
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise StageTimeoutError(f"{self.device!r} still busy after {limit_s!r} s")
            time.sleep(self.poll_s)

    def stop(self) -> None:
        """Halt the device (``core.stop``)."""
        try:
            self.core.stop(self.device)
        except Exception as exc:
            raise _stage_error(exc, f"stopping {self.device!r} failed") from exc

    def __repr__(self) -> str:
        return f"MMCoreZStage(device={self.device!r}, limits_um={self._limits})"


class MMCoreCamera:
    """The camera of a pymmcore-plus core, as a :class:`~nanoro_optics.hardware.Camera`.

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        A core with the camera loaded and initialised.
    device : str, optional
        Camera label; when given it is made the core's current camera. Default: the
        current camera.

    Notes
    -----
    Micro-Manager's ``snapImage`` has no timeout of its own; ``snap(timeout_s=...)`` raises
    :class:`~nanoro_optics.hardware.errors.CameraError` if the frame took longer, after it
    returned.
    """

    _METHODS = ("getExposure", "setExposure", "snap", "getCameraDevice", "setCameraDevice")

    def __init__(self, core: Any, device: str | None = None) -> None:
        _require_pymmcore_plus()
        _check_core(core, self._METHODS)
        if device is not None:
            try:
                core.setCameraDevice(device)
            except Exception as exc:
                raise CameraError(f"cannot select camera {device!r}: {exc}") from exc
        label = core.getCameraDevice()
        if not isinstance(label, str) or not label:
            raise ValueError(f"the core has no camera device (got {label!r})")
        self.core = core
        self.device = label

    @property
    def exposure_ms(self) -> float:
        """Current exposure in ms (``getExposure``)."""
        try:
            return float(self.core.getExposure())
        except Exception as exc:
            raise _camera_error(exc, "reading the exposure failed") from exc

    def set_exposure_ms(self, ms: float) -> None:
        """Set the exposure in ms (``setExposure``)."""
        value = check_positive(ms, "ms")
        try:
            self.core.setExposure(value)
        except Exception as exc:
            raise _camera_error(exc, f"setting the exposure to {value!r} ms failed") from exc

    def snap(self, timeout_s: float | None = None) -> np.ndarray:
        """Snap one frame (``core.snap()``; colour frames come as ``(rows, cols, 3)``).

        Raises
        ------
        CameraError
            If the core fails, the frame is not a 2-D or 3-D integer or float array, or
            it took longer than ``timeout_s`` (checked once it returned; for a deadline in
            real time run the scan with :func:`~nanoro_optics.acquire.run_zscan`'s
            ``timeout_s``).
        """
        limit = None if timeout_s is None else check_positive(timeout_s, "timeout_s")
        t0 = time.monotonic()
        try:
            frame = self.core.snap()
        except Exception as exc:
            raise _camera_error(exc, f"snap on {self.device!r} failed") from exc
        if limit is not None and time.monotonic() - t0 > limit:
            raise CameraTimeoutError(
                f"snap on {self.device!r} took longer than timeout_s={limit!r} s"
            )
        out = np.asarray(frame)
        if out.dtype.kind not in "iuf" or out.ndim not in (2, 3) or out.size == 0:
            raise CameraError(
                f"snap on {self.device!r} returned a {out.dtype} array of shape {out.shape}; "
                "expected a 2-D or 3-D integer or float frame"
            )
        return out

    def __repr__(self) -> str:
        return f"MMCoreCamera(device={self.device!r})"


def _stage_error(exc: Exception, what: str) -> HardwareError:
    if isinstance(exc, (StageLimitError, StageTimeoutError, StageFault)):
        return exc
    if isinstance(exc, TimeoutError):
        return StageTimeoutError(f"{what}: {exc}")
    return StageFault(f"{what}: {type(exc).__name__}: {exc}")


def _camera_error(exc: Exception, what: str) -> CameraError:
    if isinstance(exc, CameraError):
        return exc
    return CameraError(f"{what}: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ pure-Python devices


def _fit_frame(frame: Any, buffer: np.ndarray) -> np.ndarray:
    """Return ``frame`` if ``buffer`` holds it exactly; CameraError instead of a cast.

    The shape must be the buffer's (no broadcasting), and every value representable in its
    dtype: an integer in range, a float that is finite, whole and in range.
    """
    if not isinstance(frame, np.ndarray):
        raise CameraError(f"the camera returned a {type(frame).__name__}, not a numpy array")
    if frame.shape != buffer.shape:
        raise CameraError(
            f"the camera returned a frame of shape {frame.shape}; the device's buffer is "
            f"{buffer.shape} (frames are never broadcast)"
        )
    if frame.dtype.kind not in "iuf":
        raise CameraError(f"the camera returned a frame of dtype {frame.dtype}, not numbers")
    if np.can_cast(frame.dtype, buffer.dtype, casting="safe") or frame.size == 0:
        return frame
    info = np.iinfo(buffer.dtype)
    if frame.dtype.kind == "f":
        bad = ~np.isfinite(frame) | (frame != np.round(frame))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CameraError(
                f"the camera returned {float(frame[idx])!r} at pixel {idx}: a {buffer.dtype} "
                "buffer holds finite whole numbers only (nothing is cast)"
            )
    lo, hi = frame.min(), frame.max()
    if lo < info.min or hi > info.max:
        value = lo if lo < info.min else hi
        raise CameraError(
            f"the camera returned {value.item()!r}, outside the {buffer.dtype} range "
            f"[{info.min}, {info.max}] of the device (nothing is cast or wrapped)"
        )
    return frame


@functools.lru_cache(maxsize=1)
def _device_classes() -> tuple[type, type]:
    """Define the unicore device classes (needs pymmcore-plus, hence lazily)."""
    _require_pymmcore_plus()
    from pymmcore_plus.experimental.unicore import SimpleCameraDevice, StageDevice

    class ProtocolStageDevice(StageDevice):
        """A unicore Stage device delegating to a :class:`ZStage`.

        ``busy()`` waits for the wrapped stage (on a simulated clock this is immediate)
        and then reports idle; its errors reach the core's caller unchanged.
        """

        def __init__(self, stage: Any) -> None:
            super().__init__()
            self.stage = stage

        def set_position_um(self, val: float) -> None:
            self.stage.move_to_um(val)

        def get_position_um(self) -> float:
            return float(self.stage.get_position_um())

        def busy(self) -> bool:
            self.stage.wait_until_idle()
            return False

        def stop(self) -> None:
            self.stage.stop()

        def home(self) -> None:
            # homing would drive the stage to an end stop: refused, never done silently
            raise RuntimeError("home() refused: the simulated stage has no home position")

        def set_origin(self) -> None:
            raise RuntimeError("set_origin() refused: the simulated stage keeps its coordinates")

    class ProtocolCameraDevice(SimpleCameraDevice):
        """A unicore camera delegating to a :class:`Camera` with a fixed frame shape.

        A frame the buffer cannot hold exactly (another shape, values out of the dtype's
        range, NaN or fractions in an integer buffer) raises CameraError: never cast.
        """

        def __init__(self, camera: Any, shape: tuple[int, ...], dtype: Any) -> None:
            super().__init__()
            self.camera = camera
            self._shape = tuple(shape)
            self._dtype = np.dtype(dtype)

        def get_exposure(self) -> float:
            return float(self.camera.exposure_ms)

        def set_exposure(self, exposure: float) -> None:
            self.camera.set_exposure_ms(exposure)

        def sensor_shape(self) -> Any:
            return self._shape

        def dtype(self) -> Any:
            return self._dtype

        def snap(self, buffer: np.ndarray) -> dict[str, Any]:
            buffer[...] = _fit_frame(self.camera.snap(), buffer)
            return {}

    return ProtocolStageDevice, ProtocolCameraDevice


@functools.lru_cache(maxsize=1)
def _core_class() -> type:
    """Define the simulated core's class (needs pymmcore-plus, hence lazily)."""
    _require_pymmcore_plus()
    from pymmcore_plus.experimental.unicore import UniMMCore

    class SimulatedCore(UniMMCore):  # type: ignore[misc,unused-ignore]
        """A ``UniMMCore`` that waits for its devices in the calling thread.

        ``UniMMCore.waitForDeviceType`` (which ``waitForSystem``, and so the MDA engine
        before every event, calls) waits for its Python devices in parallel, from a thread
        pool it makes and shuts down at each call: two new threads per event here. A
        Micro-Manager core waits in the calling thread. Besides their own cost, those
        threads hand the GIL back and forth with whatever else the process runs (a live
        fusion handler), which a real core's MDA does not pay. Waiting for each device
        in turn is the same wait: the simulated devices report idle at once.
        """

        def waitForDeviceType(self, devType: int) -> None:
            for label in self.getLoadedDevicesOfType(devType):
                self.waitForDevice(label)

    return SimulatedCore


def simulated_core(
    stage: Any,
    camera: Any,
    *,
    frame_shape: tuple[int, ...] | None = None,
    dtype: Any = np.uint16,
    stage_label: str = "Z",
    camera_label: str = "Camera",
    channels: Sequence[str] = (),
    pixel_size_um: float | None = None,
) -> Any:
    """Build a ``UniMMCore`` whose focus device and camera delegate to ``stage`` and ``camera``.

    Parameters
    ----------
    stage : ZStage
        Any stage of this package (e.g. :class:`~nanoro_optics.hardware.MockZStage`).
    camera : Camera
        Any camera of this package (e.g. :class:`~nanoro_optics.hardware.SimulatedCamera`).
    frame_shape : (int, int), optional
        Grey frame shape ``(rows, cols)``; default the simulated camera's specimen shape.
    dtype : numpy dtype, keyword-only
        Pixel type of the frames (uint8 or uint16; default uint16).
    stage_label, camera_label : str, keyword-only
        Device labels in the core.
    channels : sequence of str, keyword-only
        Presets of a ``"Channel"`` config group, for useq ``MDASequence`` channels. They
        change nothing the simulation sees (each sets the core's ``AutoShutter`` to 0):
        every channel renders the same specimen, with its own noise.
    pixel_size_um : float, keyword-only, optional
        Pixel size calibration (a pixel size config ``"sim"``), which the MDA records in
        each frame's metadata.

    Returns
    -------
    pymmcore_plus.experimental.unicore.UniMMCore
        With ``stage_label`` as the focus device and ``camera_label`` as the camera, and
        auto-shutter off (there is no shutter device, which the MDA engine would open).
        It waits for its devices in the calling thread, as a Micro-Manager core does
        (``UniMMCore`` itself starts a thread pool at every ``waitForSystem``, i.e. before
        every event of an MDA).

    Examples
    --------
    >>> from nanoro_optics.hardware import MockZStage, SimulatedCamera, Specimen
    >>> mock = MockZStage(position_um=1.0)
    >>> cam = SimulatedCamera(mock, Specimen.synthetic((16, 16), relief_um=2.0))
    >>> core = simulated_core(mock, cam)
    >>> zstage = MMCoreZStage(core, limits_um=mock.limits_um)
    >>> zstage.move_to_um(2.0); zstage.wait_until_idle(); zstage.get_position_um()
    2.0
    >>> MMCoreCamera(core).snap().shape
    (16, 16)
    """
    _require_pymmcore_plus()

    if frame_shape is None:
        specimen = getattr(camera, "specimen", None)
        if specimen is None:
            raise ValueError("give frame_shape: the camera does not describe its frame shape")
        frame_shape = tuple(specimen.shape)
    shape = tuple(int(s) for s in frame_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"frame_shape must be grey (rows, cols), got {frame_shape!r}")
    pixel = np.dtype(dtype)
    if pixel not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"dtype must be uint8 or uint16, got {pixel}")
    names = [channels] if isinstance(channels, str) else list(channels)
    if any(not isinstance(n, str) or not n for n in names) or len(set(names)) < len(names):
        raise ValueError(f"channels must be distinct non-empty names, got {channels!r}")
    px = None if pixel_size_um is None else check_positive(pixel_size_um, "pixel_size_um")
    stage_cls, camera_cls = _device_classes()
    # without a Micro-Manager installation the core logs an error about the (unneeded)
    # C++ device adapters; only pure-Python devices are used here
    log = logging.getLogger("pymmcore-plus")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        core = _core_class()()
    finally:
        log.setLevel(level)
    core.loadPyDevice(stage_label, stage_cls(stage))
    core.initializeDevice(stage_label)
    core.setFocusDevice(stage_label)
    core.loadPyDevice(camera_label, camera_cls(camera, shape, pixel))
    core.initializeDevice(camera_label)
    core.setCameraDevice(camera_label)
    core.setAutoShutter(False)
    for name in names:
        core.defineConfig("Channel", name, "Core", "AutoShutter", "0")
    if px is not None:
        core.definePixelSizeConfig("sim")
        core.setPixelSizeUm("sim", px)
        core.setPixelSizeConfig("sim")
    return core
