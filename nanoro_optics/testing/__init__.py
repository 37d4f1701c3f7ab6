"""Test kit for code that embeds nanoro_optics: hypothesis strategies, assertions, contracts.

==================================== ==========================================================
strategies (:mod:`.strategies`)      :func:`zscan_plans`, :func:`zscan_limits`,
                                     :func:`objectives`, :func:`focus_stacks`,
                                     :func:`stage_faults`, :func:`device_faults`,
                                     :func:`beam_tilt_pairs`
assertions (:mod:`.assertions`)      :func:`assert_plan_invariants`,
                                     :func:`assert_positions_safe`,
                                     :func:`assert_stack_consistent`
contracts (:mod:`.contracts`)        :func:`check_zstage_contract`,
                                     :func:`check_camera_contract`
doubles (:mod:`.doubles`)            misbehaving devices: :class:`BufferReusingCamera`,
                                     :class:`NaNReadingStage`, :class:`SettlingStage`,
                                     :class:`OvershootingStage`, :class:`SlowStage`,
                                     :class:`ReversedStage`, :class:`LateReportingStage`,
                                     :class:`BlockingCamera`; fault-injection scans:
                                     :class:`FaultScan`, :func:`run_fault_scan`
==================================== ==========================================================

Every strategy generates only valid values by default and takes keyword options (a value or
a strategy) to pin a parameter or ask for edge cases (a zero step count, a spacing at a
limit, a single-frame stack). The doubles misbehave the way real drivers do (a reused
frame buffer, a NaN reading, an early "idle", an overshoot, an ignored timeout), on the mock
stage's simulated clock. The contract suites run a driver through the behaviour that
:func:`nanoro_optics.acquire.run_zscan` relies on, and raise one :class:`AssertionError`
listing every broken rule, so they drop into a user's own pytest.

This subpackage needs hypothesis (``pip install 'nanoro_optics[test]'``); importing it
without hypothesis raises an :class:`ImportError` that says so.

Examples
--------
>>> from hypothesis import given
>>> from nanoro_optics.testing import assert_plan_invariants, zscan_plans
>>> @given(zscan_plans())
... def test_plans(plan):
...     assert_plan_invariants(plan)
>>> test_plans()
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "nanoro_optics.testing needs hypothesis: pip install 'nanoro_optics[test]'"
    ) from exc

from .assertions import assert_plan_invariants, assert_positions_safe, assert_stack_consistent
from .autofocus import *  # noqa: F403  (the autofocus kit: see .autofocus.__all__)
from .contracts import (
    CAMERA_CHECKS,
    ZSTAGE_CHECKS,
    ContractReport,
    check_camera_contract,
    check_zstage_contract,
)
from .doubles import (
    FAULT_SCAN_KINDS,
    BlockingCamera,
    BufferReusingCamera,
    FaultScan,
    FaultScanOutcome,
    LateReportingStage,
    NaNReadingStage,
    OvershootingStage,
    ReversedStage,
    SettlingStage,
    SlowStage,
    run_fault_scan,
)
from .strategies import (
    DEVICE_FAULT_KINDS,
    DeviceFault,
    FocusStackExample,
    StageFaultSchedule,
    beam_tilt_pairs,
    device_faults,
    focus_stacks,
    objectives,
    stage_faults,
    zscan_limits,
    zscan_plans,
)

__all__ = [
    "CAMERA_CHECKS",
    "DEVICE_FAULT_KINDS",
    "FAULT_SCAN_KINDS",
    "ZSTAGE_CHECKS",
    "BlockingCamera",
    "BufferReusingCamera",
    "ContractReport",
    "DeviceFault",
    "FaultScan",
    "FaultScanOutcome",
    "FocusStackExample",
    "LateReportingStage",
    "NaNReadingStage",
    "OvershootingStage",
    "ReversedStage",
    "SettlingStage",
    "SlowStage",
    "StageFaultSchedule",
    "assert_plan_invariants",
    "assert_positions_safe",
    "assert_stack_consistent",
    "beam_tilt_pairs",
    "check_camera_contract",
    "check_zstage_contract",
    "device_faults",
    "focus_stacks",
    "objectives",
    "run_fault_scan",
    "stage_faults",
    "zscan_limits",
    "zscan_plans",
]
