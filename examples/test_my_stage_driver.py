"""Testing your own focus-drive driver with nanoro_optics.testing.

You wrote a driver for your Z stage (here ``MyStage``, talking a small text protocol to a
controller) and want to know that :func:`nanoro_optics.acquire.run_zscan` can trust it:
targets outside the limits refused (not clipped), a position that is fresh after every
move, waits that wait, a ``stop()`` that stops. Copy this file next to your driver, swap
``FakeController`` for your serial port and run::

    pytest examples/test_my_stage_driver.py -v

or, as a script that runs the two contract suites and writes their report (default into
``out/``)::

    python examples/test_my_stage_driver.py [output_dir]

``FakeController`` simulates the controller on a simulated clock, so the file runs
anywhere in a fraction of a second. On real hardware the stage suite moves the stage up by
at most ``stop_move_um`` from where it is and back (see
:mod:`nanoro_optics.testing.contracts`); retract the objective or leave room above it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoro_optics.acquire import run_zscan
from nanoro_optics.hardware import (
    SimulatedCamera,
    SimulatedClock,
    Specimen,
    StageFault,
    StageLimitError,
    StageTimeoutError,
)
from nanoro_optics.testing import (
    assert_positions_safe,
    assert_stack_consistent,
    check_camera_contract,
    check_zstage_contract,
    zscan_plans,
)
from nanoro_optics.zscan import ZScanPlan

# ------------------------------------------------------------------ the user's driver


class FakeController:
    """Stands in for the serial port: answers MOVE/POS?/BUSY?/HALT like the firmware.

    The carriage travels at ``speed_um_per_s`` on a simulated clock; ``BUSY?`` advances the
    clock by one polling interval, as a real poll takes time.
    """

    travel_um = (0.0, 500.0)

    def __init__(self, *, clip_firmware: bool = False, speed_um_per_s: float = 500.0) -> None:
        self.clock = SimulatedClock()
        self.clip_firmware = clip_firmware  # a firmware bug the contract must catch
        self.speed_um_per_s = speed_um_per_s
        self._from = self._to = 100.0
        self._t0 = self._t1 = 0.0

    def _here(self) -> float:
        t = self.clock.time()
        if t >= self._t1:
            return self._to
        return self._from + (self._to - self._from) * (t - self._t0) / (self._t1 - self._t0)

    def send(self, command: str) -> str:
        word, _, arg = command.partition(" ")
        if word == "MOVE":
            target = float(arg)
            lo, hi = self.travel_um
            if not lo <= target <= hi:
                if not self.clip_firmware:
                    return "ERR LIMIT"
                target = min(max(target, lo), hi)
            self._from, self._to = self._here(), target
            self._t0 = self.clock.time()
            self._t1 = self._t0 + abs(target - self._from) / self.speed_um_per_s
            return "OK"
        if word == "POS?":
            return f"{self._here():.4f}"
        if word == "BUSY?":
            self.clock.advance(0.002)
            return "1" if self.clock.time() < self._t1 else "0"
        if word == "HALT":
            self._from = self._to = self._here()
            self._t0 = self._t1 = self.clock.time()
            return "OK"
        return "ERR unknown command"


class MyStage:
    """The driver under test: follows the nanoro_optics ZStage protocol."""

    def __init__(self, controller: FakeController, *, limits_um: tuple[float, float]) -> None:
        self.controller = controller
        self.clock = controller.clock  # lets run_zscan's settle waits use simulated time
        self._limits = limits_um

    @property
    def limits_um(self) -> tuple[float, float]:
        return self._limits

    def _ask(self, command: str) -> str:
        reply = self.controller.send(command)
        if reply == "ERR LIMIT":
            raise StageLimitError(f"{command!r} refused: outside the travel {self._limits} um")
        if reply.startswith("ERR"):
            raise StageFault(f"controller answered {reply!r} to {command!r}")
        return reply

    def get_position_um(self) -> float:
        return float(self._ask("POS?"))

    def move_to_um(self, z_um: float, *, timeout_s: float | None = None) -> None:
        z = float(z_um)
        if not math.isfinite(z):
            raise ValueError(f"z_um must be finite, got {z_um!r}")
        # the limits are left to the firmware, which answers "ERR LIMIT" (see the bug below)
        self._ask(f"MOVE {z:.4f}")

    def wait_until_idle(self, timeout_s: float | None = None) -> None:
        start = self.clock.time()
        while self._ask("BUSY?") == "1":
            if timeout_s is not None and self.clock.time() - start >= timeout_s:
                raise StageTimeoutError(f"stage still moving after {timeout_s} s")

    def stop(self) -> None:
        self._ask("HALT")


# ------------------------------------------------------------------ the user's tests

LIMITS_UM = (0.0, 500.0)


def make_stage() -> MyStage:
    """A fresh driver for each contract check (on hardware: reopen or reuse the port)."""
    return MyStage(FakeController(), limits_um=LIMITS_UM)


def test_my_stage_follows_the_zstage_contract() -> None:
    report = check_zstage_contract(make_stage, step_um=0.5, tolerance_um=0.01)
    print(report.message())


def test_the_contract_catches_a_clipping_firmware() -> None:
    def buggy() -> MyStage:
        return MyStage(FakeController(clip_firmware=True), limits_um=LIMITS_UM)

    with pytest.raises(AssertionError, match=r"refuses_out_of_limits: .* never clip"):
        check_zstage_contract(buggy, step_um=0.5, tolerance_um=0.01)


def test_my_camera_follows_the_camera_contract() -> None:
    specimen = Specimen.synthetic((32, 32), relief_um=4.0, base_um=100.0)
    check_camera_contract(lambda: SimulatedCamera(make_stage(), specimen))


@settings(max_examples=50, deadline=None)
@given(plan=zscan_plans(count=st.integers(0, 15), start_um=None))
def test_scans_with_my_stage_stay_safe(plan: ZScanPlan) -> None:
    stage = make_stage()
    camera = SimulatedCamera(stage, Specimen.synthetic((16, 16), base_um=100.0), noise=False)
    if 100.0 + plan.distance_um > LIMITS_UM[1]:
        with pytest.raises(StageLimitError):  # refused before anything moved
            run_zscan(plan, stage, camera)
        return
    stack = run_zscan(plan, stage, camera, timeout_s=5.0)
    assert_stack_consistent(stack)
    assert_positions_safe(stack.commanded_um, start_um=100.0, limits_um=LIMITS_UM)


if __name__ == "__main__":  # run both contracts and save their report
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
    out.mkdir(parents=True, exist_ok=True)
    spec = Specimen.synthetic((32, 32), relief_um=4.0, base_um=100.0)
    reports = [
        check_zstage_contract(make_stage, step_um=0.5, tolerance_um=0.01, raise_on_failure=False),
        check_camera_contract(lambda: SimulatedCamera(make_stage(), spec), raise_on_failure=False),
    ]
    text = "\n".join(r.message() for r in reports) + "\n"
    (out / "my_stage_contract.txt").write_text(text)
    print(text, end="")
    print(f"report written to {out / 'my_stage_contract.txt'}")
    sys.exit(0 if all(r.ok for r in reports) else 1)
