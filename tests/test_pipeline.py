"""The file pipeline: files -> fuser -> files, shared by the CLI, the batch and the demo."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nanoro_optics import io as nio
from nanoro_optics import pipeline
from nanoro_optics.fusion import FusionOptions, fuse_stack, synthetic_stack
from nanoro_optics.pipeline import FusionOutputs, fuse_files, fuse_to_files, stack_files


def _folder(folder: Path, n: int = 4, *, shift_px: int = 0) -> np.ndarray:
    frames = synthetic_stack((48, 56), n, dtype="uint8", seed=6).frames
    if shift_px:
        frames = np.stack([np.roll(f, k * shift_px, axis=1) for k, f in enumerate(frames)])
    folder.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(frames):
        nio.write_image(folder / f"f{k}.png", f)
    return frames


def test_the_files_fuse_as_the_arrays_do(tmp_path: Path) -> None:
    frames = _folder(tmp_path / "in")
    opts = FusionOptions(z_step_um=-1.5, levels=4)
    out = FusionOutputs(tmp_path / "o.tif", tmp_path / "d.tif", tmp_path / "c.tif")
    done = fuse_to_files(tmp_path / "in", out, opts)
    ref = fuse_stack(frames, opts)
    assert done.n_frames == 4 and done.depth_unit == "um" and done.files[0] == out.image
    np.testing.assert_array_equal(tifffile.imread(out.image), ref.image)
    np.testing.assert_array_equal(tifffile.imread(out.depth), ref.depth)
    np.testing.assert_array_equal(tifffile.imread(out.confidence), ref.confidence)
    # a downward scan: the depth runs from 0 (first frame) down to -4.5 um
    assert np.nanmax(ref.depth) <= 0.0 and np.nanmin(ref.depth) >= -4.5
    np.testing.assert_array_equal(fuse_files(tmp_path / "in", opts).depth, ref.depth)


def test_each_file_is_decoded_at_most_twice(tmp_path: Path, monkeypatch) -> None:
    _folder(tmp_path / "in", 5, shift_px=1)
    decoded: Counter[str] = Counter()
    original = nio.FileDecoder.frames

    def counting(self, path):  # every decode of the pipeline goes through a FileDecoder
        decoded[Path(path).name] += 1
        return original(self, path)

    monkeypatch.setattr(nio.FileDecoder, "frames", counting)
    image, depth = tmp_path / "o.tif", tmp_path / "d.tif"
    for opts, outputs, times in (
        (FusionOptions(), FusionOutputs(image), 1),  # the range kept while fusing
        (FusionOptions(), FusionOutputs(image, depth), 2),  # fusing pass + range pass
        (FusionOptions(align=True, reference="middle"), FusionOutputs(image), 2),  # first pass
    ):
        decoded.clear()
        fuse_to_files(tmp_path / "in", outputs, opts, overwrite=True)
        assert decoded == {f"f{k}.png": times for k in range(5)}


@pytest.mark.parametrize("kind", ["uint8 png", "uint16 tif", "float32 tif", "float64 grey tif"])
def test_the_range_kept_while_fusing_gives_the_image_of_the_range_pass(
    tmp_path: Path, kind: str
) -> None:
    # without a depth map the range is kept while fusing; with one it comes from a second
    # read of the files: the same fused image either way, and the arrays' image
    base = synthetic_stack((40, 52), 5, dtype="uint16" if "16" in kind else "uint8", seed=8)
    frames = base.frames
    if "float" in kind:
        frames = (frames.astype(np.float64) / 255.0 * 3.5 - 0.25).astype(kind.split()[0])
    if "grey" in kind:
        frames = frames[..., 1]
    (tmp_path / "in").mkdir()
    for k, f in enumerate(frames):
        nio.write_image(tmp_path / "in" / f"f{k}.{kind.split()[-1]}", f)
    kept = fuse_to_files(tmp_path / "in", FusionOutputs(tmp_path / "a.tif"))
    passed = fuse_to_files(
        tmp_path / "in", FusionOutputs(tmp_path / "b.tif", tmp_path / "b_depth.tif")
    )
    assert kept.dtype == passed.dtype == str(frames.dtype)
    want = fuse_stack(frames).image
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), want)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"), want)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_an_output_found_among_the_inputs_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    # before: "f2.png is the output of -o: left out of the stack", then the frame was replaced
    _folder(tmp_path / "in")
    before = (tmp_path / "in" / "f2.png").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"f2\.png is also an input frame"):
            fuse_to_files(
                tmp_path / "in",
                FusionOutputs(tmp_path / "in" / "f2.png"),
                overwrite=overwrite,
            )
    assert (tmp_path / "in" / "f2.png").read_bytes() == before
    with pytest.raises(ValueError, match=r"depth output .*f1\.png"):
        stack_files(
            [tmp_path / "in" / "f0.png", tmp_path / "in" / "f1.png"],
            outputs=[("depth output", tmp_path / "in" / "f1.png")],
        )


@pytest.mark.parametrize("fault", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_the_outputs_of_a_run_appear_together_or_not_at_all(
    tmp_path: Path, monkeypatch, fault: BaseException
) -> None:
    # before: the fused image stayed when the depth map could not be written (disk full,
    # SIGINT between the outputs)
    _folder(tmp_path / "in")
    out = FusionOutputs(tmp_path / "o.png", tmp_path / "d.tif", tmp_path / "c.tif")
    real = nio.write_depth_map

    def failing(path, *args, **kwargs):
        if Path(path).name == "c.tif":
            raise fault
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nio, "write_depth_map", failing)
    with pytest.raises(type(fault)):
        fuse_to_files(tmp_path / "in", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no temporary


def test_existing_outputs_are_refused_before_reading(tmp_path: Path) -> None:
    _folder(tmp_path / "in")
    (tmp_path / "d.tif").write_bytes(b"keep")
    with pytest.raises(ValueError, match=r"depth output .*d\.tif exists already"):
        fuse_to_files(tmp_path / "in", FusionOutputs(tmp_path / "o.tif", tmp_path / "d.tif"))
    assert (tmp_path / "d.tif").read_bytes() == b"keep" and not (tmp_path / "o.tif").exists()
    with pytest.raises(ValueError, match="same file"):
        pipeline.check_outputs(FusionOutputs(tmp_path / "o.tif", tmp_path / "o.tif"))
    with pytest.raises(TypeError, match="outputs must be a FusionOutputs"):
        pipeline.check_outputs("o.tif")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="image must be a path"):
        FusionOutputs(3)  # type: ignore[arg-type]


def test_a_one_frame_stack_is_refused(tmp_path: Path) -> None:
    _folder(tmp_path / "in", 1)
    with pytest.raises(ValueError, match="holds 1 frame"):
        fuse_to_files(tmp_path / "in", FusionOutputs(tmp_path / "o.tif"))
    assert not (tmp_path / "o.tif").exists()


def test_an_earlier_runs_fused_image_is_left_out_with_a_note(tmp_path: Path) -> None:
    # before: run 2 fused run 1's fused.png as a sixth frame, silently
    frames = _folder(tmp_path / "in", 5)
    opts = FusionOptions(levels=4)
    fuse_to_files(tmp_path / "in", FusionOutputs(tmp_path / "in" / "fused.png"), opts)
    record = nio.output_record(tmp_path / "in" / "fused.png")
    assert record is not None and record["kind"] == "fused"
    assert FusionOptions.from_json(record["settings"]) == opts  # the options that made it
    notes: list[str] = []
    done = fuse_to_files(
        tmp_path / "in", FusionOutputs(tmp_path / "fused2.png"), opts, note=notes.append
    )
    assert done.n_frames == 5
    assert notes == [f"{tmp_path / 'in' / 'fused.png'} is a fused image of an earlier run: "
                     "left out of the stack"]  # fmt: skip
    np.testing.assert_array_equal(
        nio.read_image(tmp_path / "fused2.png"), fuse_stack(frames, opts).image
    )
    with pytest.raises(ValueError, match=r"fused\.png is a fused image written by nanoro-optics"):
        stack_files([tmp_path / "in" / "f0.png", tmp_path / "in" / "fused.png"])
