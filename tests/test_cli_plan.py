"""The ``nanoro-optics plan`` command."""

from __future__ import annotations

import json

import pytest

from nanoro_optics.cli import main
from nanoro_optics.zscan import ZScanLimits, plan_for_sample


def test_plan_json_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--top", "40", "--bottom", "0", "--spacing", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    plan = plan_for_sample(40.0, 0.0, spacing_um=8.0)
    assert out["plan"] == plan.to_dict()
    assert out["positions_um"] == plan.positions_um().tolist()
    assert out["positions_um"] == [48.0, 40.0, 32.0, 24.0, 16.0, 8.0, 0.0, -8.0]  # seed 000
    assert out["problems"] == []


def test_plan_text_with_objective(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--top", "40", "--bottom", "0", "--objective", "Nikon MRP70101"]) == 0
    text = capsys.readouterr().out
    plan = plan_for_sample(40.0, 0.0, objective="Nikon MRP70101")
    assert f"{plan.image_count} images" in text
    assert ", ".join(f"{z:.6g}" for z in plan.positions_um()) in text
    assert "problems: none" in text


def test_plan_reports_problems_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--top", "4", "--bottom", "0", "--spacing", "0.5"]
    assert main([*args, "--objective", "Nikon MRP70101", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    lim = ZScanLimits.for_objective("Nikon MRP70101")
    assert out["limits"]["min_spacing_um"] == lim.min_spacing_um
    assert len(out["problems"]) == 1 and "below the minimum" in out["problems"][0]
    assert main([*args, "--objective", "Nikon MRP70101"]) == 1
    assert "the plan must not run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--top", "0", "--bottom", "40", "--spacing", "8"], "top_um=0.0 must be >= bottom_um"),
        (["--top", "40", "--bottom", "0"], "give --spacing UM or --objective NAME"),
        (["--top", "40", "--bottom", "0", "--spacing", "0"], "spacing_um must be > 0"),
        (["--top", "40", "--bottom", "0", "--objective", "Zeiss"], "unknown objective"),
        (
            ["--top", "40", "--bottom", "0", "--spacing", "8", "--margin-steps", "-1"],
            "margin_steps must be >= 0",
        ),
    ],
)
def test_plan_bad_input_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", *argv]) == 2
    assert message in capsys.readouterr().err
