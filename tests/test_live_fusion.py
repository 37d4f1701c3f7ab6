"""Live fusion in a pymmcore-plus MDA (UniMMCore with the mock stage and simulated camera)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pymmcore_plus", reason="the mmcore extra is not installed")
pytest.importorskip("useq", reason="the mmcore extra is not installed")
import useq

from nanoro_optics.fusion import fuse_stack
from nanoro_optics.hardware import MockZStage, SimulatedCamera, Specimen
from nanoro_optics.io import write_fusion_ome
from nanoro_optics.mmcore import FusedGroup, LiveFusion, check_mda_sequence, simulated_core
from nanoro_optics.zscan import PlanProblemsError

PIXEL_UM = 0.65
SHAPE = (24, 32)
Z_REL = [0.0, 1.0, 2.0, 3.0]
OBJECTIVE = "Nikon MRP70101"  # depth of field 11.8 um
LIMITS_UM = (0.0, 100.0)
RUN: dict[str, Any] = {"limits_um": LIMITS_UM, "objective": OBJECTIVE}  # LiveFusion.run


@pytest.fixture(scope="module")
def rig() -> tuple[Any, MockZStage]:
    mock = MockZStage(position_um=10.0, limits_um=LIMITS_UM)
    cam = SimulatedCamera(mock, Specimen.synthetic(SHAPE, relief_um=3.0, base_um=10.0))
    core = simulated_core(mock, cam, channels=["A", "B"], pixel_size_um=PIXEL_UM)
    assert core.getPixelSizeUm() == PIXEL_UM and not core.getAutoShutter()
    assert list(core.getAvailableConfigs("Channel")) == ["A", "B"]
    return core, mock


class Recorder:
    """A second MDA output: copies of every frame with its indices and z."""

    def __init__(self) -> None:
        self.frames: list[tuple[dict[str, int], float, np.ndarray]] = []

    def frameReady(self, image: np.ndarray, event: Any, meta: Any) -> None:
        index = {str(k): int(v) for k, v in dict(event.index).items()}
        self.frames.append((index, float(event.z_pos), np.array(image, copy=True)))

    def group(self, **index: int) -> tuple[np.ndarray, list[float]]:
        got = [(z, f) for i, z, f in self.frames if all(i.get(k) == v for k, v in index.items())]
        return np.stack([f for _, f in got]), [z for z, _ in got]


def _sequence(**kw: Any) -> Any:
    base: dict[str, Any] = {
        "stage_positions": [(None, None, 10.0), (None, None, 12.0)],
        "channels": ["A", "B"],
        "z_plan": useq.ZRelativePositions(relative=Z_REL),
        "axis_order": "tpcz",
    }
    base.update(kw)
    return useq.MDASequence(**base)


def _run(core: Any, live: LiveFusion, seq: Any) -> Recorder:
    rec = Recorder()
    core.mda.run(seq, output=[live, rec])
    return rec


def _annotation(xml: str) -> dict[str, str]:
    ann = tifffile.xml2dict(xml)["OME"]["StructuredAnnotations"]["MapAnnotation"]
    assert ann["Namespace"] == "nanoro_optics/fusion"
    return {m["K"]: m["value"] for m in ann["Value"]["M"]}


def _assert_same(a: Any, b: Any) -> None:
    np.testing.assert_array_equal(a, b)  # NaN-aware, exact


def test_live_fusion_equals_offline_per_channel(rig: Any, tmp_path: Path) -> None:
    core, _ = rig
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, out_dir=tmp_path, levels=3)
    rec = _run(core, live, _sequence())
    assert live.errors == [] and live.incomplete == [] and live.n_done == 4
    assert sorted(g.index for g in got) == [(("c", c), ("p", p)) for c in (0, 1) for p in (0, 1)]
    for g in got:
        d = dict(g.index)
        frames, zs = rec.group(p=d["p"], c=d["c"])
        assert frames.shape == (len(Z_REL), *SHAPE)
        assert zs == [10.0 + 2 * d["p"] + z for z in Z_REL] and list(g.z_um) == zs
        ref = fuse_stack(frames, z_um=zs, levels=3)
        _assert_same(g.image, ref.image)
        _assert_same(g.depth_um, ref.depth)
        _assert_same(g.confidence, ref.confidence)
        assert g.channels == (("A", "B")[d["c"]],) and g.pixel_size_um == PIXEL_UM
        # the file: fused image + depth/confidence, physical sizes, z positions, settings
        assert g.path == tmp_path / f"fused_p{d['p']:03d}_t0000_c{d['c']:02d}.ome.tif"
        with tifffile.TiffFile(g.path) as tif:
            assert tif.is_ome and len(tif.series) == 2
            _assert_same(tif.series[0].asarray(), ref.image)
            maps = tif.series[1].asarray()
            _assert_same(maps[0], ref.depth)
            _assert_same(maps[1], ref.confidence)
            assert maps.dtype == np.float32
            xml = tif.ome_metadata
        pixels = tifffile.xml2dict(xml)["OME"]["Image"]
        for image in pixels:
            px = image["Pixels"]
            assert px["PhysicalSizeX"] == PIXEL_UM and px["PhysicalSizeY"] == PIXEL_UM
            assert px["PhysicalSizeXUnit"] == "\u00b5m"
        values = _annotation(xml)
        assert json.loads(values["z_um"]) == zs
        settings = json.loads(values["settings"])
        assert settings["levels"] == 3 and settings["guide_channel"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(g.path.name for g in got)


def test_live_fusion_to_ome_zarr(rig: Any, tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr", reason="the omezarr extra is not installed")
    core, _ = rig
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, out_dir=tmp_path, file_format="ome-zarr", levels=3)
    rec = _run(core, live, _sequence(channels=["B"]))
    assert live.errors == [] and len(got) == 2
    for g in got:
        p = dict(g.index)["p"]
        assert g.path == tmp_path / f"fused_p{p:03d}_t0000_c00.ome.zarr"
        frames, zs = rec.group(p=p)
        ref = fuse_stack(frames, z_um=zs, levels=3)
        root = zarr.open_group(g.path, mode="r")
        _assert_same(root["0/0"][:], ref.image[None])
        _assert_same(root["1/0"][0], ref.depth)
        _assert_same(root["1/0"][1], ref.confidence)
        assert root.attrs["nanoro_optics"]["z_um"] == zs
        assert root.attrs["nanoro_optics"]["channels"] == ["B"]
        for series in ("0", "1"):
            ms = zarr.open_group(g.path / series, mode="r").attrs["ome"]["multiscales"][0]
            assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
            assert [a.get("unit") for a in ms["axes"]] == [None, "micrometer", "micrometer"]
            [scale] = ms["datasets"][0]["coordinateTransformations"]
            assert scale["scale"] == [1.0, PIXEL_UM, PIXEL_UM]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fused_p000_t0000_c00.ome.zarr",
        "fused_p001_t0000_c00.ome.zarr",
    ]


def test_live_fusion_with_a_guide_channel_equals_offline(rig: Any, tmp_path: Path) -> None:
    core, _ = rig
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, out_dir=tmp_path, guide_channel="B", levels=3)
    rec = _run(core, live, _sequence(axis_order="tpzc"))
    assert live.errors == [] and live.n_done == 2
    for g in got:
        p = dict(g.index)["p"]
        a, zs = rec.group(p=p, c=0)
        b, _ = rec.group(p=p, c=1)
        ref = fuse_stack(np.stack([a, b], axis=-1), z_um=zs, guide_channel=1, levels=3)
        _assert_same(g.image, ref.image)
        _assert_same(g.depth_um, ref.depth)
        assert g.image.shape == (*SHAPE, 2) and g.channels == ("A", "B")
        assert g.path is not None and g.path.name == f"fused_p{p:03d}_t0000.ome.tif"
        with tifffile.TiffFile(g.path) as tif:
            _assert_same(np.moveaxis(tif.series[0].asarray(), 0, -1), ref.image)
            assert json.loads(_annotation(tif.ome_metadata)["settings"])["guide_channel"] == "B"


class OpenCounter:
    """Wraps a LiveFusion's frameReady to record how many groups are open after each frame."""

    def __init__(self, live: LiveFusion) -> None:
        self.live = live
        self.counts: list[int] = []

    def sequenceStarted(self, sequence: Any, meta: Any) -> None:
        self.live.sequenceStarted(sequence, meta)

    def frameReady(self, image: Any, event: Any, meta: Any) -> None:
        self.live.frameReady(image, event, meta)
        self.counts.append(self.live.n_open)

    def sequenceFinished(self, sequence: Any) -> None:
        self.live.sequenceFinished(sequence)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n_z=st.integers(2, 4),
    n_pos=st.integers(1, 2),
    n_t=st.integers(1, 2),
    order=st.sampled_from(["tpcz", "tpzc"]),
    guided=st.booleans(),
)
def test_live_fusion_property(
    rig: Any, n_z: int, n_pos: int, n_t: int, order: str, guided: bool
) -> None:
    """Whatever the plan: one output per group, equal to offline fusion, memory bounded."""
    core, _ = rig
    guided = guided and order == "tpzc"
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, guide_channel=0 if guided else None, levels=2)
    counter = OpenCounter(live)
    seq = _sequence(
        stage_positions=[(None, None, 10.0 + 3 * i) for i in range(n_pos)],
        z_plan=useq.ZRelativePositions(relative=Z_REL[:n_z]),
        time_plan={"interval": 0, "loops": n_t} if n_t > 1 else None,
        axis_order=order,
    )
    rec = Recorder()
    core.mda.run(seq, output=[counter, rec])
    assert live.errors == [] and live.incomplete == []
    assert len(got) == n_pos * n_t * (1 if guided else 2)
    # open groups: one at a time, or one per channel when channels vary faster than z
    assert max(counter.counts) <= (1 if guided or order == "tpcz" else 2)
    assert counter.counts[-1] == 0
    for g in got:
        d = dict(g.index)
        sel = {k: v for k, v in d.items() if k in ("p", "t")}
        if guided:
            a, zs = rec.group(**sel, c=0)
            b, _ = rec.group(**sel, c=1)
            ref = fuse_stack(np.stack([a, b], axis=-1), z_um=zs, guide_channel=0, levels=2)
        else:
            frames, zs = rec.group(**sel, c=d["c"])
            ref = fuse_stack(frames, z_um=zs, levels=2)
        assert list(g.z_um) == zs
        _assert_same(g.image, ref.image)
        _assert_same(g.depth_um, ref.depth)
        _assert_same(g.confidence, ref.confidence)


def test_cancelled_mda_leaves_finished_groups_only(rig: Any, tmp_path: Path) -> None:
    core, _ = rig
    n = {"frames": 0}

    def cancel_midway(*_: Any) -> None:  # synchronous: runs in the MDA's own thread
        n["frames"] += 1
        if n["frames"] == len(Z_REL) + 2:  # group p1 has two of its four frames
            core.mda.cancel()

    got: list[FusedGroup] = []
    live = LiveFusion(got.append, out_dir=tmp_path, levels=3)
    core.mda.events.frameReady.connect(cancel_midway)
    try:
        rec = _run(core, live, _sequence(channels=["A"]))
    finally:
        core.mda.events.frameReady.disconnect(cancel_midway)
    assert len(rec.frames) == len(Z_REL) + 2  # the MDA did stop midway
    assert [g.index for g in got] == [(("c", 0), ("p", 0))]
    assert live.incomplete == [(("c", 0), ("p", 1))] and live.errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["fused_p000_t0000_c00.ome.tif"]
    with tifffile.TiffFile(tmp_path / "fused_p000_t0000_c00.ome.tif") as tif:
        frames, zs = rec.group(p=0)
        _assert_same(tif.series[0].asarray(), fuse_stack(frames, z_um=zs, levels=3).image)


def test_run_refuses_before_anything_moves(rig: Any, tmp_path: Path) -> None:
    core, mock = rig
    (tmp_path / "fused_p001_t0000_c00.ome.tif").write_bytes(b"keep me")
    n_moves = len(mock.commanded_um)
    live = LiveFusion(out_dir=tmp_path)
    with pytest.raises(FileExistsError, match=r"fused_p001_t0000_c00\.ome\.tif exists"):
        live.run(core, _sequence(channels=["A"]), **RUN)
    assert len(mock.commanded_um) == n_moves
    assert (tmp_path / "fused_p001_t0000_c00.ome.tif").read_bytes() == b"keep me"
    # with overwrite=True the run goes ahead and replaces it
    LiveFusion(out_dir=tmp_path, overwrite=True, levels=3).run(
        core, _sequence(channels=["A"]), **RUN
    )
    with tifffile.TiffFile(tmp_path / "fused_p001_t0000_c00.ome.tif") as tif:
        assert tif.is_ome


def test_run_applies_the_z_plan_rules_before_anything_moves(rig: Any) -> None:
    core, mock = rig
    n_moves = len(mock.commanded_um)
    around = _sequence(channels=["A"], z_plan=useq.ZRangeAround(range=4.0, step=1.0))
    with pytest.raises(PlanProblemsError, match=r"position 0: z 8, 9 um below its start 10 um"):
        LiveFusion(levels=2).run(core, around, **RUN)
    far = _sequence(channels=["A"], stage_positions=[(None, None, 99.0)])
    with pytest.raises(PlanProblemsError, match="outside the stage limits"):
        LiveFusion(levels=2).run(core, far, **RUN)
    coarse = _sequence(channels=["A"], z_plan=useq.ZRelativePositions(relative=[0.0, 20.0]))
    with pytest.raises(PlanProblemsError, match="exceeds the depth of field"):
        LiveFusion(levels=2).run(core, coarse, **RUN)
    # no stage positions: useq puts the plan around 0 um, below the focus device's z now
    bare = useq.MDASequence(channels=["A"], z_plan=useq.ZRelativePositions(relative=Z_REL))
    with pytest.raises(PlanProblemsError, match="below its start"):
        LiveFusion(levels=2).run(core, bare, **RUN)
    assert len(mock.commanded_um) == n_moves  # nothing reached the stage
    with pytest.raises(TypeError, match="limits_um"):
        LiveFusion(levels=2).run(core, around)  # type: ignore[call-arg]


def test_run_raises_what_failed_during_the_mda(rig: Any, tmp_path: Path) -> None:
    core, _ = rig

    def broken(group: FusedGroup) -> None:
        raise KeyError(f"no room for {group.index}")

    live = LiveFusion(broken, levels=2)
    with pytest.raises(
        RuntimeError, match=r"failed for 2 group\(s\); the first, .*no room"
    ) as info:
        live.run(core, _sequence(channels=["A"]), **RUN)
    assert isinstance(info.value.__cause__, KeyError) and live.n_done == 2


def test_run_needs_a_pixel_size_for_files(tmp_path: Path) -> None:
    class Uncalibrated:
        def getPixelSizeUm(self) -> float:
            return 0.0

        @property
        def mda(self) -> Any:
            raise AssertionError("the MDA must not start")

    with pytest.raises(ValueError, match=r"no pixel size calibration \(getPixelSizeUm\(\) is 0\)"):
        LiveFusion(out_dir=tmp_path).run(Uncalibrated(), _sequence(channels=["A"]), **RUN)


def _event(**index: int) -> Any:
    z = index.get("z", 0)
    return useq.MDAEvent(index=index, z_pos=10.0 + z)


def test_frames_out_of_z_order_drop_the_group_and_are_recorded() -> None:
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, levels=2)
    seq = _sequence(channels=["A"], stage_positions=[(None, None, 10.0)])
    live.sequenceStarted(seq, {})
    frame = np.ones(SHAPE, np.uint16)
    live.frameReady(frame, _event(p=0, c=0, z=0), {})
    live.frameReady(frame, _event(p=0, c=0, z=2), {})
    live.frameReady(frame, _event(p=0, c=0, z=3), {})  # ignored: the group is dropped
    live.sequenceFinished(seq)
    assert got == [] and live.incomplete == []
    [(key, exc)] = live.errors
    assert key == (("c", 0), ("p", 0))
    assert "z index 2 arrived where z index 1 was due" in str(exc)
    # a group whose first frame is not z 0 is refused too
    live.sequenceStarted(seq, {})
    live.frameReady(frame, _event(p=0, c=0, z=1), {})
    assert "first frame has z index 1, expected 0" in str(live.errors[0][1])


def test_handler_refusals_name_the_problem(tmp_path: Path) -> None:
    live = LiveFusion()
    with pytest.raises(TypeError, match=r"must be a useq\.MDASequence, got list"):
        live.check([])
    with pytest.raises(ValueError, match="no z plan"):
        live.check(useq.MDASequence(channels=["A"]))
    with pytest.raises(ValueError, match="varies p faster than z"):
        live.check(_sequence(axis_order="tzcp"))
    with pytest.raises(ValueError, match=r"channels \['B'\] have do_stack=False"):
        live.check(_sequence(channels=["A", {"config": "B", "do_stack": False}]))
    sub = useq.Position(z=1.0, sequence=useq.MDASequence(z_plan={"range": 2, "step": 1}))
    with pytest.raises(ValueError, match=r"stage positions \[0\] have sub-sequences"):
        live.check(_sequence(stage_positions=[sub]))
    guided = LiveFusion(guide_channel="A")
    with pytest.raises(ValueError, match="channels must vary faster than z"):
        guided.check(_sequence(axis_order="tpcz"))
    with pytest.raises(ValueError, match=r"guide_channel='C' is not a channel"):
        LiveFusion(guide_channel="C").check(_sequence(axis_order="tpzc"))
    with pytest.raises(ValueError, match=r"guide_channel=2 is out of range: .* 2 channels"):
        LiveFusion(guide_channel=2).check(_sequence(axis_order="tpzc"))
    with pytest.raises(ValueError, match=r"channels \['B'\] have acquire_every > 1"):
        guided.check(
            _sequence(axis_order="tpzc", channels=["A", {"config": "B", "acquire_every": 2}])
        )
    guided.check(_sequence(axis_order="tpzc"))  # fine
    # constructor arguments
    with pytest.raises(TypeError, match="on_result must be callable"):
        LiveFusion(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="is not an existing folder"):
        LiveFusion(out_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="name must be letters"):
        LiveFusion(name="../x")
    with pytest.raises(TypeError, match="guide_channel must be a channel name or index"):
        LiveFusion(guide_channel=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="z_um cannot be given to LiveFusion"):
        LiveFusion(z_um=[1.0])
    with pytest.raises(ValueError, match="pixel_size_um must be > 0"):
        LiveFusion(pixel_size_um=0.0)
    with pytest.raises(ValueError, match=r"file_format must be one of \('ome-tiff', 'ome-zarr'\)"):
        LiveFusion(file_format="tiff")
    with pytest.raises(TypeError, match="levels must be an integer"):
        LiveFusion(levels=2.5)  # a StackFuser option, checked at once


def test_sequence_without_pixel_size_is_refused_for_files(tmp_path: Path) -> None:
    live = LiveFusion(out_dir=tmp_path)
    seq = _sequence(channels=["A"])
    live.sequenceStarted(seq, {"image_infos": [{"pixel_size_um": 0.0}]})
    live.frameReady(np.ones(SHAPE, np.uint16), _event(p=0, c=0, z=0), {})
    assert "no pixel size" in str(live.errors[0][1]) and list(tmp_path.iterdir()) == []


def test_simulated_core_checks_its_channels_and_pixel_size() -> None:
    mock = MockZStage()
    cam = SimulatedCamera(mock, Specimen.synthetic((8, 8), relief_um=1.0))
    with pytest.raises(ValueError, match=r"distinct non-empty names, got \['A', 'A'\]"):
        simulated_core(mock, cam, channels=["A", "A"])
    with pytest.raises(ValueError, match="channels must be distinct non-empty names"):
        simulated_core(mock, cam, channels=[""])
    with pytest.raises(ValueError, match="pixel_size_um must be > 0"):
        simulated_core(mock, cam, pixel_size_um=-0.5)


# ------------------------------------------------------------------ check_mda_sequence


def test_check_mda_sequence_accepts_a_plan_from_the_start_up() -> None:
    seq = _sequence()  # relative 0..3 um above each position's z
    check_mda_sequence(seq, limits_um=(0.0, 100.0), objective=OBJECTIVE)
    no_pos = useq.MDASequence(z_plan=useq.ZAbsolutePositions(absolute=[20.0, 21.0]))
    check_mda_sequence(no_pos, limits_um=(0.0, 100.0), objective=OBJECTIVE, current_um=20.0)


def test_check_mda_sequence_names_the_offending_positions() -> None:
    seq = _sequence(
        stage_positions=[(None, None, 10.0), (None, None, 99.0), (None, None, 50.0)],
        z_plan=useq.ZRangeAround(range=4.0, step=1.0),
    )
    with pytest.raises(PlanProblemsError) as info:
        check_mda_sequence(seq, limits_um=(0.0, 100.0), objective=OBJECTIVE)
    problems = info.value.problems
    assert "position 0: z 8, 9 um below its start 10 um" in problems
    assert "position 1: z 97, 98 um below its start 99 um" in problems
    assert "position 1: z 101 um outside the stage limits [0, 100] um" in problems
    assert "position 2: z 48, 49 um below its start 50 um" in problems
    assert len(problems) == 4  # one line per position and rule, whatever the channels
    wide = _sequence(z_plan=useq.ZRelativePositions(relative=[0.0, 12.0]))
    with pytest.raises(PlanProblemsError, match=r"z step 12 um exceeds the depth of field 11\.8"):
        check_mda_sequence(wide, limits_um=(0.0, 100.0), objective=OBJECTIVE)
    check_mda_sequence(  # 12 um is fine with a deeper field (a weaker objective)
        wide, limits_um=(0.0, 100.0), objective=OBJECTIVE, wavelength_um=0.75
    )


def test_check_mda_sequence_catches_a_relative_plan_without_positions() -> None:
    # useq gives the offsets themselves as positions (around 0 um), not around the stage's z
    seq = useq.MDASequence(z_plan=useq.ZRangeAround(range=2.0, step=1.0))
    with pytest.raises(ValueError, match="give current_um"):
        check_mda_sequence(seq, limits_um=(0.0, 100.0), objective=OBJECTIVE)
    with pytest.raises(PlanProblemsError, match=r"z -1, 0, 1 um below its start 50 um"):
        check_mda_sequence(seq, limits_um=(0.0, 100.0), objective=OBJECTIVE, current_um=50.0)


def test_check_mda_sequence_validates_its_arguments() -> None:
    seq = _sequence()
    with pytest.raises(TypeError, match=r"useq\.MDASequence"):
        check_mda_sequence({}, limits_um=(0.0, 1.0), objective=OBJECTIVE)
    with pytest.raises(ValueError, match="limits_um must satisfy lo < hi"):
        check_mda_sequence(seq, limits_um=(5.0, 1.0), objective=OBJECTIVE)
    with pytest.raises(ValueError, match="unknown objective 'X'"):
        check_mda_sequence(seq, limits_um=(0.0, 100.0), objective="X")
    with pytest.raises(ValueError, match="current_um"):
        check_mda_sequence(seq, limits_um=(0.0, 100.0), objective=OBJECTIVE, current_um=np.nan)
    with pytest.raises(ValueError, match="wavelength_um"):
        check_mda_sequence(seq, limits_um=(0.0, 100.0), objective=OBJECTIVE, wavelength_um=-1)


# ------------------------------------------------------------------ write_fusion_ome


def test_ome_tiff_writer_is_atomic_and_never_clobbers(tmp_path: Path) -> None:
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    maps = np.zeros((3, 4), np.float32)
    kw: dict[str, Any] = {"pixel_size_um": 0.5, "z_um": [1.0], "channel_names": ["A"]}
    out = tmp_path / "x.ome.tif"
    out.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="exists and overwrite=False"):
        write_fusion_ome(out, img, maps, maps, **kw)
    assert out.read_bytes() == b"old"
    write_fusion_ome(out, img, maps, maps, overwrite=True, **kw)
    with tifffile.TiffFile(out) as tif:
        _assert_same(tif.series[0].asarray(), img)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.tif"]  # no temporary left
    bad = tmp_path / "bad.ome.tif"
    with pytest.raises(
        ValueError, match=r"must end in one of \.ome\.tif, \.ome\.tiff, \.ome\.zarr"
    ):
        write_fusion_ome(tmp_path / "x.tif", img, maps, maps, **kw)
    with pytest.raises(ValueError, match="one name per channel: 1 channel"):
        write_fusion_ome(bad, img, maps, maps, **{**kw, "channel_names": ["A", "B"]})
    with pytest.raises(ValueError, match="depth_um must be a real array of the image's shape"):
        write_fusion_ome(bad, img, maps[:2], maps, **kw)
    with pytest.raises(ValueError, match="pixel_size_um must be > 0"):
        write_fusion_ome(bad, img, maps, maps, **{**kw, "pixel_size_um": -1.0})
    with pytest.raises(ValueError, match="z_um"):
        write_fusion_ome(bad, img, maps, maps, **{**kw, "z_um": [np.inf]})
    with pytest.raises(ValueError, match="non-finite pixels"):
        write_fusion_ome(bad, np.full((3, 4), np.nan), maps, maps, **kw)
    assert not bad.exists()


def test_ome_zarr_writer_is_atomic_and_never_clobbers(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr", reason="the omezarr extra is not installed")
    img = np.arange(24, dtype=np.uint16).reshape(4, 3, 2)  # two channels
    maps = np.full((4, 3), np.nan, np.float32)
    kw: dict[str, Any] = {
        "pixel_size_um": 0.5,
        "z_um": [1.0, 2.0],
        "channel_names": ["A", "B"],
        "settings": {"levels": 3, "noise_dn": np.float64(2.0)},
    }
    out = tmp_path / "x.ome.zarr"
    write_fusion_ome(out, img, maps, maps, **kw)
    root = zarr.open_group(out, mode="r")
    _assert_same(root["0/0"][:], np.moveaxis(img, -1, 0))
    assert root.attrs["nanoro_optics"]["settings"] == {"levels": 3, "noise_dn": 2.0}
    one = {**kw, "channel_names": ["A"]}
    with pytest.raises(FileExistsError, match="exists and overwrite=False"):
        write_fusion_ome(out, img[..., :1], maps, maps, **one)
    _assert_same(zarr.open_group(out, mode="r")["0/0"][:], np.moveaxis(img, -1, 0))
    write_fusion_ome(out, img[..., :1], maps, maps, overwrite=True, **one)
    assert zarr.open_group(out, mode="r")["0/0"].shape == (1, 4, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.zarr"]  # nothing hidden left
    with pytest.raises(ValueError, match=r"must end in one of"):
        write_fusion_ome(tmp_path / "y.zarr", img, maps, maps, **kw)
    with pytest.raises(ValueError, match="one name per channel: 2 channel"):
        write_fusion_ome(tmp_path / "y.ome.zarr", img, maps, maps, **one)
    with pytest.raises(TypeError, match="settings must be a dict, got list"):
        write_fusion_ome(tmp_path / "y.ome.zarr", img, maps, maps, **{**kw, "settings": [1]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_fusion_ome(tmp_path / "no" / "y.ome.zarr", img, maps, maps, **kw)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.zarr"]


# ------------------------------------------------------------ finishing thread, threads


def test_groups_finish_in_order_in_the_finishing_thread(rig: Any) -> None:
    """Results come from the handler's own thread, in the order the groups ended, and the
    last group's end runs with all of numba's threads; run() returns after all of it."""
    import threading

    import numba

    from nanoro_optics._numba import max_threads

    core, _ = rig
    seen: list[tuple[Any, str, int]] = []

    def record(group: FusedGroup) -> None:
        seen.append((group.index, threading.current_thread().name, numba.get_num_threads()))

    live = LiveFusion(record, levels=2, threads=1)
    live.run(core, _sequence(), **RUN)  # tpcz: p0 c0, p0 c1, p1 c0, p1 c1
    assert [k for k, _, _ in seen] == [(("c", c), ("p", p)) for p in (0, 1) for c in (0, 1)]
    assert {name for _, name, _ in seen} == {"LiveFusion-finish"}
    assert [n for _, _, n in seen] == [1, 1, 1, max_threads()]
    assert live.n_done == 4 and live.errors == []


def test_handler_restores_the_callers_numba_threads() -> None:
    """Driven directly (not through pymmcore-plus' relay thread), the handler leaves the
    calling thread's numba setting as it found it."""
    import numba

    from nanoro_optics._numba import max_threads

    got: list[FusedGroup] = []
    live = LiveFusion(got.append, levels=2, threads=1)
    seq = _sequence(channels=["A"], stage_positions=[(None, None, 10.0)])
    numba.set_num_threads(max_threads())
    live.sequenceStarted(seq, {})
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, (len(Z_REL), *SHAPE)).astype(np.uint16)
    for z, frame in enumerate(frames):
        live.frameReady(frame, _event(p=0, c=0, z=z), {})
        assert numba.get_num_threads() == max_threads()
    live.sequenceFinished(seq)
    assert live.errors == [] and len(got) == 1
    ref = fuse_stack(frames, z_um=[10.0 + z for z in range(len(Z_REL))], levels=2)
    _assert_same(got[0].image, ref.image)
    _assert_same(got[0].depth_um, ref.depth)


def test_only_the_sequences_last_frame_takes_every_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the MDA acquires, frames are fused on the handler's threads; the last z of the
    last group, with the acquisition over, on all of them (the results and files aside)."""
    import contextlib

    import nanoro_optics.mmcore.mda as mda
    from nanoro_optics._numba import fusion_threads

    used: list[int] = []
    real = mda.numba_threads

    @contextlib.contextmanager
    def recording(n: int) -> Any:
        used.append(n)
        with real(n):
            yield

    monkeypatch.setattr(mda, "numba_threads", recording)
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, levels=2, threads=1)
    seq = _sequence(channels=["A"], stage_positions=[(None, None, 10.0), (None, None, 20.0)])
    live.sequenceStarted(seq, {})
    frames = np.random.default_rng(1).integers(0, 4000, (len(Z_REL), *SHAPE)).astype(np.uint16)
    for p in range(2):
        for z, frame in enumerate(frames):
            used.clear()
            live.frameReady(frame, _event(p=p, c=0, z=z), {})
            last = p == 1 and z == len(Z_REL) - 1
            assert used[0] == (fusion_threads() if last else 1), (p, z, used)
    live.sequenceFinished(seq)
    assert live.errors == [] and len(got) == 2


def test_finish_in_background_returns_before_the_last_group_is_written(tmp_path: Path) -> None:
    """sequenceFinished hands the last group over and returns; wait() says when it is done,
    and an exiting interpreter waits for it (an exit function joins the finishing thread;
    no thread is started at the sequence's end)."""
    import threading

    from nanoro_optics.mmcore.mda import _BACKGROUND

    release = threading.Event()
    got: list[FusedGroup] = []

    def slow(group: FusedGroup) -> None:  # the last group's callback holds the finisher
        assert release.wait(30.0)
        got.append(group)

    live = LiveFusion(
        slow, out_dir=tmp_path, pixel_size_um=PIXEL_UM, levels=2, finish_in_background=True
    )
    seq = _sequence(channels=["A"], stage_positions=[(None, None, 10.0)])
    live.sequenceStarted(seq, {})
    with pytest.raises(RuntimeError, match="still running"):
        live.wait(0.0)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 4000, (len(Z_REL), *SHAPE)).astype(np.uint16)
    for z, frame in enumerate(frames):
        live.frameReady(frame, _event(p=0, c=0, z=z), {})
    n_threads = threading.active_count()
    live.sequenceFinished(seq)  # returns with the group still being finished
    assert threading.active_count() == n_threads
    assert got == [] and live.wait(timeout_s=0.05) is False
    assert live._finisher in _BACKGROUND
    with pytest.raises(ValueError, match="timeout_s"):
        live.wait(-1.0)
    release.set()
    assert live.wait() is True and live.wait() is True
    assert live.errors == [] and live.n_done == 1 and len(got) == 1
    ref = fuse_stack(frames, z_um=[10.0 + z for z in Z_REL], levels=2)
    _assert_same(got[0].image, ref.image)
    with tifffile.TiffFile(got[0].path) as tif:
        _assert_same(tif.series[0].asarray(), ref.image)
    with pytest.raises(TypeError, match="finish_in_background"):
        LiveFusion(finish_in_background="yes")


def test_an_exiting_interpreter_waits_for_the_background_finish(tmp_path: Path) -> None:
    """The script's last line hands the last group to the finishing thread and returns;
    the interpreter exits only once its callback has run."""
    import subprocess

    done = tmp_path / "done.txt"
    script = f"""
import time
import numpy as np
import useq
from nanoro_optics.mmcore import LiveFusion

def slow(group):
    time.sleep(0.5)
    open({str(done)!r}, "w").write(str(group.image.shape))

seq = useq.MDASequence(stage_positions=[(None, None, 10.0)], z_plan={{"range": 2, "step": 1}})
live = LiveFusion(slow, levels=2, finish_in_background=True)
live.sequenceStarted(seq, {{}})
for z, ev in enumerate(seq.iter_events()):
    live.frameReady(np.full((16, 16), z + 1, np.uint16), ev, {{}})
live.sequenceFinished(seq)
"""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert done.read_text() == "(16, 16)"


def test_run_waits_for_the_outputs_in_background_mode(rig: Any, tmp_path: Path) -> None:
    core, _ = rig
    live = LiveFusion(out_dir=tmp_path, levels=2, finish_in_background=True)
    live.run(core, _sequence(), **RUN)
    assert live.n_done == 4 and live.errors == [] and len(list(tmp_path.iterdir())) == 4


def test_threads_is_checked() -> None:
    from nanoro_optics._numba import max_threads

    with pytest.raises(ValueError, match="threads"):
        LiveFusion(threads=0)
    with pytest.raises(ValueError, match="threads"):
        LiveFusion(threads=max_threads() + 1)
    with pytest.raises(TypeError, match="threads must be an integer"):
        LiveFusion(threads=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="threads must be an integer"):
        LiveFusion(threads=True)
    assert LiveFusion(threads=max_threads()).threads == max_threads()


# ------------------------------------------------------------------ index mismatch

MISMATCH = {"na": 1.3, "n_immersion": 1.518, "n_sample": 1.33}


def _actual_by_pixel(depth: np.ndarray, interface_um: float, **kw: Any) -> np.ndarray:
    """The correction by definition: psf.actual_depth_um on every pixel of the nominal map."""
    from nanoro_optics import psf

    out = np.array(depth, dtype=np.float64)
    below = np.isfinite(out) & (out < interface_um)
    if below.any():
        out[below] = interface_um - psf.actual_depth_um(interface_um - out[below], **kw)
    return out


@pytest.mark.parametrize("interface_um", [20.0, 11.5])  # above every z; inside the loop
def test_index_mismatch_relabels_the_depth_map(
    rig: Any, tmp_path: Path, interface_um: float
) -> None:
    from nanoro_optics.mmcore import IndexMismatch

    core, _ = rig
    im = IndexMismatch(interface_um=interface_um, model="carlsson", **MISMATCH)
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, out_dir=tmp_path, levels=3, index_mismatch=im)
    rec = _run(core, live, _sequence(channels=["A"]))
    assert live.errors == [] and len(got) == 2
    for g in got:
        p = dict(g.index)["p"]
        frames, zs = rec.group(p=p, c=0)
        ref = fuse_stack(frames, z_um=zs, levels=3)
        assert g.depth_kind == "actual" and np.isfinite(ref.depth).any()
        want = _actual_by_pixel(ref.depth, interface_um, model="carlsson", **MISMATCH)
        np.testing.assert_allclose(g.depth_um, want, rtol=0, atol=2e-5)  # float32 rounding
        assert np.array_equal(np.isnan(g.depth_um), np.isnan(ref.depth))
        _assert_same(g.image, ref.image)  # only the depth map changes
        _assert_same(g.confidence, ref.confidence)
        with tifffile.TiffFile(g.path) as tif:
            _assert_same(tif.series[1].asarray()[0], g.depth_um)
            settings = json.loads(_annotation(tif.ome_metadata)["settings"])
        assert settings["depth_um"].startswith("actual: height in the sample")
        assert settings["index_mismatch"] == {
            "interface_um": interface_um,
            "model": "carlsson",
            "wavelength_um": None,
            "function": "nanoro_optics.psf.actual_depth_um",
            **MISMATCH,
        }
    nominal = LiveFusion(levels=3).settings()
    assert nominal["depth_um"].startswith("nominal") and nominal["index_mismatch"] is None


def test_index_mismatch_depth_dependent_models() -> None:
    """loginov: close to the per-pixel correction between the frames' planes, exact on
    them; wave: the per-pixel definition on the planes (one focus search per plane)."""
    from nanoro_optics import psf
    from nanoro_optics.mmcore import IndexMismatch

    z = np.array([80.0, 82.0, 84.0, 86.0, 88.0])
    rng = np.random.default_rng(3)
    depth = rng.uniform(80.0, 88.0, (16, 20)).astype(np.float32)
    depth[0, :5] = z  # exactly on the planes
    depth[1, 0] = np.nan
    kw = {"wavelength_um": 0.55, **MISMATCH}
    lg = IndexMismatch(interface_um=90.0, model="loginov", **kw)
    got = lg.relabel(depth, z)
    want = _actual_by_pixel(depth, 90.0, model="loginov", **kw)
    np.testing.assert_allclose(got[0, :5], want[0, :5], rtol=0, atol=2e-5)
    # between the planes the factor is interpolated: within 1 % of the 2 um step here
    # (the chord of loginov's curve over 2 um departs from it by 0.015 um at most)
    np.testing.assert_allclose(got, want, rtol=0, atol=0.02)
    assert not np.allclose(got, want, rtol=0, atol=2e-5)  # depth-dependent: not exact
    assert np.isnan(got[1, 0]) and np.isnan(want[1, 0])
    wave = IndexMismatch(interface_um=90.0, model="wave", **kw)
    on_planes = wave.relabel(z[None, :].astype(np.float32), z)
    direct = 90.0 - psf.actual_depth_um(90.0 - z, model="wave", **kw)
    np.testing.assert_allclose(on_planes[0], direct, rtol=0, atol=2e-5)


def test_index_mismatch_arguments_are_checked() -> None:
    from nanoro_optics.mmcore import IndexMismatch

    with pytest.raises(ValueError, match="interface_um must be finite"):
        IndexMismatch(interface_um=float("nan"), **MISMATCH)
    with pytest.raises(ValueError, match="model 'wave' needs wavelength_um"):
        IndexMismatch(interface_um=0.0, **MISMATCH)
    with pytest.raises(ValueError, match="model must be one of"):
        IndexMismatch(interface_um=0.0, model="snell", **MISMATCH)
    with pytest.raises(ValueError, match="na must be smaller than n_immersion"):
        IndexMismatch(interface_um=0.0, na=1.6, n_immersion=1.518, n_sample=1.33, model="carlsson")
    with pytest.raises(ValueError, match=r"n_sample must be >= 1\.0"):
        IndexMismatch(interface_um=0.0, na=0.5, n_immersion=1.0, n_sample=-1.0, model="carlsson")
    with pytest.raises(ValueError, match=r"n_sample must be <= 5\.0"):  # before: -inf depths
        IndexMismatch(interface_um=0.0, na=0.5, n_immersion=1.0, n_sample=1e308, model="carlsson")
    with pytest.raises(ValueError, match="wavelength_um must be > 0"):
        IndexMismatch(interface_um=0.0, model="loginov", wavelength_um=0.0, **MISMATCH)
    with pytest.raises(TypeError, match="index_mismatch must be an IndexMismatch, got dict"):
        LiveFusion(index_mismatch={"interface_um": 0.0})  # type: ignore[arg-type]
    im = IndexMismatch(interface_um=0.0, model="carlsson", **MISMATCH)
    with pytest.raises(TypeError, match=r"depth_um must be a real \(H, W\) map"):
        im.relabel(np.zeros(4), [1.0])
    with pytest.raises(ValueError, match="depth_um has infinite values"):
        im.relabel(np.full((2, 2), np.inf), [1.0])
    with pytest.raises(ValueError, match="z_um must not be empty"):
        im.relabel(np.zeros((2, 2)), [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        im.na = 1.0  # type: ignore[misc]


def test_live_fusion_takes_one_options_object() -> None:
    from nanoro_optics.fusion import FusionOptions
    from nanoro_optics.psf import IndexMismatch

    opts = FusionOptions(levels=3, sharpness=None)
    live = LiveFusion(options=opts)
    assert live.options == opts
    assert LiveFusion(options=FusionOptions(levels=5), levels=3, sharpness=None).options == opts
    settings = live.settings()
    assert FusionOptions.from_json({k: settings[k] for k in opts.to_json()}) == opts
    with pytest.raises(ValueError, match=r"options\.z_step_um must be None"):
        LiveFusion(options=FusionOptions(z_step_um=1.0))
    water = IndexMismatch(interface_um=0.0, model="carlsson", **MISMATCH)
    moved = LiveFusion(options=FusionOptions(index_mismatch=water))
    assert moved.index_mismatch == water and moved.options.index_mismatch is None
    with pytest.raises(ValueError, match="give index_mismatch once"):
        LiveFusion(options=FusionOptions(index_mismatch=water), index_mismatch=water)
    # the halo correction reads the frames again: LiveFusion keeps none, and refuses it
    with pytest.raises(ValueError, match="halo='auto' reads the frames again"):
        LiveFusion(options=FusionOptions(halo="auto"))
    with pytest.raises(ValueError, match="halo='auto' reads the frames again"):
        LiveFusion(halo="auto")


# ------------------------------------------------------------------ backlog: bound and warning

BACKLOG = 2  # max_backlog_frames of these tests
N_Z_BACKLOG = 8  # z-slices per group
#: the warning's rates and backlog, as printed
BACKLOG_TEXT = (
    r"frames arrive at (?P<arrival>\d+\.\d) frames/s and are fused at (?P<fusion>\d+\.\d) "
    r"frames/s; (?P<behind>\d+) frames \((?P<seconds>\d+\.\d\d) s of fusion\) wait"
)


class SlowFusion:
    """Acquisition and fusion in lockstep, on conditions: a listener on ``core.mda.events``
    counts the frames acquired (it runs before LiveFusion's, in the acquisition thread), and
    the handler's fusion of frame k waits until ``k + lead`` frames were acquired (or all
    of them) and, with ``gate``, until that last one waits for room in the backlog."""

    def __init__(self, live: LiveFusion, lead: int, n_frames: int, *, gate: bool = True) -> None:
        import threading

        self.live, self.lead, self.n_frames, self.gate = live, lead, n_frames, gate
        self.cond = threading.Condition()
        self.acquired = 0
        self.fused = 0
        self.gaps: list[int] = []  # acquired - fused, as each frame was acquired
        self.frames: list[tuple[dict[str, int], float, np.ndarray]] = []
        self._take = live._take
        live._take = self.take  # type: ignore[method-assign]

    def acquired_frame(self, image: Any, event: Any, meta: Any) -> None:
        index = {str(k): int(v) for k, v in dict(event.index).items()}
        with self.cond:
            self.acquired += 1
            self.gaps.append(self.acquired - self.fused)
            self.frames.append((index, float(event.z_pos), np.array(image, copy=True)))
            self.cond.notify_all()

    def take(self, *args: Any) -> None:
        import time

        with self.cond:
            due = self.fused + 1 + self.lead
            blocks = self.gate and due <= self.n_frames
            due = min(due, self.n_frames)
            assert self.cond.wait_for(lambda: self.acquired >= due, timeout=60.0), "deadlock"
        t_end = time.monotonic() + 60.0
        while blocks and not self.live.acquisition_waiting:  # frame `due` is on its way to
            assert time.monotonic() < t_end, "the acquisition never waited"  # the full
            time.sleep(0.0005)  # backlog: it will wait (polled: nothing notifies us)
        self._take(*args)
        with self.cond:
            self.fused += 1

    def group(self, p: int) -> tuple[np.ndarray, list[float]]:
        got = [(z, f) for i, z, f in self.frames if i.get("p", 0) == p]
        return np.stack([f for _, f in got]), [z for z, _ in got]


def _backlog_sequence(n_pos: int) -> Any:
    return _sequence(
        channels=["A"],
        stage_positions=[(None, None, 10.0 + 2 * i) for i in range(n_pos)],
        z_plan=useq.ZRelativePositions(relative=[float(z) for z in range(N_Z_BACKLOG)]),
    )


def _check_report_text(report: Any, text: str) -> None:
    """The warning's numbers are the report's, and the report's are measured (> 0)."""
    import re

    m = re.search(BACKLOG_TEXT, text)
    assert m is not None, text
    assert report.arrival_fps > 0 and report.fusion_fps > 0
    assert m["arrival"] == f"{report.arrival_fps:.1f}" and m["fusion"] == f"{report.fusion_fps:.1f}"
    assert int(m["behind"]) == report.frames_behind
    assert report.seconds_behind == pytest.approx(report.frames_behind / report.fusion_fps)
    assert m["seconds"] == f"{report.seconds_behind:.2f}"
    assert str(report.index) in text and f"max_backlog_frames={BACKLOG}" in text


def test_run_makes_the_acquisition_wait_at_the_backlog_bound(rig: Any) -> None:
    """live.run: when frames come faster than they fuse, at most max_backlog_frames wait
    (plus the one being fused and the one the acquisition holds), the acquisition waits
    instead of dropping a frame, and each group warns once with the rates."""
    from nanoro_optics.mmcore import LiveFusionBacklogWarning

    core, _ = rig
    n_pos = 2
    n = n_pos * N_Z_BACKLOG
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, levels=2, max_backlog_frames=BACKLOG)
    # fusion of frame k waits for frame k + BACKLOG + 1: exactly the frame that finds the
    # queue full, so the bound is reached at every frame from the 4th on
    slow = SlowFusion(live, lead=BACKLOG + 1, n_frames=n)
    core.mda.events.frameReady.connect(slow.acquired_frame)
    try:
        with pytest.warns(LiveFusionBacklogWarning) as caught:
            live.run(core, _backlog_sequence(n_pos), **RUN)
    finally:
        core.mda.events.frameReady.disconnect(slow.acquired_frame)
    assert live.errors == [] and live.n_done == n_pos and slow.fused == n
    # the bound: BACKLOG queued + 1 being fused + the one just acquired, reached, never passed
    assert max(slow.gaps) == BACKLOG + 2
    # one warning per group, bounded, with the measured rates
    texts = [str(w.message) for w in caught if w.category is LiveFusionBacklogWarning]
    assert len(texts) == n_pos == len(live.backlog_reports)
    assert [r.index for r in live.backlog_reports] == [(("c", 0), ("p", p)) for p in range(n_pos)]
    for report, text in zip(live.backlog_reports, texts, strict=True):
        assert report.bounded and report.frames_behind == BACKLOG
        _check_report_text(report, text)
        assert "the acquisition now waits for fusion" in text.lower()
    # no frame was dropped: every group equals offline fusion of what the camera gave
    for g in got:
        frames, zs = slow.group(dict(g.index)["p"])
        assert len(zs) == N_Z_BACKLOG and list(g.z_um) == zs
        ref = fuse_stack(frames, z_um=zs, levels=2)
        _assert_same(g.image, ref.image)
        _assert_same(g.depth_um, ref.depth)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bound=st.integers(1, 4), n_z=st.integers(2, 6), n_pos=st.integers(1, 2))
def test_backlog_bound_property(rig: Any, bound: int, n_z: int, n_pos: int) -> None:
    """Whatever the bound and the plan, with fusion always behind the acquisition: the
    frames acquired and not fused reach bound + 2 (bound queued, one fusing, one held by
    the waiting acquisition) and never more, every group whose frames found the queue
    full once 4 frames were measured warns once, and every group equals offline fusion
    (no frame dropped)."""
    import warnings

    from nanoro_optics.mmcore import LiveFusionBacklogWarning

    core, _ = rig
    n = n_pos * n_z
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, levels=2, max_backlog_frames=bound)
    slow = SlowFusion(live, lead=bound + 1, n_frames=n)
    seq = _sequence(
        channels=["A"],
        stage_positions=[(None, None, 10.0 + 2 * i) for i in range(n_pos)],
        z_plan=useq.ZRelativePositions(relative=[float(z) for z in range(n_z)]),
    )
    core.mda.events.frameReady.connect(slow.acquired_frame)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LiveFusionBacklogWarning)
            live.run(core, seq, **RUN)
    finally:
        core.mda.events.frameReady.disconnect(slow.acquired_frame)
    assert live.errors == [] and slow.fused == n and len(got) == n_pos
    assert max(slow.gaps) == min(bound + 2, n)
    # frame j (0-based) finds the queue full from j = bound + 1 on; when it is let in,
    # j - bound frames are fused: it is reported once 4 are (MIN_MEASURED_FRAMES)
    waited = sorted({j // n_z for j in range(bound + 4, n)})
    assert [r.index for r in live.backlog_reports] == [(("c", 0), ("p", p)) for p in waited]
    assert len([w for w in caught if w.category is LiveFusionBacklogWarning]) == len(waited)
    assert all(r.bounded and r.frames_behind == bound for r in live.backlog_reports)
    for g in got:
        frames, zs = slow.group(dict(g.index)["p"])
        _assert_same(g.image, fuse_stack(frames, z_um=zs, levels=2).image)


@pytest.mark.parametrize("as_error", [False, True])
def test_pymmcore_relay_backlog_is_reported_not_bounded(rig: Any, as_error: bool) -> None:
    """core.mda.run(output=live): pymmcore-plus' relay queue is not the handler's to bound;
    the handler says how many frames wait there. A warning made an error is kept in
    live.errors and never raised into the MDA (that would stop pymmcore-plus' relay)."""
    import warnings

    from nanoro_optics.mmcore import LiveFusionBacklogWarning

    core, _ = rig
    n = N_Z_BACKLOG
    got: list[FusedGroup] = []
    live = LiveFusion(got.append, levels=2, max_backlog_frames=BACKLOG)
    slow = SlowFusion(live, lead=n, n_frames=n, gate=False)  # the first waits for the last
    core.mda.events.frameReady.connect(slow.acquired_frame)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("error" if as_error else "always", LiveFusionBacklogWarning)
            core.mda.run(_backlog_sequence(1), output=live)
    finally:
        core.mda.events.frameReady.disconnect(slow.acquired_frame)
    assert live.n_done == 1 and slow.fused == n and len(got) == 1
    assert max(slow.gaps) == n  # nothing held the acquisition back
    [report] = live.backlog_reports
    assert not report.bounded and report.index == (("c", 0), ("p", 0))
    # said once 4 intervals between frames are measured (MIN_MEASURED_FRAMES), after the
    # 5th frame: frames 6..n wait behind it (and perhaps the sequence's end signal)
    assert report.frames_behind in (n - 5, n - 4)
    if as_error:
        [(key, exc)] = live.errors
        assert key == report.index and isinstance(exc, LiveFusionBacklogWarning)
        text = str(exc)
    else:
        assert live.errors == []
        [text] = [str(w.message) for w in caught if w.category is LiveFusionBacklogWarning]
    _check_report_text(report, text)
    assert "pymmcore-plus' queue, which this handler cannot bound" in text
    frames, zs = slow.group(0)
    _assert_same(got[0].image, fuse_stack(frames, z_um=zs, levels=2).image)


def test_cancelled_attached_mda_fuses_what_was_queued(rig: Any) -> None:
    """live.run cancelled midway: the frames already queued are fused (the finished group
    is emitted, equal to offline fusion), the open group is named incomplete, and the
    fusing thread is gone."""
    import threading

    from nanoro_optics.mmcore import LiveFusionBacklogWarning

    core, _ = rig
    n = {"frames": 0}

    def cancel_midway(*_: Any) -> None:  # synchronous: runs in the MDA's own thread
        n["frames"] += 1
        if n["frames"] == N_Z_BACKLOG + 3:  # group p1 has three of its frames
            core.mda.cancel()

    got: list[FusedGroup] = []
    live = LiveFusion(got.append, levels=2, max_backlog_frames=BACKLOG)
    slow = SlowFusion(live, lead=BACKLOG + 1, n_frames=N_Z_BACKLOG + 3)  # the queue fills
    core.mda.events.frameReady.connect(slow.acquired_frame)
    core.mda.events.frameReady.connect(cancel_midway)
    try:
        with pytest.warns(LiveFusionBacklogWarning):  # the queue was full in both groups
            live.run(core, _backlog_sequence(2), **RUN)
    finally:
        core.mda.events.frameReady.disconnect(cancel_midway)
        core.mda.events.frameReady.disconnect(slow.acquired_frame)
    assert live.errors == [] and slow.fused == N_Z_BACKLOG + 3 == len(slow.frames)
    assert [r.index for r in live.backlog_reports] == [(("c", 0), ("p", p)) for p in (0, 1)]
    assert [g.index for g in got] == [(("c", 0), ("p", 0))]
    assert live.incomplete == [(("c", 0), ("p", 1))]
    frames, zs = slow.group(0)
    _assert_same(got[0].image, fuse_stack(frames, z_um=zs, levels=2).image)
    assert not [t for t in threading.enumerate() if t.name == "LiveFusion-fuse"]


def test_max_backlog_frames_and_attached_are_checked(rig: Any) -> None:
    core, _ = rig
    with pytest.raises(ValueError, match=r"max_backlog_frames must be >= 1, got 0"):
        LiveFusion(max_backlog_frames=0)
    with pytest.raises(ValueError, match=r"max_backlog_frames must be <= 10000, got 10001"):
        LiveFusion(max_backlog_frames=10_001)
    with pytest.raises(TypeError, match=r"max_backlog_frames must be an integer, got float"):
        LiveFusion(max_backlog_frames=4.0)  # type: ignore[arg-type]
    assert LiveFusion().max_backlog_frames == 16
    live = LiveFusion()
    with pytest.raises(TypeError, match=r"core must be a pymmcore_plus\.CMMCorePlus"):
        with live.attached(object()):
            pass
    with live.attached(core):
        with pytest.raises(RuntimeError, match="attached already"):
            with live.attached(core):
                pass
    with live.attached(core):  # detached on the way out: it attaches again
        pass


# ------------------------------------------------------------------ the benchmark, smoke


def test_bench_live_mda_runs_on_a_tiny_grid() -> None:
    """benchmarks/bench_live_mda.py's grid on 32 x 32 frames: the cells, both finishes,
    the table and the JSON-ready result (timings are not checked: they are the bench's)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_live_mda.py"
    spec = importlib.util.spec_from_file_location("bench_live_mda", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines: list[str] = []
    result = bench.run_grid(
        side=32, n_z=2, exposures_ms=(0.0,), positions=(1, 2), repeats=1, progress=lines.append
    )
    assert [(r["positions"], r["exposure_ms"]) for r in result["rows"]] == [(1, 0.0), (2, 0.0)]
    for row in result["rows"]:
        assert row["frames"] == 2 * row["positions"] and len(row["plain_s"]) == 1
        for finish in ("default", "background"):
            cell = row[finish]
            assert len(cell["mda_s"]) == len(cell["outputs_s"]) == 1
            assert cell["outputs_median_s"] >= cell["mda_median_s"] > 0
            assert np.isfinite(cell["overhead_pct"]) and np.isfinite(cell["fusion_fps"])
            assert len(cell["other_cores"]) == 1
        # the cores other processes kept busy, per run (NaN where /proc/stat is missing)
        others = [
            *row["plain_other_cores"],
            *(row[f]["other_cores"][0] for f in row if f in ("default", "background")),
        ]
        assert len(others) == 3 and all(not o < 0 for o in others)
        assert row["other_cores_max"] == max(others) or not np.isfinite(row["other_cores_max"])
    assert "estimated grid time" in lines[0] and len(lines) == 3
    json.dumps(result)  # the JSON the bench writes
    table = bench.format_table(result)
    version = result["versions"]["pymmcore-plus"]
    assert version and f"pymmcore-plus {version}" in table
    assert table.count("\n| ") == 1 + 2  # header + one line per cell
    with pytest.raises(ValueError, match="connect must be one of"):
        bench.run_grid(side=32, n_z=3, connect="relay", progress=None)


@pytest.mark.parametrize(
    ("info", "warmed"),
    [
        ({"dtype": "uint16", "plane_shape": (32, 32)}, np.dtype(np.uint16)),
        ({"dtype": "uint8", "plane_shape": [24, 24, 3]}, np.dtype(np.uint8)),
        ({"dtype": "not a dtype", "plane_shape": (32, 32)}, None),
        ({"dtype": "uint16", "plane_shape": "32x32"}, None),
        ({"dtype": "complex64", "plane_shape": (32, 32)}, None),
        ({"plane_shape": (32, 32)}, None),
    ],
)
def test_sequence_start_warms_the_kernels_up_for_the_cameras_frames(
    info: dict[str, Any], warmed: np.dtype | None
) -> None:
    """The kernels for the camera's dtype are loaded while the stage moves, from the
    sequence's summary; a summary without a usable dtype starts nothing and breaks nothing."""
    live = LiveFusion()
    seq = _sequence(channels=["A"])
    live.sequenceStarted(seq, {"image_infos": [info]})
    if live._warmer is not None:
        live._warmer.join(timeout=120)
        assert not live._warmer.is_alive()
    assert live.warmed_up == warmed
    assert (live._warmer is None) == (warmed is None)  # nothing started without a dtype
    live.frameReady(np.ones(SHAPE, np.uint16), _event(p=0, c=0, z=0), {})
    live.sequenceFinished(seq)
    assert live.errors == []


def test_a_failing_warm_up_is_not_an_error_of_the_sequence(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A warm-up that fails is logged and left undone; errors are recorded for the
    sequence's own frames only, which are fused as usual."""
    import nanoro_optics.fusion as fusion

    class Broken:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("no kernels today")

    live = LiveFusion()
    seq = _sequence(channels=["A"])
    monkeypatch.setattr(fusion, "StackFuser", Broken)
    with caplog.at_level("DEBUG", logger="nanoro_optics.mmcore.mda"):
        live.sequenceStarted(seq, {"image_infos": [{"dtype": "uint16", "plane_shape": (16, 16)}]})
        assert live._warmer is not None
        live._warmer.join(timeout=120)
    monkeypatch.undo()
    assert live.warmed_up is None and live.errors == []
    assert "warm-up failed: no kernels today" in caplog.text
    for z in range(2):
        live.frameReady(np.full(SHAPE, z + 1, np.uint16), _event(p=0, c=0, z=z), {})
    live.sequenceFinished(seq)
    assert live.errors == []


def test_the_warm_up_maps_in_the_first_groups_buffers() -> None:
    """Started from the sequence's summary, the warm-up also allocates the first group's
    buffers (mapped in while the stage moves): that group's fuser takes them instead of
    faulting in new memory at its first frame."""
    from nanoro_optics.fusion.stack import _POOLS

    live = LiveFusion()
    seq = _sequence(channels=["A"])
    live.sequenceStarted(seq, {"image_infos": [{"dtype": "uint16", "plane_shape": SHAPE}]})
    assert live._warmer is not None
    live._warmer.join(timeout=120)
    entry = _POOLS[live]._entry
    assert entry is not None
    plane = entry[1][4]
    assert plane.shape == (1, *SHAPE) and plane.dtype == np.uint16
    live.frameReady(np.ones(SHAPE, np.uint16), _event(p=0, c=0, z=0), {})
    (group,) = live._open.values()
    assert group["fuser"]._plane is plane  # taken, not allocated anew
    assert _POOLS[live]._entry is None
    for z in range(1, seq.sizes["z"]):
        live.frameReady(np.full(SHAPE, z + 1, np.uint16), _event(p=0, c=0, z=z), {})
    live.sequenceFinished(seq)
    assert live.errors == []


def test_the_tiny_warm_up_stack_is_fused_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A later sequence with the same dtype and options finds the kernels loaded: its
    warm-up fuses no tiny stack (whose Python work would compete with the acquisition's
    start) and only maps in the first group's buffers."""
    from nanoro_optics.fusion import StackFuser
    from nanoro_optics.fusion.stack import _POOLS

    sizes: list[tuple[int, ...]] = []
    add = StackFuser.add

    def counting_add(self: StackFuser, frame: Any, **kw: Any) -> None:
        sizes.append(np.shape(frame))
        add(self, frame, **kw)

    monkeypatch.setattr(StackFuser, "add", counting_add)
    seq = _sequence(channels=["A"])
    info = {"image_infos": [{"dtype": "uint16", "plane_shape": SHAPE}]}
    for _ in range(2):
        live = LiveFusion(levels=2, sharpness=3)  # options no other test warms up
        live.sequenceStarted(seq, info)
        assert live._warmer is not None
        live._warmer.join(timeout=120)
        assert live.warmed_up == np.uint16 and _POOLS[live]._entry is not None
        assert sizes == [(16, 16)] * 3  # the first handler's tiny stack, and no other
        live.sequenceFinished(seq)


@pytest.mark.parametrize("nice", [0, 5])
def test_the_handlers_own_threads_yield_to_the_acquisition(rig: Any, nice: int) -> None:
    """The fusing and finishing threads run ``fusion_nice`` steps nicer than the thread
    that started the run (Linux; elsewhere as they are)."""
    core, _ = rig
    base = os.getpriority(os.PRIO_PROCESS, 0) if sys.platform.startswith("linux") else 0
    seen: dict[str, int] = {}

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def on_result(group: Any) -> None:
        seen["finish"] = priority()

    live = LiveFusion(on_result, fusion_nice=nice, levels=2)
    real_fuse = live._fuse

    def fuse(image: Any, event: Any, meta: Any) -> Any:
        seen["fuse"] = priority()
        return real_fuse(image, event, meta)

    live._fuse = fuse  # type: ignore[method-assign]
    live.run(core, _sequence(channels=["A"], stage_positions=[(None, None, 10.0)]), **RUN)
    assert live.errors == []
    if sys.platform.startswith("linux"):
        want = min(19, base + nice)
        assert seen == {"fuse": want, "finish": want}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller's


def test_fusion_nice_is_checked_and_the_helper_lowers_only_its_thread() -> None:
    from nanoro_optics._numba import lower_this_thread

    with pytest.raises(ValueError, match=r"fusion_nice must be <= 19, got 20"):
        LiveFusion(fusion_nice=20)
    with pytest.raises(ValueError, match=r"fusion_nice must be >= 0, got -1"):
        LiveFusion(fusion_nice=-1)
    with pytest.raises(TypeError, match=r"fusion_nice must be an integer, got float"):
        LiveFusion(fusion_nice=1.0)  # type: ignore[arg-type]
    assert LiveFusion().fusion_nice == 10
    got: list[tuple[bool, int]] = []

    def work() -> None:
        changed = lower_this_thread(3)
        got.append((changed, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))

    before = os.getpriority(os.PRIO_PROCESS, 0)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    if sys.platform.startswith("linux"):
        assert got == [(True, min(19, before + 3))]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the process's own: unchanged
    assert lower_this_thread(0) is False
