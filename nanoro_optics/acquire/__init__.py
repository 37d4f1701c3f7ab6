"""Run a Z-scan plan on a stage and a camera, safely, optionally fusing while acquiring.

:func:`run_zscan` follows the capture sequence of Urwin (2021) [1]_:
the stage moves up to the top of the plan (``distance_um`` above the start), snaps, then
moves down one spacing at a time and snaps at each position, the last image at the start;
it never commands a position below the start, where the user placed the lens. Setup is
separate from execution (as in pymmcore-plus' ``PMDAEngine.setup_event`` /
``exec_event`` [2]_): the plan's problems and every position, including a backlash
overshoot, are checked against the stage limits before anything moves.

Guarantees
----------
The executor trusts neither the stage nor the camera beyond the protocols, and behaves the
same with drivers that misbehave the way real SDKs do (see
:mod:`nanoro_optics.testing.doubles`):

- **Frames are owned by the stack.** Each frame is copied (C order, made read-only) as
  soon as ``snap`` returns, so a camera reusing one buffer cannot change captured data;
  ``err.partial`` holds the same copies. The fuser and ``on_frame`` get that copy.
- **Frames are checked against the first**: a numpy array, 2-D or 3-D, not empty, of an
  integer or float dtype (bool, complex, object, string and time frames are refused), of
  the first frame's shape and dtype, and finite (a float frame with a NaN or infinite
  pixel is refused, with or without a fuser); otherwise a
  :class:`~nanoro_optics.hardware.errors.CameraError` naming the frame index.
- **The start is read at rest**: when the plan has no start, the executor waits for
  ``wait_until_idle`` and reads the position twice; the readings must be finite and agree
  within ``readout_tolerance_um`` (else a
  :class:`~nanoro_optics.hardware.StagePositionError`, nothing moved). The higher reading
  is the start. A wait or reading that fails stops the stage.
- **Every measured position is checked**, after every move: the backlash overshoot, each
  move to an image position (before the snap) and the move back to the start. It must be
  finite, within the stage limits and not below the start (both to
  ``readout_tolerance_um``, default 0.1 um), and, except after the overshoot (which the
  stage's play makes land short by design), within ``position_tolerance_um`` of the
  commanded position (default a quarter of the spacing, which keeps the measured
  positions in the plan's order). A stage that moves the wrong way is therefore stopped
  after its first move below the start: no second move follows.
- **Every device call has a deadline** of ``timeout_s`` (a move: the command and the wait
  together), kept by the executor in real time: the call runs in a worker thread and the
  executor stops waiting for it once the deadline has passed, whether or not the device
  honours the ``timeout_s`` it is given. Moves are also timed on the stage's clock
  (``stage.clock.time()``) when it has one, as the simulated stages do.

Faults
------
=============================== ============================================================
what failed                     what the executor does
=============================== ============================================================
the stage: an exception from    calls ``stage.stop()`` first, moves no more, raises
``move_to_um``, ``wait_until_   :class:`~nanoro_optics.hardware.errors.AcquisitionError`
idle`` or ``get_position_um``,  (``stage_stopped=True``) carrying the frames captured so far
a reading the checks refuse,    and their positions. Its cause is the stage's error:
a call past its deadline        ``StagePositionError`` (with ``measured_um``,
                                ``commanded_um``, ``index``) for a refused reading,
                                ``StageTimeoutError`` for a call past its deadline
the stage, before the start is  calls ``stage.stop()`` and re-raises the stage's error; the
read (the wait, the readings)   executor commanded nothing
the camera (an error, a snap    moves back to the start (if ``return_to_start``; that move
past its deadline, a refused    and its reading are checked too), then raises
frame), the fuser or a          ``AcquisitionError`` carrying the frames so far (cause
callback, the stage healthy     ``CameraTimeoutError`` for a snap past its deadline)
KeyboardInterrupt               calls ``stage.stop()``, moves no more, raises
                                :class:`~nanoro_optics.hardware.errors.AcquisitionInterrupted`
                                (a ``KeyboardInterrupt``) carrying the frames so far
=============================== ============================================================

Safe motion for other procedures
--------------------------------
The rules above are public, so that a procedure that moves the stage and snaps (the
focus searches of :mod:`nanoro_optics.autofocus`) keeps them the same way:
:class:`MotionGuard` (checked moves and snaps under real-time deadlines, a safe stop),
:class:`ReadingCheck` (what a measured position must satisfy) and :func:`check_frame`
(the frame rules and the owned copy). :func:`run_zscan` is built on them.

With a fuser, ``err.partial.fused`` holds the fused result of the frames captured before
the fault, so a scan run with ``keep_frames=False`` loses neither its image nor its
positions.

Rooms
-----
``_scan`` (:func:`run_zscan`, :func:`scan_targets_um`, the scan's defaults), ``_guard``
(the safe-motion layer: :class:`MotionGuard`, :class:`ReadingCheck`, :func:`check_frame`,
the device calls under real-time deadlines) and ``_stack`` (:class:`ZStack`,
:class:`FrameInfo`, :class:`StackFuserLike`: what a scan returns and fuses with).

References
----------
.. [1] I. Urwin, "Nanoro Microscope Focus Stacking", method of procedure, rev. 1 (2021),
   "Physical movement of the Z stage".
.. [2] pymmcore-plus, "MDA engine", https://pymmcore-plus.github.io/pymmcore-plus/
"""

from __future__ import annotations

from ._guard import MAX_TIMEOUT_S, MotionGuard, ReadingCheck, check_frame
from ._guard import _ReadingCheck as _ReadingCheck
from ._scan import (
    DEFAULT_READOUT_TOLERANCE_UM,
    POSITION_TOLERANCE_SPACINGS,
    run_zscan,
    scan_targets_um,
)
from ._stack import FrameInfo, StackFuserLike, ZStack

__all__ = [
    "DEFAULT_READOUT_TOLERANCE_UM",
    "MAX_TIMEOUT_S",
    "POSITION_TOLERANCE_SPACINGS",
    "FrameInfo",
    "MotionGuard",
    "ReadingCheck",
    "StackFuserLike",
    "ZStack",
    "check_frame",
    "run_zscan",
    "scan_targets_um",
]
