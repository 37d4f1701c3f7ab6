"""The halo correction next to occluding edges (:mod:`nanoro_optics.fusion.halo`)."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from nanoro_optics.fusion import FusionOptions, fuse_stack, scene_stack, synthetic_stack
from nanoro_optics.fusion.frame_range import frame_range
from nanoro_optics.fusion.halo import MIN_STEP_FRAMES, HaloReport, correct_halo, psf_otf

#: half-width (px) of the band around the true edges the halo is scored in (as the
#: benchmark's hard cases score it)
BAND_PX = 10
#: the least gain (dB) in the band over the pyramid fusion on a layered scene
MIN_BAND_GAIN_DB = 2.0
#: the same with alignment (the frames resampled onto the result's grid: less is gained)
MIN_ALIGNED_BAND_GAIN_DB = 1.0
#: the least gain (dB) over the whole image there
MIN_WHOLE_GAIN_DB = 0.5
#: the least gain (dB) in the band over the pyramid fusion next to fibres 1 to 3 px wide
#: (that the depth map spreads over many times their width, or misses)
MIN_FIBRE_BAND_GAIN_DB = 3.0
#: how close (DN) the extension of a level field comes to it far from where it is known
EXTEND_LEVEL_DN = 1e-6
#: OTF values may exceed 1 by float rounding only
OTF_ROUNDING = 1e-12
#: next to a dark occluder over a bright background (12 bits, photon noise), the least share
#: of the band within 3 px of the edge the check keeps corrected, and the least band gain
#: (dB) over the pyramid fusion
MIN_NEAR_EDGE_SHARE = 0.5
MIN_DIM_BAND_GAIN_DB = 2.0
#: relative error allowed of the check's noise slope (the lower quartile of the blocks
#: lies a few per cent below the noise)
NOISE_SLOPE_RTOL = 0.2


def _psnr(img: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    err = (np.asarray(img, np.float64) - truth) ** 2
    if mask is not None:
        err = err[mask]
    return float(10 * np.log10(255.0**2 / np.mean(err)))


@pytest.fixture(scope="module")
def occlusion():  # type: ignore[no-untyped-def]
    scene = scene_stack("occlusion", (160, 160), 8, seed=1)
    off = fuse_stack(scene.frames)
    auto = fuse_stack(scene.frames, halo="auto")
    return scene, off, auto


def test_correction_approaches_the_truth_in_the_band(occlusion) -> None:  # type: ignore[no-untyped-def]
    scene, off, auto = occlusion
    band = ndimage.distance_transform_edt(~scene.edges) <= BAND_PX
    gain_band = _psnr(auto.image, scene.truth, band) - _psnr(off.image, scene.truth, band)
    gain_whole = _psnr(auto.image, scene.truth) - _psnr(off.image, scene.truth)
    assert gain_band >= MIN_BAND_GAIN_DB, gain_band
    assert gain_whole >= MIN_WHOLE_GAIN_DB, gain_whole
    rep = auto.halo
    assert isinstance(rep, HaloReport) and rep.note == ""
    # no speck: every corrected area is at least a band's worth of pixels
    from nanoro_optics.fusion.halo import MIN_CORRECTED_PX

    lab, n = ndimage.label(rep.corrected, np.ones((3, 3), bool))
    assert n >= 1 and np.bincount(lab.ravel())[1:].min() >= MIN_CORRECTED_PX
    assert rep.corrected_fraction == pytest.approx(rep.corrected.mean())
    assert 0 < rep.corrected_fraction <= rep.candidate_fraction
    assert np.isfinite(rep.residual_dn) and rep.residual_dn > 0


def test_thin_fibres_are_corrected() -> None:
    from nanoro_optics.fusion.scenes import occlusion_stack

    scene = occlusion_stack((160, 160), 7, variant="fibres", psf="gaussian", seed=1)
    off = fuse_stack(scene.frames)
    auto = fuse_stack(scene.frames, halo="auto")
    gain = _psnr(auto.image, scene.truth, scene.band) - _psnr(off.image, scene.truth, scene.band)
    assert gain >= MIN_FIBRE_BAND_GAIN_DB, gain


def test_check_keeps_the_correction_next_to_a_dim_occluder() -> None:
    from nanoro_optics.fusion.scenes import occlusion_stack

    scene = occlusion_stack((160, 160), 7, variant="dim", psf="gaussian", bit_depth=12, seed=1)
    off = fuse_stack(scene.frames)
    auto = fuse_stack(scene.frames, halo="auto")
    occluder = scene.layers[-1].matte > 0.5
    near = scene.band & (ndimage.distance_transform_edt(~occluder) <= 3)
    assert auto.halo.corrected[near].mean() >= MIN_NEAR_EDGE_SHARE

    def psnr(img: np.ndarray) -> float:
        err = (np.asarray(img, np.float64) - scene.truth)[scene.band] ** 2
        return float(10 * np.log10(scene.white_level**2 / np.mean(err)))

    assert psnr(auto.image) - psnr(off.image) >= MIN_DIM_BAND_GAIN_DB


def test_check_noise_follows_the_signal_and_never_falls_below_the_fusers() -> None:
    from nanoro_optics.fusion.halo import _noise_line, _Windows

    rng = np.random.default_rng(0)
    level = np.broadcast_to(np.linspace(100.0, 3000.0, 160), (160, 160))
    photon = {
        k: (level + rng.normal(0, 1, level.shape) * np.sqrt(4 + 0.2 * level))[None] for k in (2, 4)
    }
    a, b, top = _noise_line(_Windows(photon), (2, 4), np.array([2.0]))[0]
    assert b == pytest.approx(0.2, rel=NOISE_SLOPE_RTOL)
    assert top <= (4 + 0.2 * 3000.0) * (1 + NOISE_SLOPE_RTOL)  # the noisiest level measured
    flat = {k: (level + rng.normal(0, 3.0, level.shape))[None] for k in (2, 4)}
    a, b, top = _noise_line(_Windows(flat), (2, 4), np.array([3.0]))[0]
    assert a + b * 3000.0 <= 9.0 * (1 + NOISE_SLOPE_RTOL)
    # a window of one level throughout (the bins' levels a hair apart): whatever slope the
    # fit finds, the variance it gives stays at what the blocks measured
    one = {k: (500.0 + rng.normal(0, 3.0, level.shape))[None] for k in (2, 4)}
    a, b, top = _noise_line(_Windows(one), (2, 4), np.array([3.0]))[0]
    assert np.isfinite([a, b, top]).all() and top <= 9.0 * (1 + NOISE_SLOPE_RTOL)


def test_main_pair_is_not_fitted_where_the_third_layer_is_in_focus() -> None:
    from nanoro_optics.fusion.halo import MIN_STEP_FRAMES, _plan

    depth = np.zeros((256, 256), np.float32)
    depth[:, 128:] = 10.0
    depth[40:120, 40:100] = 5.0  # a third layer half way
    plans = _plan(depth, (0, 0), 11)
    assert len(plans) == 3
    main = plans[0]
    assert main.frames[:2] == (0, 10) and main.main is None
    (fit,) = main.fit_frames
    assert abs(fit - 5) >= MIN_STEP_FRAMES / 2
    assert 0 < fit < 10 and fit not in main.check_frames and fit in main.frames[2:]


def test_a_plate_with_holes_searches_its_background_beyond_the_depth_maps_mode() -> None:
    from nanoro_optics.fusion.halo import _plan, _sharper, _Windows

    # a plate in focus in frame 10 over a window, its holes' depth smeared to frame 6 (the
    # focus measure mixes their background with the plate's glow)
    yy, xx = np.mgrid[0:256, 0:256]
    depth = np.full((256, 256), 10.0, np.float32)
    for cy, cx in [(60 + 45 * i, 60 + 45 * j) for i in range(4) for j in range(4)]:
        depth[np.hypot(yy - cy, xx - cx) < 8] = 6.0
    (main,) = _plan(depth, (0, 0), 11)
    assert main.frames[:2] == (6, 10)
    assert main.deeper == (tuple(range(5)), ())
    assert set(main.frames) == set(range(11))  # the check's frames follow the layers found
    # the same depths reaching the window's border: no plate with holes, nothing beyond
    depth[:, :20] = 6.0
    (plain,) = _plan(depth, (0, 0), 11)
    assert plain.deeper == ((), ()) and 0 not in plain.frames
    # the frame of most detail beyond the mode is the layer's
    rng = np.random.default_rng(1)
    windows = {k: rng.normal(100.0, 1.0 + (6 - k), (1, 64, 64)) for k in range(7)}
    region = np.ones((64, 64), bool)
    assert _sharper(_Windows(windows), 6, 5, region, (0, 1, 2, 3, 4)) == 0
    assert _sharper(_Windows(windows), 6, None, region) == 6


def test_extension_keeps_its_level_far_from_the_known_pixels() -> None:
    from nanoro_optics.fusion._halo_matte import extend

    values = np.full((2, 120, 120), 80.0)
    values[1] = 30.0
    known = np.zeros((120, 120))
    known[:10, :10] = 1.0  # a corner only: the far corner is > 100 px away
    out = extend(values, known, 3.0)
    assert np.abs(out[0] - 80.0).max() <= EXTEND_LEVEL_DN
    assert np.abs(out[1] - 30.0).max() <= EXTEND_LEVEL_DN


def test_range_rule_holds_outside_the_corrected_map(occlusion) -> None:  # type: ignore[no-untyped-def]
    scene, off, auto = occlusion
    lo, hi = frame_range(scene.frames)
    keep = ~auto.halo.corrected
    assert keep.any() and auto.halo.corrected.any()
    inside = (auto.image >= lo) & (auto.image <= hi)
    assert inside[keep].all()
    # outside the map: the pyramid fusion's pixels, exactly (and its depth map)
    assert np.array_equal(auto.image[keep], off.image[keep])
    assert np.array_equal(auto.depth, off.depth, equal_nan=True)
    assert off.halo is None


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(lambda: synthetic_stack((128, 128), 8, seed=2).frames, id="smooth"),
        pytest.param(lambda: scene_stack("thick", (96, 96), 6, seed=0).frames, id="thick"),
        pytest.param(
            lambda: scene_stack("fluorescence", (192, 192), 8, seed=3).frames, id="fluorescence"
        ),
    ],
)
def test_no_occlusion_no_action(frames) -> None:  # type: ignore[no-untyped-def]
    stack = frames()
    off = fuse_stack(stack)
    auto = fuse_stack(stack, halo="auto")
    assert not auto.halo.corrected.any()
    assert auto.halo.corrected_fraction == 0.0
    assert np.array_equal(auto.image, off.image)


def test_correct_halo_leaves_a_flat_stack_alone() -> None:
    flat = np.full((4, 40, 40), 100, np.uint8)
    depth = np.zeros((40, 40), np.float32)
    depth[:, 20:] = 3.0  # a step, but nothing in the frames to fit
    out, rep = correct_halo(flat[0], depth, flat, n_frames=4, noise_dn=1.0)
    assert np.array_equal(out, flat[0]) and not rep.corrected.any()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"halo must be one of \('off', 'auto'\), got 'on'"):
        FusionOptions(halo="on")
    with pytest.raises(TypeError, match="halo must be a str"):
        FusionOptions(halo=1)  # type: ignore[arg-type]
    assert FusionOptions().halo == "off"
    assert FusionOptions.from_json(FusionOptions(halo="auto").to_json()).halo == "auto"


def test_correct_halo_refuses_bad_inputs() -> None:
    frames = np.zeros((3, 16, 16), np.uint8)
    depth = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match=r"depth has shape \(16, 15\)"):
        correct_halo(frames[0], depth[:, :15], frames, n_frames=3, noise_dn=1.0)
    with pytest.raises(TypeError, match="depth must be a float array"):
        correct_halo(frames[0], depth.astype(int), frames, n_frames=3, noise_dn=1.0)
    with pytest.raises(ValueError, match="n_frames must be >= 2, got 1"):
        correct_halo(frames[0], depth, frames[:1], n_frames=1, noise_dn=1.0)
    with pytest.raises(TypeError, match="n_frames must be an int"):
        correct_halo(frames[0], depth, frames, n_frames=3.0, noise_dn=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_dn must be finite and > 0"):
        correct_halo(frames[0], depth, frames, n_frames=3, noise_dn=0.0)
    with pytest.raises(ValueError, match=r"frames has shape \(3, 16, 16\), expected \(4"):
        correct_halo(frames[0], depth, frames, n_frames=4, noise_dn=1.0)
    with pytest.raises(TypeError, match="image must be an integer or float array"):
        correct_halo(frames[0].astype(object), depth, frames, n_frames=3, noise_dn=1.0)
    with pytest.raises(ValueError, match=r"confidence has shape \(4, 4\)"):
        correct_halo(frames[0], depth, frames, n_frames=3, noise_dn=1.0, confidence=np.ones((4, 4)))


def test_what_cannot_be_corrected_says_why(occlusion) -> None:  # type: ignore[no-untyped-def]
    scene, off, _ = occlusion
    once = fuse_stack(iter(list(scene.frames)), halo="auto")  # a one-shot iterable
    assert "read again" in once.halo.note and not once.halo.corrected.any()
    assert np.array_equal(once.image, off.image)


def test_a_streaming_fuser_corrects_when_given_the_frames_again(occlusion) -> None:  # type: ignore[no-untyped-def]
    from nanoro_optics.fusion import StackFuser

    scene, off, auto = occlusion
    frames = scene.frames

    def fused() -> StackFuser:
        fuser = StackFuser(halo="auto")
        for frame in frames:
            fuser.add(frame)
        return fuser

    # the frames again as an array, a list or a callable: the same correction as fuse_stack
    for again in (frames, list(frames), lambda k: frames[k]):
        res = fused().result(frames=again)
        assert res.halo.note == "" and np.array_equal(res.image, auto.image)
        assert np.array_equal(res.halo.corrected, auto.halo.corrected)
    assert np.array_equal(fuse_stack(list(frames), halo="auto").image, auto.image)
    # without them: the pyramid fusion, and the report says why (never silently)
    bare = fused().result()
    assert "result() without frames=" in bare.halo.note and not bare.halo.corrected.any()
    assert np.array_equal(bare.image, off.image)
    with pytest.raises(ValueError, match=r"frames has 7 frames but 8 were fused"):
        fused().result(frames=frames[:7])
    # halo="off" reads nothing: the frames given are not even looked at
    plain = StackFuser()
    for frame in frames:
        plain.add(frame)
    res = plain.result(frames=frames[:2])
    assert res.halo is None and np.array_equal(res.image, off.image)


def test_aligned_frames_are_corrected_on_the_result_grid(occlusion) -> None:  # type: ignore[no-untyped-def]
    scene, off, _ = occlusion
    aligned = fuse_stack(scene.frames, halo="auto", align=True)
    assert aligned.halo.note == "" and aligned.halo.corrected.any()
    band = ndimage.distance_transform_edt(~scene.edges) <= BAND_PX
    gain = _psnr(aligned.image, scene.truth, band) - _psnr(off.image, scene.truth, band)
    assert gain >= MIN_ALIGNED_BAND_GAIN_DB, gain


def test_depth_in_um_gives_the_same_correction(occlusion) -> None:  # type: ignore[no-untyped-def]
    scene, _, auto = occlusion
    um = fuse_stack(scene.frames, halo="auto", z_step_um=-2.5)
    assert um.depth_unit == "um"
    assert np.array_equal(um.halo.corrected, auto.halo.corrected)
    assert np.array_equal(um.image, auto.image)


def test_cropped_result_crops_the_map(occlusion) -> None:  # type: ignore[no-untyped-def]
    _, _, auto = occlusion
    part = auto.cropped((10, 90, 20, 150))
    assert part.halo is not None
    assert np.array_equal(part.halo.corrected, auto.halo.corrected[10:90, 20:150])
    assert part.halo.corrected_fraction == auto.halo.corrected_fraction  # the run's number


def test_cli_flag_sets_the_field() -> None:
    from nanoro_optics.cli._fusion_options import add_fusion_arguments, fuser_options

    parser = argparse.ArgumentParser()
    add_fusion_arguments(parser)
    assert fuser_options(parser.parse_args(["--halo", "auto"]))["halo"] == "auto"
    assert "halo" not in fuser_options(parser.parse_args([]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--halo", "on"])


def test_file_pipeline_matches_arrays(occlusion, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import imageio.v3 as iio

    from nanoro_optics.pipeline import fuse_files

    scene, _, auto = occlusion
    for k, frame in enumerate(scene.frames):
        iio.imwrite(tmp_path / f"f{k:02d}.png", frame)
    res = fuse_files(tmp_path, FusionOptions(halo="auto"))
    assert np.array_equal(res.image, auto.image)
    assert np.array_equal(res.halo.corrected, auto.halo.corrected)


def _coarse(frames: np.ndarray, **options):  # type: ignore[no-untyped-def]
    """The result of a fuser that tracked the depth on the coarse level, and its options."""
    from nanoro_optics.fusion import StackFuser
    from nanoro_optics.fusion.halo import COARSE_LEVEL

    opts = FusionOptions(halo="auto", **options)
    fuser = StackFuser(opts)
    fuser._track_level(COARSE_LEVEL)
    for frame in frames:
        fuser.add(frame)
    return fuser._result(release=True), opts


@pytest.mark.parametrize("variant", ["opaque", "fibres", "holes", "dim", "translucent", "layers3"])
@pytest.mark.parametrize("psf", ["pillbox", "gaussian"])
def test_the_coarse_depth_finds_every_scene_the_full_one_has_edges_in(variant, psf) -> None:  # type: ignore[no-untyped-def]
    # the file pipeline reads the frames once when the coarse map shows no step: it must
    # show one wherever the full map gives the correction an edge to work on
    from nanoro_optics.fusion.halo import _edge_tiles, depth_in_frames, may_have_edges
    from nanoro_optics.fusion.scenes import occlusion_stack

    scene = occlusion_stack((192, 192), 7, variant=variant, psf=psf, seed=4)
    full = fuse_stack(scene.frames)
    depth = depth_in_frames(full, FusionOptions())
    assert depth is not None
    assert _edge_tiles(depth, full.confidence, MIN_STEP_FRAMES)  # (the scene has edges)
    assert may_have_edges(*_coarse(scene.frames))


def test_a_smooth_surface_shows_no_edge_on_the_coarse_depth() -> None:
    from nanoro_optics.fusion.halo import may_have_edges

    smooth = synthetic_stack((384, 384), 9, seed=2).frames
    assert not may_have_edges(*_coarse(smooth))
    # a depth not in frames (corrected for an index mismatch): the correction will not run,
    # so no full map is tracked for it
    res, opts = _coarse(scene_stack("occlusion", (160, 160), 8, seed=1).frames)
    assert may_have_edges(res, opts)
    assert not may_have_edges(dataclasses.replace(res, depth_kind="actual"), opts)


def test_track_level_is_checked_and_comes_before_the_frames() -> None:
    from nanoro_optics.fusion import StackFuser

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="level must be an int >= 1"):
            StackFuser()._track_level(bad)  # type: ignore[arg-type]
    fuser = StackFuser()
    fuser.add(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="before the first frame"):
        fuser._track_level(2)


@pytest.mark.parametrize("kind", ["occlusion", "smooth"])
def test_files_without_a_depth_output_are_read_once_unless_there_are_edges(  # type: ignore[no-untyped-def]
    kind, occlusion, tmp_path, monkeypatch
):
    # the halo correction without a depth map asked for: one read with a coarse depth
    # map; a second (the full depth map) only where that shows a step. The same image and
    # map as fusing the arrays either way.
    import imageio.v3 as iio

    import nanoro_optics.io as nio
    from nanoro_optics.pipeline import FusionOutputs, fuse_to_files

    frames = (
        occlusion[0].frames
        if kind == "occlusion"
        else synthetic_stack((384, 384), 9, seed=2).frames
    )
    for k, frame in enumerate(frames):
        iio.imwrite(tmp_path / f"f{k:02d}.png", frame)
    reads = []
    real = nio.iter_frames
    monkeypatch.setattr(nio, "iter_frames", lambda *a, **k: reads.append(1) or real(*a, **k))
    out = FusionOutputs(image=tmp_path / "out.png", halo_map=tmp_path / "halo.tif")
    done = fuse_to_files(tmp_path / "f*.png", out, FusionOptions(halo="auto"))
    ref = fuse_stack(frames, halo="auto")
    assert np.array_equal(iio.imread(out.image), ref.image)
    assert np.array_equal(iio.imread(out.halo_map) > 0, ref.halo.corrected)
    assert len(reads) == (2 if kind == "occlusion" else 1)
    if kind == "occlusion":
        assert ref.halo.corrected.any() and done.halo.n_tiles == ref.halo.n_tiles
    else:
        assert done.halo.n_tiles == 0 and not ref.halo.corrected.any()


def test_files_with_a_depth_not_in_frames_are_read_once(occlusion, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a depth map corrected for an index mismatch: the correction does not run on it, so the
    # file pipeline does not read the files again for the full map, and says why
    import imageio.v3 as iio

    import nanoro_optics.io as nio
    from nanoro_optics.pipeline import FusionOutputs, fuse_to_files
    from nanoro_optics.psf import IndexMismatch

    scene, off, _ = occlusion
    for k, frame in enumerate(scene.frames):
        iio.imwrite(tmp_path / f"f{k:02d}.png", frame)
    reads = []
    real = nio.iter_frames
    monkeypatch.setattr(nio, "iter_frames", lambda *a, **k: reads.append(1) or real(*a, **k))
    water = IndexMismatch(
        interface_um=0.0, na=1.2, n_immersion=1.518, n_sample=1.33, model="carlsson"
    )
    opts = FusionOptions(halo="auto", z_step_um=1.0, index_mismatch=water)
    out = FusionOutputs(image=tmp_path / "out.png")
    done = fuse_to_files(tmp_path / "f*.png", out, opts)
    assert len(reads) == 1
    assert "index mismatch" in done.halo.note and not done.halo.corrected.any()
    assert np.array_equal(iio.imread(out.image), off.image)


def test_cli_writes_the_halo_map_with_the_image(occlusion, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import imageio.v3 as iio
    import tifffile

    from nanoro_optics.cli import main
    from nanoro_optics.io import map_record

    scene, off, auto = occlusion
    src = tmp_path / "in"
    src.mkdir()
    for k, frame in enumerate(scene.frames):
        iio.imwrite(src / f"f{k:02d}.png", frame)
    out, hmap = tmp_path / "fused.tif", tmp_path / "halo.tif"
    args = ["fuse", str(src), "-o", str(out), "--halo", "auto", "--halo-map", str(hmap)]
    assert main(args) == 0
    assert f"halo map {hmap}" in capsys.readouterr().out
    written = tifffile.imread(hmap)
    assert written.dtype == np.uint8 and set(np.unique(written)) == {0, 255}
    assert np.array_equal(written == 255, auto.halo.corrected)
    assert map_record(hmap) == {"kind": "halo", "unit": None}
    # outside the map, the image is the pyramid fusion's
    assert np.array_equal(tifffile.imread(out)[written == 0], off.image[written == 0])
    # a halo map without the correction is refused before anything is read or written
    bad = tmp_path / "b.tif", tmp_path / "b_halo.tif"
    assert main(["fuse", str(src), "-o", str(bad[0]), "--halo-map", str(bad[1])]) == 2
    err = capsys.readouterr().err
    assert "--halo-map" in err and "the halo correction is off" in err
    assert not bad[0].exists() and not bad[1].exists()
    # a later run over the folder leaves the halo map out of the stack, saying what it is
    from nanoro_optics.pipeline import stack_files

    hmap.rename(src / "halo.tif")
    notes: list[str] = []
    files = stack_files(src, note=notes.append)
    assert src / "halo.tif" not in files and len(files) == len(scene.frames)
    assert any("halo map" in n for n in notes), notes


@settings(max_examples=30, deadline=None)
@given(radius=st.floats(0, 40), sigma=st.floats(0, 10))
def test_psf_transfer_function_is_normalised_and_bounded(radius: float, sigma: float) -> None:
    otf = psf_otf((24, 24), radius, sigma)
    assert otf[0, 0] == pytest.approx(1.0)
    assert np.all(np.abs(otf) <= 1.0 + OTF_ROUNDING)


def test_windows_read_in_batches_give_the_same_correction(occlusion, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import tifffile

    import nanoro_optics.fusion.halo as halo
    from nanoro_optics.pipeline import fuse_files

    scene, _, auto = occlusion
    monkeypatch.setattr(halo, "CROP_BUDGET_BYTES_PER_PX", 0)  # one tile per batch
    again = fuse_stack(scene.frames, halo="auto")
    assert np.array_equal(again.image, auto.image)
    # a multi-page TIFF is decoded from its first page again for every batch
    tifffile.imwrite(tmp_path / "stack.tif", scene.frames, photometric="rgb")
    res = fuse_files(tmp_path / "stack.tif", FusionOptions(halo="auto"))
    assert np.array_equal(res.image, auto.image)


def _rim_layers(sharp: np.ndarray, blurred: np.ndarray, front: np.ndarray):  # type: ignore[no-untyped-def]
    """A two-layer stand-in with the fields ``_Layers.sharp_rim`` reads (frames 0 and 1)."""
    from nanoro_optics.fusion.halo import _Layers

    layers = _Layers.__new__(_Layers)
    layers.crop, layers.kf, layers.kb = {0: sharp[None], 1: blurred[None]}, 0, 1  # type: ignore[assignment]
    layers.front, layers.sigma = front, np.array([1.0])
    return layers


def test_an_edge_counts_only_where_the_front_layer_is_sharp_in_its_own_frame() -> None:
    # the correction acts only within the glow's reach of such an outline: a boundary the
    # depth map draws through a featureless area (the real board of a PCB stack) is none
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:96, :96]
    disc = np.hypot(yy - 48, xx - 48) < 20
    step = np.where(disc, 60.0, 160.0)
    noise = rng.normal(0.0, 1.0, (4, 96, 96))
    outline = disc ^ ndimage.binary_erosion(disc)
    # an occluder in focus in its frame, blurred in the background's: its whole outline
    rim = _rim_layers(step + noise[0], ndimage.gaussian_filter(step, 4) + noise[1], disc)
    assert rim.sharp_rim()[outline].mean() > 0.95
    # a featureless area: both frames flat, noise only (compression blocks: a few strong
    # pixels): no edge anywhere
    flat = 170.0 + noise[2]
    flat[40:42, 60:62] += 6.0
    assert not _rim_layers(flat, 170.0 + noise[3], disc).sharp_rim().any()
    # the same edge blurred in both frames (a swell, not an occluder in focus): none
    soft = ndimage.gaussian_filter(step, 4)
    assert not _rim_layers(soft + noise[0], soft + noise[1], disc).sharp_rim().any()


def test_the_optics_prior_guides_the_psf_and_never_forces_a_correction(occlusion) -> None:  # type: ignore[no-untyped-def]
    scene, off, _ = occlusion
    band = ndimage.distance_transform_edt(~scene.edges) <= BAND_PX
    # the scene's own blur (1.5 px of disc radius per frame): the same gain as without it
    told = fuse_stack(scene.frames, halo="auto", halo_blur_px=scene.blur_px_per_frame)
    gain = _psnr(told.image, scene.truth, band) - _psnr(off.image, scene.truth, band)
    assert gain >= MIN_BAND_GAIN_DB, gain
    # optics that put the blur far beyond what the correction handles: nothing corrected
    # (the pyramid fusion, bit for bit), not a fit forced into the wrong size
    far = fuse_stack(scene.frames, halo="auto", halo_blur_px=200.0)
    assert not far.halo.corrected.any() and np.array_equal(far.image, off.image)
    with pytest.raises(ValueError, match="halo_blur_px must be finite, > 0"):
        correct_halo(off.image, off.depth, scene.frames, n_frames=8, noise_dn=1.0, blur_px=-1.0)
