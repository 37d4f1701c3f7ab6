"""Tests for ``nanoro-optics fuse``: outputs, bad input (nothing written), hand-off, progress."""

from __future__ import annotations

import io as stdio
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from nanoro_optics.cli import main
from nanoro_optics.cli.fuse import _Progress
from nanoro_optics.fusion import fuse_stack
from nanoro_optics.io import read_image, write_image
from nanoro_optics.pipeline import _HandOff as HandOff


def _stack(n: int = 4, shape: tuple[int, int] = (48, 64), *, rgb: bool = True) -> np.ndarray:
    """Frames of a tilted textured scene, each sharp in one band (uint8)."""
    rng = np.random.default_rng(0)
    scene = ndimage.gaussian_filter(rng.normal(size=(*shape, 3) if rgb else shape), 1.0)
    scene = (scene - scene.min()) / (scene.max() - scene.min()) * 255
    cols = np.arange(shape[1])
    depth = (n - 1) * cols / (shape[1] - 1)
    frames = []
    for k in range(n):
        sigma = 2.0 * np.abs(depth - k)
        blurred = [ndimage.gaussian_filter(scene, (s, s, 0)[: scene.ndim]) for s in (0, 2, 4, 6)]
        idx = np.clip(np.rint(sigma / 2).astype(int), 0, 3)
        frame = np.choose(idx[None, :, None] if rgb else idx[None, :], blurred)
        frames.append(np.rint(frame).astype(np.uint8))
    return np.array(frames)


def _write_pngs(folder: Path, frames: np.ndarray) -> list[Path]:
    folder.mkdir(exist_ok=True)
    return [write_image(folder / f"frame{k + 1}.png", f) for k, f in enumerate(frames)]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fuse_folder_writes_image_and_depth(tmp_path: Path, capsys) -> None:
    frames = _stack()
    _write_pngs(tmp_path / "in", frames)
    out, depth = tmp_path / "fused.png", tmp_path / "depth.tif"
    code = main(["fuse", str(tmp_path / "in"), "-o", str(out), "--depth-map", str(depth)])
    assert code == 0
    image = read_image(out)
    assert image.shape == frames.shape[1:] and image.dtype == np.uint8
    d = tifffile.imread(depth)
    assert d.dtype == np.float32 and d.shape == frames.shape[1:3]
    # the depth follows the tilt: left columns sharp in early frames, right ones late
    assert np.nanmean(d[:, :8]) < 1.0 < 2.0 < np.nanmean(d[:, -8:])
    assert "fused 4 frames (48x64x3 uint8)" in capsys.readouterr().out


def test_pixel_size_reaches_every_output_and_the_viewer_scale(tmp_path: Path) -> None:
    from nanoro_optics.io import output_record

    _write_pngs(tmp_path / "in", _stack(3))
    out, depth = tmp_path / "fused.tif", tmp_path / "depth.tif"
    args = ["fuse", str(tmp_path / "in"), "-o", str(out), "--depth-map", str(depth)]
    assert main([*args, "--z-step-um", "2", "--pixel-size-um", "0.65"]) == 0
    for path in (out, depth):
        assert output_record(path)["pixel_size_um"] == 0.65
        with tifffile.TiffFile(path) as tif:  # the standard tags: pixels per cm
            x_num, x_den = tif.pages[0].tags["XResolution"].value
            assert tif.pages[0].tags["ResolutionUnit"].value == 3
            assert abs(1e4 / (x_num / x_den) - 0.65) < 1e-6
    pytest.importorskip("napari")
    from nanoro_optics.napari._reader import napari_get_reader

    [(_, meta, _)] = napari_get_reader(str(depth))(str(depth))
    assert tuple(meta["scale"]) == (0.65, 0.65) and tuple(meta["units"]) == ("um", "um")


def test_exif_rotated_png_frames_fuse_in_their_displayed_orientation(tmp_path: Path) -> None:
    # the CLI prepares for the shape in the first PNG's header; an eXIf rotation swaps it
    from PIL import Image

    frames = _stack(3)
    (tmp_path / "in").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    for k, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "in" / f"f{k}.png", exif=exif)
    out = tmp_path / "o.png"
    assert main(["fuse", str(tmp_path / "in"), "-o", str(out), "-q"]) == 0
    rotated = np.ascontiguousarray(np.rot90(frames, k=-1, axes=(1, 2)))
    np.testing.assert_array_equal(read_image(out), fuse_stack(rotated).image)


def test_z_step_and_quiet_and_multipage_tiff(tmp_path: Path, capsys) -> None:
    frames = _stack(rgb=False)
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack")
    out, depth = tmp_path / "f.tif", tmp_path / "d.tif"
    args = ["fuse", str(tmp_path / "stack.tif"), "-o", str(out), "--depth-map", str(depth)]
    assert main([*args, "--z-step-um", "2.5", "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    d = tifffile.imread(depth)
    assert np.nanmax(d) > 5.0  # in um: frame 3 is at 7.5 um
    assert read_image(out).shape == frames.shape[1:]


def test_copies_of_one_frame_come_back_as_it_is(tmp_path: Path) -> None:
    frame = np.random.default_rng(1).integers(0, 65535, (20, 30, 3)).astype(np.uint16)
    write_image(tmp_path / "a.png", frame)
    write_image(tmp_path / "b.png", frame)
    files = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main(["fuse", *files, "-o", str(tmp_path / "o.tif"), "-q"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "o.tif"), frame)
    # one frame alone is refused (the policy of every front end), nothing written
    assert main(["fuse", files[0], "-o", str(tmp_path / "p.tif"), "-q"]) == 2
    assert not (tmp_path / "p.tif").exists()


def test_align_and_crop(tmp_path: Path) -> None:
    frames = _stack(5, (96, 96))
    # drift of one pixel per frame along x
    moved = np.stack([np.roll(f, k, axis=1) for k, f in enumerate(frames)])
    _write_pngs(tmp_path / "in", moved)
    out = tmp_path / "a.tif"
    assert main(["fuse", str(tmp_path / "in"), "-o", str(out), "--align", "--crop", "-q"]) == 0
    fused = read_image(out)
    assert fused.shape[0] <= 96 and 88 <= fused.shape[1] < 96  # about 4 px of drift cut off


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("shape", r"frame 2 \(.*frame3\.png\) has shape \(48, 63, 3\)"),
        ("dtype", r"frame3\.png.*dtype uint16"),
        ("truncate", r"cannot read .*frame3\.png"),
        ("garbage", r"cannot read .*frame3\.png"),
    ],
)
def test_bad_frame_names_file_and_writes_nothing(tmp_path: Path, capsys, damage, match) -> None:
    frames = _stack()
    paths = _write_pngs(tmp_path / "in", frames)
    bad = paths[2]
    if damage == "shape":
        write_image(bad, frames[2][:, :-1])
    elif damage == "dtype":
        write_image(bad, frames[2].astype(np.uint16))
    elif damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(b"not a png at all")
    out = tmp_path / "out" / "fused.tif"
    out.parent.mkdir()
    previous = tmp_path / "out" / "depth.tif"
    previous.write_bytes(b"old depth map")  # an existing output must survive a failed run
    args = ["fuse", str(tmp_path / "in"), "-o", str(out), "--depth-map", str(previous)]
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err
    # one error line (after the first-run notice, when the kernels were not compiled yet)
    assert err.splitlines()[-1].startswith("nanoro-optics fuse: error:")
    assert re.search(match, err), err
    assert _listing(tmp_path / "out") == ["depth.tif"]
    assert previous.read_bytes() == b"old depth map"


def test_nan_pixels_in_a_float_stack(tmp_path: Path, capsys) -> None:
    data = np.random.default_rng(2).random((3, 16, 16)).astype(np.float32)
    data[2, 5, 7] = np.nan
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    assert main(["fuse", str(tmp_path / "s.tif"), "-o", str(tmp_path / "o.tif")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"frame 2 \(.*s\.tif, page 2\): pixel \(5, 7\) is nan", err), err
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["-o", "{in}/frame2.png"], r"-o .*frame2\.png is also an input frame"),
        (["-o", "{in}/frame2.png", "--overwrite"], r"-o .*frame2\.png is also an input frame"),
        (["{in}/frame2.png", "-o", "{in}/frame2.png", "--overwrite"], "is also an input frame"),
        (["-o", "{tmp}/o.png", "--depth-map", "{in}/frame1.png"], r"depth map is a float32 TIFF"),
        (["-o", "{tmp}/o.gif"], "unknown image format '.gif'"),
        (["-o", "{tmp}/missing/o.png"], "does not exist"),
        (["-o", "{tmp}/o.png", "--crop"], "--crop needs --align"),
        (["-o", "{tmp}/o.png", "--z-step-um", "0"], "must not be 0"),
        (["-o", "{tmp}/o.png", "--na", "1.2"], "missing --n-immersion, --n-sample"),
        (
            ["-o", "{tmp}/o.png", "--n-immersion", "1.5", "--n-sample", "1.3", "--na", "1"],
            "give --z-step-um",
        ),
        (["-o", "{tmp}/o.tif", "--depth-map", "{tmp}/o.tif"], "same file"),
        (["-o", "{tmp}/o.tif", "--pixel-size-um", "-0.5"], "pixel_size_um must be > 0"),
        (["-o", "{tmp}/o.tif", "--pixel-size-um", "nan"], "pixel_size_um"),
        (["-o", "{tmp}/o.tif", "--halo-map", "{tmp}/h.png", "--halo", "auto"], "uint8 TIFF"),
        (["-o", "{tmp}/o.tif", "--halo-map", "{tmp}/h.tif"], "the halo correction is off"),
        (["-o", "{tmp}/o.tif", "--halo", "auto", "--halo-map", "{tmp}/o.tif"], "same file"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path: Path, capsys, extra, match) -> None:
    _write_pngs(tmp_path / "in", _stack(3))
    fmt = {"in": str(tmp_path / "in"), "tmp": str(tmp_path)}
    args = ["fuse", str(tmp_path / "in"), *[a.format(**fmt) for a in extra]]
    before = {p: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    assert main(args) == 2
    assert re.search(match, capsys.readouterr().err)
    assert _listing(tmp_path) == ["in"]
    assert {p: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before


def test_sixteen_bit_to_jpeg_is_refused_before_writing(tmp_path: Path, capsys) -> None:
    frames = _stack(2).astype(np.uint16) * 257
    _write_pngs(tmp_path / "in", frames)
    out, depth = tmp_path / "o.jpg", tmp_path / "d.tif"
    args = ["fuse", str(tmp_path / "in"), "-o", str(out), "--depth-map", str(depth)]
    assert main(args) == 2
    assert "JPEG holds 8-bit images only" in capsys.readouterr().err
    assert _listing(tmp_path) == ["in"]


def test_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    assert main(["fuse", str(tmp_path / "in"), "-o", str(tmp_path / "o.png")]) == 2
    assert "empty stack" in capsys.readouterr().err


# --------------------------------------------------------------------------- hand-off / bar


def test_handoff_keeps_order_and_reraises_at_the_failing_item() -> None:
    def frames():
        yield from range(5)
        raise ValueError("frame 5 is broken")

    got = []
    with pytest.raises(ValueError, match="frame 5 is broken"):
        for item in HandOff(frames()):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_handoff_decodes_the_next_frame_only_once_the_current_one_is_released() -> None:
    produced = []

    def frames():
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    before = threading.active_count()
    handoff = HandOff(frames())
    it = iter(handoff)
    assert next(it) == 0
    time.sleep(0.3)
    assert produced == [0]  # frame 0 is held: its buffer is not decoded into
    handoff.release()
    deadline = time.time() + 5
    while len(produced) < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert produced == [0, 1]  # one frame ahead, not more
    assert next(it) == 1
    assert next(it) == 2  # asking for the next frame releases the current one
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


class _Tty(stdio.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    tty = _Tty()
    bar = _Progress(4, tty, enabled=True)
    bar.update(2)
    bar.close()
    assert "fusing" in tty.getvalue() and "2/4" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    pipe = stdio.StringIO()
    bar = _Progress(4, pipe, enabled=True)
    bar.update(2)
    bar.close()
    assert pipe.getvalue() == ""
    quiet = _Tty()
    bar = _Progress(None, quiet, enabled=False)
    bar.update(1)
    assert quiet.getvalue() == ""


def test_mmap_threshold_returns_freed_frame_buffers_at_once() -> None:
    """glibc: after the fix, a freed 40 MB buffer allocated by a thread leaves the RSS."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt's mmap threshold is glibc's")
    script = """
import threading, numpy as np
from nanoro_optics.pipeline import _fix_mmap_threshold as fix_mmap_threshold
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
fixed = fix_mmap_threshold()
big = np.ones(100 * 2**20, np.uint8)
del big  # (without the fix glibc now raises its threshold to this size, up to 32 MiB)
def work():
    for _ in range(3):
        a = np.ones(30 * 2**20, np.uint8)
        del a
before = rss()
t = threading.Thread(target=work); t.start(); t.join()
print(fixed, round(rss() - before))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    fixed, kept_mb = out.stdout.split()
    assert fixed == "True"
    assert int(kept_mb) < 5  # every 30 MiB buffer was unmapped when freed


def test_downward_scan_and_index_mismatch_from_the_command_line(tmp_path: Path) -> None:
    from nanoro_optics.fusion import FusionOptions
    from nanoro_optics.io import output_record
    from nanoro_optics.psf import IndexMismatch

    frames = _stack(4)
    _write_pngs(tmp_path / "in", frames)
    base = ["fuse", str(tmp_path / "in"), "--z-step-um", "-2", "-q"]
    assert main([*base, "-o", str(tmp_path / "a.tif"), "--depth-map", str(tmp_path / "d.tif")]) == 0
    ref = fuse_stack(frames, z_step_um=-2.0)  # a scan moving down: frame k at -2k um
    nominal = tifffile.imread(tmp_path / "d.tif")
    np.testing.assert_array_equal(nominal, ref.depth)
    assert np.nanmax(nominal) <= 0.0 and np.nanmin(nominal) >= -6.0
    mismatch = ["--n-immersion", "1.518", "--n-sample", "1.33", "--na", "1.2"]
    out = ["-o", str(tmp_path / "b.tif"), "--depth-map", str(tmp_path / "e.tif")]
    assert main([*base, *mismatch, *out]) == 0
    water = IndexMismatch(
        interface_um=0.0, na=1.2, n_immersion=1.518, n_sample=1.33, model="carlsson"
    )
    actual = tifffile.imread(tmp_path / "e.tif")
    np.testing.assert_array_equal(actual, water.relabel(ref.depth, -2.0 * np.arange(4)))
    assert np.nanmin(actual) > np.nanmin(nominal)  # water: shallower than the stage says
    record = output_record(tmp_path / "e.tif")
    assert record is not None
    assert FusionOptions.from_json(record["settings"]).index_mismatch == water


def test_the_program_entry_runs_atexit_flushes_and_keeps_the_status(tmp_path: Path) -> None:
    # exit_main ends the process without finalization: what finalization would have done
    # for the user (atexit handlers, buffered output through a pipe, the status) must stay
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a buffered pipe
    _write_pngs(tmp_path / "in", _stack(3, (16, 24)))
    script = (
        "import atexit, sys\n"
        "from nanoro_optics.cli import exit_main\n"
        "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
        "sys.argv = ['nanoro-optics', 'fuse', *sys.argv[1:]]\n"
        "exit_main()\n"
    )
    ok = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "in"), "-o", str(tmp_path / "f.png")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert re.match(r"fused 3 frames \(16x24x3 uint8\) into .*f\.png in [0-9.]+ s\n$", ok.stdout)
    assert "handler ran" in ok.stderr
    assert read_image(tmp_path / "f.png").shape == (16, 24, 3)
    bad = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "missing"), "-o", str(tmp_path / "g.png")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 2
    assert "no such file" in bad.stderr and "handler ran" in bad.stderr
