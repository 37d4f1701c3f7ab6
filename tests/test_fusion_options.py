"""FusionOptions: one frozen, validated value for every setting of a fusion."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanoro_optics.fusion import FusionOptions, StackFuser, fuse_stack, synthetic_stack
from nanoro_optics.fusion.options import HELP
from nanoro_optics.psf import IndexMismatch

FIELDS = [f.name for f in dataclasses.fields(FusionOptions)]

_mismatch = st.builds(
    IndexMismatch,
    interface_um=st.floats(-100, 100),
    na=st.floats(0.1, 0.9),
    n_immersion=st.floats(1.0, 1.6),
    n_sample=st.floats(1.0, 1.6),
    model=st.just("carlsson"),
)

options = st.builds(
    FusionOptions,
    sharpness=st.one_of(st.none(), st.integers(1, 64)),
    window_px=st.sampled_from([1, 3, 5, 15]),
    coarse_window_px=st.one_of(st.none(), st.sampled_from([1, 7])),
    inherit=st.floats(0, 100),
    focus_levels=st.integers(1, 32),
    noise_floor=st.floats(1e-6, 1e6),
    levels=st.one_of(st.none(), st.integers(1, 32)),
    bit_depth=st.one_of(st.none(), st.integers(1, 32)),
    noise_dn=st.one_of(
        st.none(),
        st.floats(1e-3, 1e3),
        st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=4).map(tuple),
    ),
    guide_channel=st.one_of(st.none(), st.integers(0, 15)),
    fill_depth=st.booleans(),
    min_confidence=st.floats(0, 1),
    z_step_um=st.one_of(st.none(), st.floats(-100, 100).filter(lambda v: v != 0)),
    index_mismatch=st.one_of(st.none(), _mismatch),
)


@given(options)
def test_json_round_trip(opts: FusionOptions) -> None:
    text = json.dumps(opts.to_json())  # JSON-ready
    again = FusionOptions.from_json(text)
    assert again == opts
    assert FusionOptions.from_json(opts.to_json()) == opts
    assert again.replace() == opts


def test_every_field_has_one_help_text_and_an_override() -> None:
    assert sorted(HELP) == sorted(FIELDS)
    assert all(FusionOptions.help(name) == HELP[name] for name in FIELDS)
    with pytest.raises(ValueError, match="name must be one of"):
        FusionOptions.help("no_such_field")
    for func in (StackFuser.__init__, fuse_stack):
        params = inspect.signature(func).parameters
        assert "options" in params
        for name in FIELDS:  # visible in the signature, keyword-only
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (func, name)
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"window_px": 4}, ValueError, "window_px must be odd, got 4"),
        ({"sharpness": 65}, ValueError, "sharpness"),
        ({"levels": 0}, ValueError, "levels"),
        ({"reference": "last", "align": True}, ValueError, "reference must be one of"),
        ({"reference": "middle"}, ValueError, "reference='middle' is for align=True"),
        ({"crop": True}, ValueError, "crop=True needs align=True"),
        ({"noise_dn": 0.0}, ValueError, "noise_dn must be finite, > 0"),
        ({"noise_dn": (1.0, -1.0)}, ValueError, r"noise_dn\[1\]"),
        ({"noise_dn": "2"}, TypeError, "noise_dn must be a number"),
        ({"z_step_um": 0.0}, ValueError, "z_step_um must not be 0"),
        ({"z_step_um": float("nan")}, ValueError, "z_step_um must be finite"),
        ({"z_step_um": "2"}, TypeError, "z_step_um must be a real number"),
        ({"z_um": (0.0, 1.0, 1.0)}, ValueError, "z_um must be strictly monotonic"),
        ({"z_um": (0.0, 1.0), "z_step_um": 1.0}, ValueError, "not both"),
        ({"guide_channel": 16}, ValueError, "guide_channel"),
        ({"bit_depth": 33}, ValueError, "bit_depth"),
        ({"min_confidence": 1.5}, ValueError, "min_confidence"),
        ({"index_mismatch": {"na": 1}}, TypeError, "index_mismatch must be"),
        ({"halo_blur_px": 0.0}, ValueError, "halo_blur_px must be finite, > 0"),
        ({"halo_blur_px": float("inf")}, ValueError, "halo_blur_px must be finite"),
        ({"halo_blur_px": "1.5"}, TypeError, "halo_blur_px must be a real number"),
        ({"align": 1}, TypeError, "align"),
    ],
)
def test_bad_values_are_refused_naming_the_field(changes, error, match) -> None:
    with pytest.raises(error, match=match):
        FusionOptions(**changes)
    with pytest.raises(error, match=match):
        FusionOptions().replace(**changes)  # replace validates too


def test_unknown_fields_are_named() -> None:
    with pytest.raises(TypeError, match="no field windw_px"):
        FusionOptions().replace(windw_px=3)
    with pytest.raises(ValueError, match="unknown FusionOptions field"):
        FusionOptions.from_json({**FusionOptions().to_json(), "windw_px": 3})
    with pytest.raises(ValueError, match=r"not nanoro_optics\.FusionOptions/1 options"):
        FusionOptions.from_json({"levels": 3})


def test_options_and_overrides_give_the_same_fusion() -> None:
    frames = synthetic_stack((40, 48), 4, seed=3).frames
    opts = FusionOptions(sharpness=None, levels=3, z_step_um=-2.0)
    by_options = fuse_stack(frames, opts)
    by_keywords = fuse_stack(frames, sharpness=None, levels=3, z_step_um=-2.0)
    mixed = fuse_stack(frames, FusionOptions(levels=5), sharpness=None, levels=3, z_step_um=-2.0)
    for res in (by_keywords, mixed):
        np.testing.assert_array_equal(res.image, by_options.image)
        np.testing.assert_array_equal(res.depth, by_options.depth)
    z = fuse_stack(frames, z_um=[0.0, -2.0, -4.0, -6.0], sharpness=None, levels=3)
    np.testing.assert_array_equal(z.depth, by_options.depth)  # k * step, the one z rule
    assert by_options.depth_unit == "um" and np.nanmax(by_options.depth) <= 0.0
    fuser = StackFuser(opts)
    fuser.add(frames[0])
    with pytest.raises(ValueError, match="z_step_um"):
        fuser.add(frames[1], z_um=1.0)


def test_index_mismatch_relabels_the_depth_map() -> None:
    frames = synthetic_stack((40, 48), 5, seed=3).frames
    water = IndexMismatch(interface_um=0.0, na=1.2, n_immersion=1.518, n_sample=1.33,
                          model="carlsson")  # fmt: skip
    nominal = fuse_stack(frames, z_step_um=-1.0)
    actual = fuse_stack(frames, z_step_um=-1.0, index_mismatch=water)
    assert (nominal.depth_kind, actual.depth_kind) == ("nominal", "actual")
    np.testing.assert_array_equal(actual.depth, water.relabel(nominal.depth, -np.arange(5.0)))
    np.testing.assert_array_equal(actual.image, nominal.image)
    with pytest.raises(ValueError, match="index_mismatch corrects a depth map in um"):
        fuse_stack(frames, index_mismatch=water)
