"""pymmcore-plus (Micro-Manager) front end: device adapters and live fusion inside an MDA.

=================================== ============================================================
name                                what it is
=================================== ============================================================
:class:`MMCoreZStage`,              adapters from a ``pymmcore_plus.CMMCorePlus`` to the
:class:`MMCoreCamera`               :class:`~nanoro_optics.hardware.ZStage` and
                                    :class:`~nanoro_optics.hardware.Camera` protocols
                                    (:mod:`.adapters`)
:func:`simulated_core`              a ``UniMMCore`` whose devices delegate to this package's
                                    stages and cameras (:mod:`.adapters`)
:class:`LiveFusion`                 an MDA output handler fusing every z-loop as it is acquired,
                                    :class:`FusedGroup` its result (:mod:`.mda`)
:class:`LiveFusionBacklogWarning`,  frames come faster than LiveFusion fuses them: the
:class:`BacklogReport`              warning, and the rates and backlog it states (:mod:`.mda`)
:func:`check_mda_sequence`          the Z-plan rules for a useq ``MDASequence``
                                    (:func:`nanoro_optics.zscan.check_mda_sequence`)
:class:`IndexMismatch`              the index-mismatch correction of the depth map (:mod:`.mda`)
=================================== ============================================================

Everything here needs the ``mmcore`` extra (``pip install "nanoro_optics[mmcore]"``);
importing this package imports neither pymmcore-plus nor useq: each name loads its module
on first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "MMCoreCamera": "adapters",
    "MMCoreZStage": "adapters",
    "simulated_core": "adapters",
    "BacklogReport": "mda",
    "FusedGroup": "mda",
    "IndexMismatch": "mda",
    "LiveFusion": "mda",
    "LiveFusionBacklogWarning": "mda",
    "check_mda_sequence": "mda",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
