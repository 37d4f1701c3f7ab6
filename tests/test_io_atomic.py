"""Atomic writes and output sets: all or none, no leftover temporaries, old files untouched."""

from __future__ import annotations

import ast
import errno
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nanoro_optics
from nanoro_optics import io as nio
from nanoro_optics.io import _atomic


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _old_outputs(tmp_path: Path) -> dict[str, bytes]:
    nio.write_image(tmp_path / "fused.png", np.full((4, 5), 7, np.uint8))
    nio.write_depth_map(tmp_path / "depth.tif", np.ones((4, 5), np.float32))
    return {p.name: p.read_bytes() for p in tmp_path.iterdir()}


def _write_run(tmp_path: Path, outputs: nio.OutputSet, *, fail_at: int = -1) -> None:
    """Write a run's three outputs; the writer number ``fail_at`` hits a full disk."""

    def full_disk(fh: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    nio.write_image(tmp_path / "fused.png", np.full((4, 5), 9, np.uint8), outputs=outputs)
    if fail_at == 1:
        _atomic.atomic_write(tmp_path / "depth.tif", full_disk, outputs=outputs)
    nio.write_depth_map(tmp_path / "depth.tif", np.zeros((4, 5), np.float32), outputs=outputs)
    nio.write_json(tmp_path / "record.json", {"frames": 3}, outputs=outputs)


def test_an_output_set_appears_only_when_it_commits(tmp_path: Path) -> None:
    with nio.OutputSet() as outputs:
        _write_run(tmp_path, outputs)
        assert all(name.startswith(".") for name in _visible(tmp_path))  # only temporaries
        assert outputs.paths == [tmp_path / n for n in ("fused.png", "depth.tif", "record.json")]
    assert _visible(tmp_path) == ["depth.tif", "fused.png", "record.json"]
    assert int(nio.read_image(tmp_path / "fused.png")[0, 0]) == 9
    assert (tmp_path / "record.json").read_text() == '{\n  "frames": 3\n}\n'


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_at_the_second_writer_leaves_no_partial_set(tmp_path, existing) -> None:
    before = _old_outputs(tmp_path) if existing else {}
    with pytest.raises(OSError) as info, nio.OutputSet() as outputs:
        _write_run(tmp_path, outputs, fail_at=1)
    assert info.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp left


@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupt_between_outputs_leaves_no_partial_set(tmp_path, existing) -> None:
    before = _old_outputs(tmp_path) if existing else {}
    with pytest.raises(KeyboardInterrupt), nio.OutputSet() as outputs:
        nio.write_image(tmp_path / "fused.png", np.zeros((4, 5), np.uint8), outputs=outputs)
        raise KeyboardInterrupt  # SIGINT between the image and the maps
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_failed_rename_rolls_the_set_back_to_the_old_files(tmp_path, monkeypatch) -> None:
    before = _old_outputs(tmp_path)
    real_move = _atomic._move
    calls: list[Path] = []

    def move_then_fail(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 2:  # the second output's rename fails
            raise OSError(errno.EIO, "I/O error")
        real_move(src, dst)

    monkeypatch.setattr(_atomic, "_move", move_then_fail)
    with pytest.raises(OSError, match="I/O error"), nio.OutputSet() as outputs:
        _write_run(tmp_path, outputs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_new_set_whose_rename_fails_leaves_nothing(tmp_path, monkeypatch) -> None:
    real_move = _atomic._move

    def fail_on_json(src: Path, dst: Path) -> None:
        if dst.name == "record.json":
            raise OSError(errno.EIO, "I/O error")
        real_move(src, dst)

    monkeypatch.setattr(_atomic, "_move", fail_on_json)
    with pytest.raises(OSError), nio.OutputSet() as outputs:
        _write_run(tmp_path, outputs)
    assert _visible(tmp_path) == []


def test_sigint_during_the_renames_waits_until_the_set_is_complete(tmp_path, monkeypatch):
    real_move = _atomic._move

    def move_and_interrupt(src: Path, dst: Path) -> None:
        real_move(src, dst)
        if dst.name == "fused.png":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_atomic, "_move", move_and_interrupt)
    with pytest.raises(KeyboardInterrupt), nio.OutputSet() as outputs:
        _write_run(tmp_path, outputs)
    assert _visible(tmp_path) == ["depth.tif", "fused.png", "record.json"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_overwrite_refuses_before_and_at_commit(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=False"):
        nio.write_image(tmp_path / "a.png", np.zeros((2, 2), np.uint8), overwrite=False)
    with pytest.raises(FileExistsError), nio.OutputSet() as outputs:
        nio.write_image(tmp_path / "b.png", np.zeros((2, 2), np.uint8), outputs=outputs)
        nio.write_json(tmp_path / "c.json", {}, overwrite=False, outputs=outputs)
        (tmp_path / "c.json").write_text("appeared meanwhile")
    assert _visible(tmp_path) == ["a.png", "c.json"]
    assert (tmp_path / "a.png").read_bytes() == b"old"
    assert (tmp_path / "c.json").read_text() == "appeared meanwhile"


def test_a_folder_output_replaces_an_old_folder(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "old").write_text("old")
    with nio.OutputSet() as outputs:
        tmp = outputs.reserve(store, directory=True)
        (tmp / "new").write_text("new")
    assert _visible(tmp_path) == ["s.zarr"] and _visible(store) == ["new"]


def test_output_set_arguments_are_checked(tmp_path: Path) -> None:
    outputs = nio.OutputSet()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        outputs.reserve(tmp_path / "missing" / "a.tif")
    with pytest.raises(ValueError, match="is a folder"):
        outputs.reserve(tmp_path)
    with pytest.raises(TypeError, match="overwrite must be a bool"):
        outputs.reserve(tmp_path / "a.tif", overwrite=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="directory must be a bool"):
        outputs.reserve(tmp_path / "a.tif", directory="yes")  # type: ignore[arg-type]
    outputs.reserve(tmp_path / "a.tif")
    with pytest.raises(ValueError, match="already an output"):
        outputs.reserve(tmp_path / "a.tif")
    outputs.discard()
    with pytest.raises(RuntimeError, match="already committed or discarded"):
        outputs.commit()
    with pytest.raises(TypeError, match=r"outputs must be an io\.OutputSet"):
        nio.write_json(tmp_path / "x.json", {}, outputs="no")  # type: ignore[arg-type]
    assert _visible(tmp_path) == []


def test_os_replace_is_called_in_one_place_only() -> None:
    root = Path(nanoro_optics.__file__).parent
    calls = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("replace", "rename")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "os"
            ):
                calls.append(f"{path.relative_to(root)}:{node.lineno}")
    assert len(calls) == 1 and calls[0].startswith("io/_atomic.py"), calls


@settings(max_examples=30, deadline=None)
@given(
    existing=st.lists(st.booleans(), min_size=4, max_size=4),
    fail_at=st.integers(0, 4),
    fail_in=st.sampled_from(["write", "rename"]),
)
def test_a_set_is_all_new_or_all_old_whatever_fails(
    tmp_path_factory, existing, fail_at, fail_in
) -> None:
    """Four outputs, some already there; a failure at output ``fail_at`` (4: none) while
    writing or while renaming leaves exactly the old files, else exactly the new ones."""
    folder = tmp_path_factory.mktemp("set")
    names = [f"out{k}.bin" for k in range(4)]
    for name, there in zip(names, existing, strict=True):
        if there:
            (folder / name).write_bytes(b"old " + name.encode())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_move = _atomic._move

    def move(src: Path, dst: Path) -> None:
        if fail_in == "rename" and dst.name == f"out{fail_at}.bin":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_move(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_atomic, "_move", move)
        _run_set(folder, names, fail_at, fail_in, before)


def _run_set(
    folder: Path, names: list[str], fail_at: int, fail_in: str, before: dict[str, bytes]
) -> None:
    try:
        with nio.OutputSet() as outputs:
            for k, name in enumerate(names):
                if fail_in == "write" and k == fail_at:
                    raise OSError(errno.ENOSPC, "No space left on device")
                outputs.write(folder / name, lambda fh, n=name: fh.write(b"new " + n.encode()))
    except OSError:
        assert fail_at < 4
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    else:
        assert fail_at == 4
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
            n: b"new " + n.encode() for n in names
        }


def test_ome_outputs_join_a_set_and_leave_nothing_on_failure(tmp_path: Path) -> None:
    pytest.importorskip("yaozarrs")
    img = np.zeros((4, 6), np.uint16)
    maps = (np.ones((4, 6), np.float32), np.zeros((4, 6), np.float32))
    meta = {"pixel_size_um": 0.5, "z_um": [1.0, 2.0], "channel_names": ["c"]}
    with pytest.raises(KeyboardInterrupt), nio.OutputSet() as outputs:
        nio.write_fusion_ome(tmp_path / "a.ome.zarr", img, *maps, **meta, outputs=outputs)
        nio.write_fusion_ome(tmp_path / "a.ome.tif", img, *maps, **meta, outputs=outputs)
        raise KeyboardInterrupt
    assert _visible(tmp_path) == []
    with nio.OutputSet() as outputs:
        nio.write_fusion_ome(tmp_path / "a.ome.zarr", img, *maps, **meta, outputs=outputs)
        nio.write_fusion_ome(tmp_path / "a.ome.tif", img, *maps, **meta, outputs=outputs)
    assert _visible(tmp_path) == ["a.ome.tif", "a.ome.zarr"]
    with nio.OutputSet() as outputs:  # a store replaces the old store
        nio.write_fusion_ome(
            tmp_path / "a.ome.zarr", img + 1, *maps, **meta, overwrite=True, outputs=outputs
        )
    assert _visible(tmp_path) == ["a.ome.tif", "a.ome.zarr"]
