"""Tests of the end-to-end demo (run_demo and ``nanoro-optics demo``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nanoro_optics.cli import main
from nanoro_optics.demo import psnr_db, run_demo
from nanoro_optics.optics import OBJECTIVES

#: the issue's acceptance floor for the README's first command
ACCEPT_PSNR_DB = 35.0


def test_small_demo_writes_consistent_files(tmp_path: Path) -> None:
    s = run_demo(tmp_path / "out", shape=(96, 96), relief_um=5.0, seed=1)
    assert set(s.files) == {"fused", "depth", "summary"}
    fused = tifffile.imread(s.files["fused"])
    depth = tifffile.imread(s.files["depth"])
    assert fused.shape == (96, 96) and fused.dtype == np.uint16
    assert depth.shape == (96, 96) and depth.dtype == np.float32
    on_disk = json.loads(Path(s.files["summary"]).read_text())
    assert on_disk == json.loads(json.dumps(s.to_dict()))
    # the plan covers the specimen with one spacing of margin and the DoF as the limit
    plan = s.plan
    assert plan["spacing_um"] <= OBJECTIVES[s.objective].depth_of_field() + 1e-12
    assert plan["start_um"] <= s.specimen_bottom_um - plan["spacing_um"] + 1e-9
    assert s.commanded_um[0] >= s.specimen_top_um + plan["spacing_um"] - 1e-9
    # the stage overshot above the top first, then went down, never below the start
    assert s.stage_moves_um[0] > s.commanded_um[0]
    assert list(s.stage_moves_um[1:]) == list(s.commanded_um)
    assert min(s.stage_moves_um) == plan["start_um"]
    assert np.all(np.abs(np.subtract(s.measured_um, s.commanded_um)) < 0.2)
    assert s.psnr_db > 30.0 and s.depth_rmse_um < 0.5 * s.depth_of_field_um
    assert s.psnr_db > s.best_frame_psnr_db + 3.0  # fusion beats every single frame
    assert 0.0 <= s.depth_nan_fraction < 0.1


def test_demo_is_deterministic_by_seed(tmp_path: Path) -> None:
    a = run_demo(tmp_path / "a", shape=(64, 64), relief_um=4.0, seed=3)
    b = run_demo(tmp_path / "b", shape=(64, 64), relief_um=4.0, seed=3)
    assert a.psnr_db == b.psnr_db and a.measured_um == b.measured_um
    np.testing.assert_array_equal(
        tifffile.imread(a.files["fused"]), tifffile.imread(b.files["fused"])
    )


def test_colour_demo(tmp_path: Path) -> None:
    s = run_demo(tmp_path, shape=(64, 64), relief_um=4.0, colour=True)
    assert s.shape == (64, 64, 3)
    assert tifffile.imread(s.files["fused"]).shape == (64, 64, 3)


@pytest.mark.slow
def test_readme_first_command_meets_acceptance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nanoro-optics demo`` on its defaults: fused PSNR >= 35 dB vs the simulated truth."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "fused PSNR" in printed and "depth error" in printed and "time" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["psnr_db"] >= ACCEPT_PSNR_DB
    assert summary["depth_rmse_um"] < 0.25 * summary["depth_of_field_um"]
    assert summary["shape"] == [512, 512]


def test_cli_json_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--size", "48", "--relief-um", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [48, 48]
    assert main(["demo", "--out", str(tmp_path), "--objective", "nope"]) == 2
    assert "objective" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"objective": "Zeiss"}, ValueError, "objective"),
        ({"relief_um": 0.0}, ValueError, "relief_um"),
        ({"seed": -1}, ValueError, "seed"),
        ({"colour": "yes"}, TypeError, "colour"),
        ({"stage_backlash_um": -1.0}, ValueError, "stage_backlash_um"),
    ],
)
def test_run_demo_bad_arguments(tmp_path: Path, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        run_demo(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_psnr() -> None:
    a = np.zeros(4)
    assert psnr_db(a, a) == float("inf")
    assert psnr_db(a, a + 0.1) == pytest.approx(20.0)
    assert psnr_db(a, a + 10.0, data_range=100.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="same shape"):
        psnr_db(a, np.zeros(3))


def test_demo_refuses_to_overwrite_an_earlier_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # before: a second demo into the same folder replaced its files without a word
    argv = ["demo", "--out", str(tmp_path), "--size", "32", "--relief-um", "3"]
    assert main(argv) == 0
    before = (tmp_path / "fused.tif").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--seed", "4"]) == 2
    assert "give --overwrite" in capsys.readouterr().err
    assert (tmp_path / "fused.tif").read_bytes() == before
    assert main([*argv, "--seed", "4", "--overwrite"]) == 0
    assert (tmp_path / "fused.tif").read_bytes() != before
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seed"] == 4 and summary["options"]["format"].startswith("nanoro_optics.")
