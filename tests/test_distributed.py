"""Batch fusion on a dask LocalCluster: equality with sequential fusion, resume, failures."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

#: a dask cluster per module and worker processes: left out of the quick subset
pytestmark = pytest.mark.slow

import cloudpickle  # noqa: E402  (installed with distributed)
import dask  # noqa: E402
import tifffile  # noqa: E402

from nanoro_optics.cli import main  # noqa: E402
from nanoro_optics.distributed import (  # noqa: E402
    BatchReport,
    StackRecord,
    fuse_many,
    fuse_tiled,
)
from nanoro_optics.distributed import batch as batch_mod  # noqa: E402
from nanoro_optics.fusion import FusionOptions, fuse_stack, synthetic_stack  # noqa: E402
from nanoro_optics.io import iter_stack, read_image, write_image  # noqa: E402

# the sources below are module-level callables; workers cannot import this test module, so
# cloudpickle sends them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SHAPE = (64, 64)
N_FRAMES = 4


@pytest.fixture(scope="module")
def client() -> Any:
    # a worker death fails its task at once (no silent re-run), so the tests see both paths:
    # dask's retries of an erring task, and a rerun of the batch after a killed worker
    # (worker-saturation 1: a worker holds only the task it runs, so a death fails that one)
    config = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    batch_mod._warm_kernels()  # workers load the kernels from numba's cache
    with dask.config.set(config):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,
        )
        c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _write_stacks(root: Path) -> dict[str, Any]:
    """Three stacks in the three source kinds: multi-page TIFF, folder of PNGs, file list."""
    root.mkdir(parents=True, exist_ok=True)
    s0 = synthetic_stack(SHAPE, N_FRAMES, seed=0)
    tifffile.imwrite(root / "s0.tif", s0.frames, photometric="rgb")
    s1 = synthetic_stack(SHAPE, N_FRAMES, seed=1, dtype=np.uint16, channels=1)
    (root / "s1").mkdir(exist_ok=True)
    for k, f in enumerate(s1.frames):
        write_image(root / "s1" / f"f{k}.png", f)
    s2 = synthetic_stack(SHAPE, N_FRAMES, seed=2, dtype=np.float32, noise_dn=0.01)
    files = []
    for k, f in enumerate(s2.frames):
        tifffile.imwrite(root / f"s2_{k}.tif", f, photometric="rgb")
        files.append(str(root / f"s2_{k}.tif"))
    return {"s0": str(root / "s0.tif"), "s1": str(root / "s1"), "s2": files}


def _check_equal_to_sequential(report: BatchReport, stacks: dict[str, Any], **opts: Any) -> None:
    for rec in report.records:
        ref = fuse_stack(iter_stack(stacks[rec.name]), **opts)
        image = read_image(rec.image_path)
        assert image.dtype == ref.image.dtype
        np.testing.assert_array_equal(image, ref.image)
        np.testing.assert_array_equal(read_image(rec.depth_path), ref.depth)
        assert rec.n_frames == ref.n_frames == N_FRAMES
        assert rec.shape == ref.image.shape


def test_outputs_equal_sequential_fusion(client: Any, tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")
    seen: list[tuple[str, int, int]] = []
    report = fuse_many(
        stacks,
        tmp_path / "out",
        client=client,
        sharpness=2,
        progress=lambda rec, k, n: seen.append((rec.name, k, n)),
    )
    assert report.ok and len(report.done) == 3 and report.n_workers == 2
    assert [r.name for r in report.records] == ["s0", "s1", "s2"]  # input order
    assert sorted(name for name, _, _ in seen) == ["s0", "s1", "s2"]
    assert [(k, n) for _, k, n in seen] == [(1, 3), (2, 3), (3, 3)]
    _check_equal_to_sequential(report, stacks, sharpness=2)
    # the record on disk is the one returned, and names the source files
    rec0 = StackRecord.from_json(json.loads(Path(report.records[0].record_path).read_text()))
    assert rec0.status == "done" and rec0.sources == (stacks["s0"],)
    assert rec0.options == FusionOptions(sharpness=2).to_json()  # the batch's one options
    assert StackRecord.from_json(rec0.to_json()) == rec0
    # no temporary file left behind
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_rerun_completes_only_missing_stacks(client: Any, tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")
    out = tmp_path / "out"
    first = fuse_many(stacks, out, client=client)
    assert len(first.done) == 3
    # an interrupted batch: s1's task died before its record, s2's image was lost
    Path(first.records[1].record_path).unlink()
    Path(first.records[2].image_path).unlink()
    mtime0 = Path(first.records[0].image_path).stat().st_mtime_ns
    again = fuse_many(stacks, out, client=client)
    assert [r.status for r in again.records] == ["skipped", "done", "done"]
    assert Path(first.records[0].image_path).stat().st_mtime_ns == mtime0
    _check_equal_to_sequential(again, stacks)
    # a finished batch starts no work (and needs no cluster)
    third = fuse_many(stacks, out, client="tcp://127.0.0.1:9", timeout_s=0.5)
    assert [r.status for r in third.records] == ["skipped"] * 3 and third.n_workers == 0
    # other options are another result: everything is fused again
    fourth = fuse_many(stacks, out, client=client, sharpness=None)
    assert len(fourth.done) == 3
    _check_equal_to_sequential(fourth, stacks, sharpness=None)
    assert len(fuse_many(stacks, out, client=client, overwrite=True, sharpness=None).done) == 3


class DieOnce:
    """A stack source that kills the worker process reading it, the first time only."""

    def __init__(self, marker: str, source: str) -> None:
        self.marker = marker
        self.source = source

    def __call__(self) -> Any:
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            # die mid-task, as under the OOM killer or kill -9; the pause lets the worker's
            # earlier messages (an other stack finished) reach the scheduler first
            time.sleep(1.0)
            os._exit(13)
        return iter_stack(self.source)


class FailOnce(DieOnce):
    """A stack source whose first read raises an unexpected error (dask retries it)."""

    def __call__(self) -> Any:
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("transient failure")
        return iter_stack(self.source)


def test_killed_worker_then_rerun_completes_only_missing(client: Any, tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")
    marker = str(tmp_path / "killed-once")
    batch = {**stacks, "dies": DieOnce(marker, stacks["s0"])}
    out = tmp_path / "out"
    first = fuse_many(batch, out, client=client)
    assert os.path.exists(marker)
    by_name = {r.name: r for r in first.records}
    assert by_name["dies"].status == "failed"
    assert "KilledWorker" in by_name["dies"].error and "died" in by_name["dies"].error
    assert "FAILED dies:" in first.summary()
    assert all(by_name[n].status == "done" for n in stacks)
    on_disk = json.loads(Path(by_name["dies"].record_path).read_text())
    assert on_disk["status"] == "failed" and "KilledWorker" in on_disk["error"]
    # the rerun fuses only the stack that was lost with its worker
    client.wait_for_workers(2, timeout=60)
    again = fuse_many(batch, out, client=client)
    assert {r.name: r.status for r in again.records} == {
        "s0": "skipped",
        "s1": "skipped",
        "s2": "skipped",
        "dies": "done",
    }
    ref = fuse_stack(iter_stack(stacks["s0"]))
    np.testing.assert_array_equal(read_image(again.records[3].image_path), ref.image)


def test_erring_task_is_retried_by_dask(client: Any, tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")
    batch = {"flaky": FailOnce(str(tmp_path / "failed-once"), stacks["s0"])}
    report = fuse_many(batch, tmp_path / "out", client=client, retries=1)
    assert report.ok and report.records[0].status == "done"
    never = {"flaky": FailOnce(str(tmp_path / "failed-twice"), stacks["s0"])}
    report = fuse_many(never, tmp_path / "out2", client=client, retries=0)
    assert report.records[0].status == "failed"
    assert "RuntimeError: transient failure (after 0 retries)" in report.records[0].error


def test_bad_stack_fails_alone_with_its_reason(client: Any, tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")
    missing = str(tmp_path / "in" / "nope.tif")
    # a missing file is a typo: refused before anything runs, with no record written
    typo = {**stacks, "missing_file": [stacks["s2"][0], missing, stacks["s2"][2]]}
    with pytest.raises(FileNotFoundError, match=f"stack 'missing_file': .*{missing}"):
        fuse_many(typo, tmp_path / "out", client=client)
    assert not (tmp_path / "out").exists()
    (tmp_path / "in" / "empty").mkdir()
    bad = {
        **stacks,
        "empty": str(tmp_path / "in" / "empty"),
        "mixed": [stacks["s0"], stacks["s2"][0]],  # uint8 RGB then float32 frames
    }
    report = fuse_many(bad, tmp_path / "out", client=client)
    status = {r.name: r.status for r in report.records}
    assert status == {
        "s0": "done",
        "s1": "done",
        "s2": "done",
        "empty": "failed",
        "mixed": "failed",
    }
    errors = {r.name: r.error for r in report.failed}
    assert errors["empty"].startswith("ValueError: empty stack")
    assert "dtype" in errors["mixed"] and "frame 4" in errors["mixed"]
    text = report.summary()
    assert "3 fused, 0 already done, 2 failed" in text and "FAILED empty" in text
    assert not Path(report.failed[0].image_path).exists()
    # a rerun retries the failed stacks only (and they fail again, for the same reason)
    again = fuse_many(bad, tmp_path / "out", client=client)
    assert [r.status for r in again.records] == ["skipped"] * 3 + ["failed"] * 2


def test_unreachable_scheduler_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"cannot reach the dask scheduler at 'tcp://127\."):
        fuse_many(stacks, tmp_path / "out", client="tcp://127.0.0.1:9", timeout_s=1)
    assert time.perf_counter() - t0 < 30
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("stacks", "kwargs", "error", "match"),
    [
        ({}, {}, ValueError, "stacks is empty"),
        ({"a/b": "x"}, {}, ValueError, "cannot name a file"),
        ({".hidden": "x"}, {}, ValueError, "cannot name a file"),
        ({3: "x"}, {}, TypeError, "stack names must be str"),
        ({"a": 3.5}, {}, TypeError, "source must be a path"),
        ("folder", {}, TypeError, "stacks must be a mapping"),
        ({"a": "x"}, {"image_suffix": ".jpg"}, ValueError, "image_suffix must be one of"),
        ({"a": "x"}, {"retries": -1}, ValueError, "retries must be >= 0"),
        ({"a": "x"}, {"numba_threads": 0}, ValueError, "numba_threads must be >= 1"),
        ({"a": "x"}, {"align": 1}, TypeError, "align must be a bool"),
        ({"a": "x"}, {"blur": 3}, TypeError, "FusionOptions has no field blur"),
        ({"a": "x"}, {"sharpness": 0}, ValueError, "sharpness must be >= 1"),
        ({"a": "x"}, {"z_um": [1.0]}, ValueError, "does not take z_um"),
        ({"a": "x"}, {"client": 3}, TypeError, "client must be None"),
        ({"a": "x"}, {"timeout_s": 0}, ValueError, "timeout_s must be > 0"),
        ({"a": "x"}, {"progress": 3}, TypeError, "progress must be callable"),
        ({"a": "x"}, {"z_step_um": 0.0}, ValueError, "z_step_um must not be 0"),
        ({"a": "x"}, {"z_step_um": float("nan")}, ValueError, "z_step_um must be finite"),
        ({"a": "x"}, {"z_step_um": "2"}, TypeError, "z_step_um must be a real number"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, stacks: Any, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        fuse_many(stacks, tmp_path / "out", **kwargs)


def test_duplicate_names_from_paths(tmp_path: Path) -> None:
    (tmp_path / "a" / "s").mkdir(parents=True)
    (tmp_path / "b" / "s").mkdir(parents=True)
    with pytest.raises(ValueError, match="two stacks are named 's'"):
        fuse_many([tmp_path / "a" / "s", tmp_path / "b" / "s"], tmp_path / "out")


def test_tiled_fusion_spread_over_workers(client: Any, tmp_path: Path) -> None:
    s = synthetic_stack((150, 130), 5, seed=4, dtype=np.uint16, noise_dn=20.0)
    tifffile.imwrite(tmp_path / "big.tif", s.frames, photometric="rgb")
    res = fuse_tiled(tmp_path / "big.tif", levels=3, tile_px=48, client=client)
    ref = fuse_stack(s.frames, levels=3, fill_depth=False)
    assert res.n_tiles == 4 * 3  # ceil(150 / 48) x ceil(130 / 48)
    np.testing.assert_array_equal(res.image, ref.image)
    np.testing.assert_array_equal(res.depth, ref.depth)
    with pytest.raises(TypeError, match="must be a TIFF path"):
        fuse_tiled(s.frames, levels=3, tile_px=48, client=client)


def test_cli_fuse_batch(client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    stacks = _write_stacks(root)
    (root / "empty").mkdir()
    address = client.scheduler.address
    argv = ["fuse-batch", stacks["s1"], str(root / "empty"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--scheduler", address]) == 1  # one stack failed
    out = capsys.readouterr().out
    assert "[1/2]" in out and "[2/2]" in out and "dashboard" in out.lower()
    assert "FAILED empty: ValueError: empty stack" in out
    ref = fuse_stack(iter_stack(stacks["s1"]))
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "s1.tif"), ref.image)
    # the default path: a LocalCluster of its own, --json summary, all done already
    rc = main(
        [*argv[:2], "--out", str(tmp_path / "out"), "--workers", "1", "--json", "--overwrite"]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in summary["records"]] == ["done"]
    assert summary["n_workers"] == 1
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:9", "--timeout", "0.5"]) == 2
    assert "cannot reach the dask scheduler" in capsys.readouterr().err
    assert main([*argv, "--workers", "0"]) == 2


def test_package_import_does_not_import_dask() -> None:
    code = (
        "import sys, nanoro_optics.distributed as d; "
        "print(sorted(m for m in ('dask', 'distributed', 'numba') if m in sys.modules)); "
        "print(d.tile_margin_px(3))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "[]"


def test_missing_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "nanoro_optics\[dask\]"'):
        fuse_many({"a": "x"}, tmp_path)
    assert batch_mod.RECORD_FORMAT.startswith("nanoro_optics.fuse_many")


# ------------------------------------------------------------- the CLI as a new user meets it

from test_cli_options import _cli  # noqa: E402  (the command in a subprocess, this checkout)


def test_missing_stack_is_refused_before_a_cluster_starts(tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")
    t0 = time.perf_counter()
    res = _cli("fuse-batch", stacks["s1"], "in/nope", "--out", "out", cwd=tmp_path)
    assert res.returncode == 2
    assert re.search(
        r"stack 'nope': no such file or folder: \S*in/nope; nothing was fused", res.stderr
    )
    assert not (tmp_path / "out").exists()  # no folder, no record, no cluster
    assert "to fuse on" not in res.stdout
    assert time.perf_counter() - t0 < 60
    with pytest.raises(FileNotFoundError, match="'nope'"):
        fuse_many({"s1": stacks["s1"], "nope": tmp_path / "nope"}, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    with pytest.raises(FileNotFoundError, match="matches no stack"):
        fuse_many([str(tmp_path / "in" / "zz*")], tmp_path / "out3")


def test_quoted_glob_names_one_stack_per_match(client: Any, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for k in (10, 2):
        s = synthetic_stack(SHAPE, N_FRAMES, seed=k, dtype=np.uint8, channels=1)
        (root / f"run{k}").mkdir(parents=True)
        for j, f in enumerate(s.frames):
            write_image(root / f"run{k}" / f"f{j}.png", f)
    address = client.scheduler.address
    argv = ["fuse-batch", "runs/*/", "--out", "out", "--scheduler", address]
    res = _cli(*argv, "--z-step-um", "2", "--hard", "--levels", "3", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "2 stacks to fuse on 2 dask workers" in res.stdout
    assert "[1/2]" in res.stdout and "fused 4 frames" in res.stdout
    for name in ("run2", "run10"):
        ref = fuse_stack(iter_stack(root / name), sharpness=None, levels=3)
        np.testing.assert_array_equal(read_image(tmp_path / "out" / f"{name}.tif"), ref.image)
        depth = tifffile.imread(tmp_path / "out" / f"{name}.depth.tif")
        np.testing.assert_allclose(depth, 2.0 * ref.depth, rtol=1e-6, equal_nan=True)
        rec = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert rec["depth_unit"] == "um"
        want = FusionOptions(levels=3, sharpness=None, z_step_um=2.0)
        assert FusionOptions.from_json(rec["options"]) == want
    # fuse's --z-step-um gives the same depth map
    one = _cli(
        "fuse",
        "runs/run2",
        "-o",
        "o.tif",
        "--depth-map",
        "d.tif",
        "--z-step-um",
        "2",
        "--hard",
        "--levels",
        "3",
        "-q",
        cwd=tmp_path,
    )
    assert one.returncode == 0, one.stderr
    np.testing.assert_array_equal(  # one z rule: the same map bit for bit
        tifffile.imread(tmp_path / "d.tif"),
        tifffile.imread(tmp_path / "out" / "run2.depth.tif"),
    )


def test_only_the_dtypes_of_the_stacks_are_compiled_before_the_cluster(tmp_path: Path) -> None:
    stacks = _write_stacks(tmp_path / "in")  # uint8 TIFF, uint16 PNGs, float32 TIFFs
    jobs = [
        batch_mod._Job(n, s, str(tmp_path), ".tif", FusionOptions(), 1) for n, s in stacks.items()
    ]
    assert batch_mod._frame_dtypes(jobs) == ("uint8", "uint16", "float32")
    assert batch_mod._frame_dtypes(jobs[1:2]) == ("uint16",)
    assert batch_mod._frame_dtypes(jobs[:1] * 2) == ("uint8",)
    # more stacks than are looked at, a callable source or an unreadable one: warm them all
    assert batch_mod._frame_dtypes(jobs[1:2] * 5) == batch_mod._WORK_DTYPES
    odd = batch_mod._Job("c", lambda: iter([]), str(tmp_path), ".tif", FusionOptions(), 1)
    assert batch_mod._frame_dtypes([odd]) == batch_mod._WORK_DTYPES
    (tmp_path / "empty").mkdir()
    empty = batch_mod._Job("e", str(tmp_path / "empty"), str(tmp_path), ".tif", FusionOptions(), 1)
    assert batch_mod._frame_dtypes([empty]) == batch_mod._WORK_DTYPES
