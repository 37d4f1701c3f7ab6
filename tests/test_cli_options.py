"""The CLI as a new user meets it: shared fusion options, safe outputs, notes, first run.

Commands run through ``python -m nanoro_optics`` in a subprocess on a temporary folder, with
this checkout first on ``PYTHONPATH`` (so the copy under test is the one that runs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from nanoro_optics._numba import on_first_compile
from nanoro_optics.cli._fusion_options import (
    FUSER_OPTIONS,
    MISMATCH_FLAGS,
    NO_FLAG,
    add_fusion_arguments,
    check_output_options,
    fuser_options,
    fusion_options,
    unused_option_notes,
)
from nanoro_optics.fusion import StackFuser, fuse_stack, synthetic_stack
from nanoro_optics.io import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "nanoro_optics", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _frames_folder(folder: Path, n: int = 3, *, shift_px: int = 0) -> np.ndarray:
    frames = synthetic_stack((64, 64), n, dtype="uint8", seed=4).frames
    if shift_px:
        frames = np.stack([np.roll(f, k * shift_px, axis=1) for k, f in enumerate(frames)])
    folder.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(frames):
        write_image(folder / f"f{k}.png", f)
    return frames


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_fusion_arguments(p)
    return p


# ------------------------------------------------------------------------ the shared helper


def test_options_not_given_pass_nothing_so_the_library_defaults_apply() -> None:
    assert fuser_options(_parser().parse_args([])) == {"align": False}


def test_every_option_maps_to_its_fuser_keyword() -> None:
    argv = ["--align", "--levels", "4", "--sharpness", "9", "--window", "7", "--inherit", "0.5"]
    args = _parser().parse_args([*argv, "--coarse-window", "1"])
    opts = fuser_options(args)
    assert opts == {
        "align": True,
        "levels": 4,
        "sharpness": 9,
        "window_px": 7,
        "coarse_window_px": 1,
        "inherit": 0.5,
    }
    fuser = StackFuser(**opts)  # every keyword is one the fuser takes
    rule = fuser.rule
    assert (rule.sharpness, rule.window_px, rule.coarse_window_px, rule.inherit) == (9, 7, 1, 0.5)


@pytest.mark.parametrize("argv", [["--hard"], ["--sharpness", "hard"], ["--sharpness", "HARD"]])
def test_hard_rule_spellings(argv: list[str]) -> None:
    assert fuser_options(_parser().parse_args(argv))["sharpness"] is None


@given(st.integers(1, 64))
def test_any_integer_sharpness_reaches_the_rule(n: int) -> None:
    opts = fuser_options(_parser().parse_args(["--sharpness", str(n)]))
    assert StackFuser(**opts).rule.sharpness == n


def test_contradicting_options_are_refused() -> None:
    with pytest.raises(ValueError, match="--sharpness and --hard both set sharpness"):
        fuser_options(_parser().parse_args(["--sharpness", "8", "--hard"]))
    # the same choice twice is no contradiction
    assert (
        fuser_options(_parser().parse_args(["--sharpness", "hard", "--hard"]))["sharpness"] is None
    )


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--z-step-um", "nan"], "z_step_um must be finite, .*got nan"),
        (["--z-step-um", "inf"], "z_step_um must be finite, .*got inf"),
        (["--z-step-um", "0"], "z_step_um must not be 0"),
        (["--crop"], "--crop needs --align"),
    ],
)
def test_output_options_checked(argv: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_output_options(_parser().parse_args(argv))


def test_every_options_field_has_a_flag_or_a_documented_reason() -> None:
    import dataclasses

    from nanoro_optics.fusion import FusionOptions
    from nanoro_optics.fusion.options import HELP

    fields = {f.name for f in dataclasses.fields(FusionOptions)}
    flagged = {opt.keyword for opt in FUSER_OPTIONS}
    assert flagged | set(NO_FLAG) == fields and not flagged & set(NO_FLAG)
    assert all(NO_FLAG.values())
    own_help = {"--hard", "--keep-depth-holes"}  # spellings of a value, not the field
    for opt in FUSER_OPTIONS:  # the help text is the field's one text
        if opt.flags[0] not in own_help:
            assert opt.argparse_kwargs["help"] == HELP[opt.keyword]


def test_index_mismatch_flags_build_the_correction() -> None:
    from nanoro_optics.psf import IndexMismatch

    argv = ["--z-step-um", "-2", "--n-immersion", "1.518", "--n-sample", "1.33", "--na", "1.2"]
    opts = fusion_options(_parser().parse_args(argv))
    assert opts.z_step_um == -2.0
    assert opts.index_mismatch == IndexMismatch(
        interface_um=0.0, na=1.2, n_immersion=1.518, n_sample=1.33, model="carlsson"
    )
    wave = _parser().parse_args([*argv, "--mismatch-model", "wave", "--wavelength-um", "0.5"])
    assert fusion_options(wave).index_mismatch.model == "wave"
    with pytest.raises(ValueError, match="needs wavelength_um"):
        fusion_options(_parser().parse_args([*argv, "--mismatch-model", "wave"]))
    with pytest.raises(ValueError, match="missing --na"):
        fusion_options(_parser().parse_args(argv[:-2]))
    with pytest.raises(ValueError, match="give --z-step-um"):
        fusion_options(_parser().parse_args(argv[2:]))


def test_notes_for_options_that_do_nothing() -> None:
    args = _parser().parse_args(["--z-step-um", "2"])
    assert unused_option_notes(args, depth_written=True) == []
    (note,) = unused_option_notes(args, depth_written=False)
    assert "--z-step-um does nothing without --depth-map" in note


def _fusion_group_flags(help_text: str) -> list[str]:
    section = help_text.split("\nfusion:\n", 1)[1]
    return re.findall(r"^  (--[a-z-]+)", section, flags=re.MULTILINE)


def test_fuse_and_fuse_batch_offer_the_same_fusion_options(tmp_path: Path) -> None:
    fuse = _cli("fuse", "--help", cwd=tmp_path)
    batch = _cli("fuse-batch", "--help", cwd=tmp_path)
    assert fuse.returncode == batch.returncode == 0
    flags = _fusion_group_flags(fuse.stdout)
    assert flags == _fusion_group_flags(batch.stdout)
    expected = [opt.flags[0] for opt in FUSER_OPTIONS] + [flag for _, flag, _ in MISMATCH_FLAGS]
    assert flags == expected
    # the alignment reference is documented, and can be chosen
    for out in (fuse.stdout, batch.stdout):
        assert "the frame whose pixel grid the result" in out and "{first,middle}" in out
        assert "--n-immersion" in out and "--mismatch-model" in out


# ---------------------------------------------------------------------- fuse: safe outputs


@pytest.mark.slow
def test_outputs_inside_the_input_folder_are_not_read_back(tmp_path: Path) -> None:
    frames = _frames_folder(tmp_path / "in")
    args = ["fuse", "in", "-o", "in/fused.png", "--depth-map", "in/depth.tif"]
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    fused = read_image(tmp_path / "in" / "fused.png")
    np.testing.assert_array_equal(fused, fuse_stack(frames).image)
    # a rerun finds its outputs in the folder: refused without --overwrite, nothing touched
    before = (tmp_path / "in" / "fused.png").read_bytes()
    again = _cli(*args, cwd=tmp_path)
    assert again.returncode == 2
    assert "-o in/fused.png exists already; give --overwrite" in again.stderr
    assert (tmp_path / "in" / "fused.png").read_bytes() == before
    # with --overwrite the outputs are left out of the stack (with a note: their records say
    # what they are) and replaced
    over = _cli(*args, "--overwrite", cwd=tmp_path)
    assert over.returncode == 0, over.stderr
    assert "in/fused.png is a fused image of an earlier run: left out of the stack" in over.stderr
    assert "in/depth.tif is a depth map of an earlier run: left out of the stack" in over.stderr
    assert "fused 3 frames" in over.stdout
    np.testing.assert_array_equal(read_image(tmp_path / "in" / "fused.png"), fused)


def test_an_output_named_as_an_input_file_is_refused(tmp_path: Path) -> None:
    _frames_folder(tmp_path / "in")
    before = (tmp_path / "in" / "f1.png").read_bytes()
    res = _cli("fuse", "in/f0.png", "in/f1.png", "-o", "in/f1.png", "--overwrite", cwd=tmp_path)
    assert res.returncode == 2
    assert "-o in/f1.png is also an input frame" in res.stderr
    assert (tmp_path / "in" / "f1.png").read_bytes() == before


def test_existing_depth_map_is_refused_too(tmp_path: Path) -> None:
    _frames_folder(tmp_path / "in")
    (tmp_path / "d.tif").write_bytes(b"keep me")
    res = _cli("fuse", "in", "-o", "o.png", "--depth-map", "d.tif", cwd=tmp_path)
    assert res.returncode == 2 and "--depth-map d.tif exists already" in res.stderr
    assert (tmp_path / "d.tif").read_bytes() == b"keep me"
    assert not (tmp_path / "o.png").exists()  # neither output is written


def test_z_step_without_depth_map_says_it_does_nothing(tmp_path: Path) -> None:
    _frames_folder(tmp_path / "in")
    res = _cli("fuse", "in", "-o", "o.png", "--z-step-um", "2", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "note: --z-step-um does nothing without --depth-map" in res.stderr
    assert res.stdout == ""


@pytest.mark.slow
def test_crop_prints_the_box(tmp_path: Path) -> None:
    _frames_folder(tmp_path / "drift", 4, shift_px=2)
    res = _cli("fuse", "drift", "-o", "a.tif", "--align", "--crop", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    box = re.search(r"cropped to rows (\d+):(\d+), columns (\d+):(\d+)", res.stderr)
    assert box, res.stderr
    y0, y1, x0, x1 = map(int, box.groups())
    assert read_image(tmp_path / "a.tif").shape[:2] == (y1 - y0, x1 - x0)
    assert x1 - x0 < 64  # the drift along x is cut off
    # copies of one frame: every frame covers the whole image (registration noise of
    # ~1e-7 px once cost a row and a column); --crop says so, even with -q
    frame = synthetic_stack((64, 64), 1, dtype="uint8", seed=5).frames[0]
    write_image(tmp_path / "one.png", frame)
    write_image(tmp_path / "two.png", frame)
    res = _cli("fuse", "one.png", "two.png", "-o", "b.tif", "--align", "--crop", "-q",
               cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "nothing to crop, every frame covers the whole image" in res.stderr
    assert "cropped to rows" not in res.stderr  # -q: no box printed
    assert read_image(tmp_path / "b.tif").shape[:2] == (64, 64)


def test_a_stack_of_one_frame_is_refused_as_everywhere(tmp_path: Path) -> None:
    from nanoro_optics.fusion.stack import ONE_FRAME_ERROR

    _frames_folder(tmp_path / "in", 1)
    # before: exit 0 with a copy of the frame and an all-NaN "filled" depth map
    res = _cli("fuse", "in", "-o", "o.tif", "--depth-map", "d.tif", cwd=tmp_path)
    assert res.returncode == 2 and ONE_FRAME_ERROR in res.stderr
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "d.tif").exists()
    with pytest.raises(ValueError, match="holds 1 frame"):
        fuse_stack(tmp_path / "in")


@pytest.mark.slow
def test_fusion_options_reach_the_fuser(tmp_path: Path) -> None:
    frames = _frames_folder(tmp_path / "in", 4)
    res = _cli("fuse", "in", "-o", "o.tif", "--hard", "--levels", "3", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ref = fuse_stack(frames, sharpness=None, levels=3).image
    np.testing.assert_array_equal(read_image(tmp_path / "o.tif"), ref)
    assert not np.array_equal(ref, fuse_stack(frames).image)  # the options changed the result


def test_bad_fusion_option_is_refused_before_reading(tmp_path: Path) -> None:
    _frames_folder(tmp_path / "in")
    res = _cli("fuse", "in", "-o", "o.tif", "--window", "4", cwd=tmp_path)
    assert res.returncode == 2 and "window_px must be odd, got 4" in res.stderr
    assert not (tmp_path / "o.tif").exists()


# ------------------------------------------------------------------------------- first run


def test_on_first_compile_fires_once_per_listening_and_stops(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tinykern.py").write_text(
        textwrap.dedent(
            """
            from nanoro_optics._numba import njit

            @njit()
            def twice(x):
                return 2 * x

            @njit()
            def thrice(x):
                return 3 * x

            @njit()
            def four(x):
                return 4 * x
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tinykern", raising=False)
    mod = importlib.import_module("tinykern")
    monkeypatch.setitem(sys.modules, "tinykern", mod)  # removed again after the test
    calls: list[int] = []
    stop = on_first_compile(lambda: calls.append(1))
    try:
        assert calls == []  # registering compiles nothing
        assert mod.twice(2) == 4  # a real compile (a new module: nothing cached)
        assert calls == [1]
        assert mod.thrice(2) == 6  # another compile: the callback is not called again
        assert calls == [1]
    finally:
        stop()
    stop()  # idempotent
    assert mod.four(2) == 8  # compiles after stop(): nobody listens
    assert calls == [1]
    with pytest.raises(TypeError, match="callback must be callable"):
        on_first_compile("not callable")  # type: ignore[arg-type]


def test_compile_notice_only_when_numba_compiles() -> None:
    import io as _io

    import numba

    from nanoro_optics.cli._first_run import NOTICE, compile_notice

    fresh = numba.njit(lambda x: x + 1)  # never compiled, not cached
    stream = _io.StringIO()
    with compile_notice(stream) as said:
        assert fresh(1) == 2 and fresh(2) == 3  # compiles once
    assert said.said and stream.getvalue() == NOTICE + "\n"  # once, whatever compiles
    quiet = _io.StringIO()
    with compile_notice(quiet) as said:
        assert fresh(3) == 4  # compiled already: nothing to say
    assert not said.said and quiet.getvalue() == ""
    off = _io.StringIO()
    with compile_notice(off, enabled=False):
        numba.njit(lambda x: x - 1)(1)
    assert off.getvalue() == ""
    later = _io.StringIO()  # the listener is gone after the block
    numba.njit(lambda x: x * 2)(1)
    assert later.getvalue() == ""


def test_no_compile_notice_on_a_warm_cache(tmp_path: Path) -> None:
    # before: "compiling fast kernels" on every run (a kernel the command never calls was
    # counted); the notice now follows numba's own compile events
    _frames_folder(tmp_path / "in", 3)
    warm = _cli("fuse", "in", "-o", "a.tif", "--depth-map", "d.tif", "--z-step-um", "-2",
                cwd=tmp_path)  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    again = _cli("fuse", "in", "-o", "b.tif", "--depth-map", "e.tif", "--z-step-um", "-2",
                 cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "compiling" not in again.stderr


@pytest.mark.slow
def test_depth_map_of_a_tiff_stack_in_um(tmp_path: Path) -> None:
    frames = synthetic_stack((48, 48), 4, dtype="uint16", channels=1, seed=2).frames
    tifffile.imwrite(tmp_path / "s.tif", frames, photometric="minisblack")
    res = _cli(
        "fuse", "s.tif", "-o", "o.tif", "--depth-map", "d.tif", "--z-step-um", "2.5", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "(um)" in res.stdout
    ref = fuse_stack(frames, z_um=2.5 * np.arange(4))
    np.testing.assert_allclose(tifffile.imread(tmp_path / "d.tif"), ref.depth, equal_nan=True)


def test_plan_of_one_image_says_image_not_images(tmp_path: Path) -> None:
    res = _cli(
        "plan", "--top", "5", "--bottom", "5", "--spacing", "2", "--margin-steps", "0", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "0 steps x 2 um, 1 image" in res.stdout


# ---------------------------------------------------------------- depth, confidence, bits


def test_fuse_writes_the_confidence_map_and_fills_depth_unless_told(tmp_path: Path) -> None:
    _frames_folder(tmp_path / "stack", 5)
    proc = _cli(
        "fuse", "stack", "-o", "out.tif", "--depth-map", "d.tif", "--confidence", "c.tif",
        "-q", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    depth, conf = tifffile.imread(tmp_path / "d.tif"), tifffile.imread(tmp_path / "c.tif")
    assert depth.dtype == conf.dtype == np.float32 and depth.shape == conf.shape == (64, 64)
    assert np.isfinite(depth).all() and conf.min() >= 0 and conf.max() <= 1
    ref = fuse_stack(synthetic_stack((64, 64), 5, dtype="uint8", seed=4).frames)
    np.testing.assert_array_equal(conf, ref.confidence)
    np.testing.assert_array_equal(depth, ref.depth)
    proc = _cli(
        "fuse", "stack", "-o", "o2.tif", "--depth-map", "d2.tif", "--keep-depth-holes", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    holes = tifffile.imread(tmp_path / "d2.tif")
    assert np.isnan(holes).any() and np.isnan(holes).mean() < 1
    proc = _cli("fuse", "stack", "-o", "o3.tif", "--keep-depth-holes", cwd=tmp_path)
    assert "--keep-depth-holes does nothing without a depth map" in proc.stderr


def test_fuse_refuses_frames_above_the_bit_depth_and_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    folder.mkdir()
    frames = np.full((3, 32, 32), 1000, np.uint16)
    frames[2, 5, 7] = 5000  # not a 12-bit value
    for k, f in enumerate(frames):
        tifffile.imwrite(folder / f"f{k}.tif", f)
    proc = _cli("fuse", "stack", "-o", "out.tif", "--bit-depth", "12", "-q", cwd=tmp_path)
    assert proc.returncode != 0
    assert "5000" in proc.stderr and "bit_depth=12" in proc.stderr and "f2.tif" in proc.stderr
    assert not (tmp_path / "out.tif").exists()
    ok = _cli("fuse", "stack", "-o", "out.tif", "--bit-depth", "13", "--noise-dn", "2", "-q",
              cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    ref = fuse_stack(frames, bit_depth=13, noise_dn=2.0).image
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), ref)


def test_confidence_and_depth_map_must_be_distinct_tiffs(tmp_path: Path) -> None:
    _frames_folder(tmp_path / "stack")
    same = _cli("fuse", "stack", "-o", "o.tif", "--depth-map", "m.tif", "--confidence", "m.tif",
                cwd=tmp_path)  # fmt: skip
    assert same.returncode != 0 and "same file" in same.stderr
    png = _cli("fuse", "stack", "-o", "o.tif", "--confidence", "c.png", cwd=tmp_path)
    assert png.returncode != 0 and "--confidence" in png.stderr and ".tif" in png.stderr
    assert not (tmp_path / "o.tif").exists()


def test_reference_middle_keeps_the_middle_frames_grid(tmp_path: Path) -> None:
    frames = _frames_folder(tmp_path / "stack", 5, shift_px=2)
    proc = _cli("fuse", "stack", "-o", "m.tif", "--align", "--reference", "middle", "-q",
                cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ref = fuse_stack(frames, align=True, reference="middle").image
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), ref)
    note = _cli("fuse", "stack", "-o", "n.tif", "--reference", "middle", cwd=tmp_path)
    assert "--reference does nothing without --align" in note.stderr


def test_maps_of_an_earlier_run_beside_the_frames_are_left_out(tmp_path: Path) -> None:
    from nanoro_optics.io import write_depth_map
    from nanoro_optics.pipeline import stack_files

    notes: list[str] = []

    frames = _frames_folder(tmp_path / "in")
    depth = np.zeros(frames.shape[1:3], np.float32)
    write_depth_map(tmp_path / "in" / "old_depth.tif", depth, unit="frame")
    write_depth_map(tmp_path / "in" / "old_conf.tif", depth, kind="confidence")
    tifffile.imwrite(tmp_path / "in" / "f9.tif", frames[0])  # a TIFF frame stays a frame
    got = stack_files([str(tmp_path / "in")], note=notes.append)
    assert [p.name for p in got] == ["f0.png", "f1.png", "f2.png", "f9.tif"]
    err = "\n".join(notes)
    assert "old_depth.tif is a depth map of an earlier run: left out of the stack" in err
    assert "old_conf.tif is a confidence map of an earlier run: left out of the stack" in err
    # named as an input itself, a map is refused rather than fused as a frame
    with pytest.raises(ValueError, match=r"old_depth\.tif is a depth map written by nanoro-optics"):
        stack_files([str(tmp_path / "in" / "f0.png"), str(tmp_path / "in" / "old_depth.tif")])
