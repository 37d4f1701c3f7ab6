"""Fuse many focus stacks on a dask cluster, resumably: :func:`fuse_many`.

One task per stack runs the file pipeline the ``fuse`` command runs
(:func:`nanoro_optics.pipeline.fuse_to_files`, with the batch's one
:class:`~nanoro_optics.fusion.FusionOptions`), so a worker holds one frame and one fused
pyramid at a time, whatever the number of frames. Each task writes the fused image and the
depth map together (all or none), then a JSON record; the record's presence (status
``"done"``) with its two output files is what marks a stack as finished, so a batch stopped
by a killed worker, a cancelled job or a power cut is resumed by running it again: finished
stacks are skipped and only the missing ones are fused.

A source path that does not exist is refused before any cluster starts (nothing is written).
A stack that cannot be fused (a damaged file, an empty folder, frames of different shapes) gets
a record with ``status = "failed"`` and the reason; the rest of the batch goes on, and the
report lists every failure with its reason (never a silent skip). A worker that dies while
fusing (out of memory, killed) is replaced by dask and the stack is retried on another worker.

Layout of ``out_dir`` for a stack named ``NAME``::

    NAME.tif         fused image, the frames' dtype and shape (or NAME.png)
    NAME.depth.tif   float32 depth map (frame units, or um with z_step_um; NaN where unsure)
    NAME.json        the record (written last)
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nanoro_optics._text import plural
from nanoro_optics._validation import check_choice, check_int, check_positive
from nanoro_optics.fusion.options import FusionOptions

from . import require_distributed

__all__ = ["RECORD_FORMAT", "BatchReport", "StackRecord", "fuse_many"]

#: ``"format"`` field of every record file
RECORD_FORMAT = "nanoro_optics.fuse_many/1"
#: suffixes the fused image may be written with
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
#: characters a stack name must not hold (it becomes a file name)
_BAD_NAME_CHARS = set('/\\:*?"<>|\0')

StackSpec = Any  # a path, a glob, a list of paths, or a callable returning frames


@dataclass(frozen=True)
class StackRecord:
    """What happened to one stack of a batch.

    Attributes
    ----------
    name : str
        The stack's name (the key of ``stacks``); its outputs are named after it.
    status : str
        ``"done"`` (fused by this run), ``"skipped"`` (finished by an earlier run, outputs
        present) or ``"failed"`` (see ``error``).
    image_path, depth_path, record_path : str
        The output files (image and depth exist only when not failed).
    n_frames : int
        Frames fused (0 when failed).
    shape : tuple of int
        Shape of the fused image.
    dtype : str
        dtype of the fused image.
    depth_unit : str
        ``"frame"`` or ``"um"``.
    seconds : float
        Wall time of the task on its worker (reading, fusing and writing).
    cpu_seconds : float
        CPU time of the worker process during the task (below ``seconds`` when the task
        waited for the disk or for a CPU shared with other processes).
    worker : str
        ``host:pid`` of the process that fused the stack.
    error : str
        Why the stack failed (``"ExceptionType: message"``), empty otherwise.
    sources : tuple of str
        The files the frames came from (empty for a callable source or a failure before
        listing).
    """

    name: str
    status: str
    image_path: str
    depth_path: str
    record_path: str
    n_frames: int = 0
    shape: tuple[int, ...] = ()
    dtype: str = ""
    depth_unit: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    worker: str = ""
    error: str = ""
    sources: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict, with ``format`` and the time written (UTC)."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["sources"] = list(self.sources)
        out["format"] = RECORD_FORMAT
        out["written_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StackRecord:
        """Rebuild a record from :meth:`to_json` output.

        Raises
        ------
        ValueError
            If ``data`` is not a record of this format.
        """
        if not isinstance(data, Mapping) or data.get("format") != RECORD_FORMAT:
            raise ValueError(f"not a {RECORD_FORMAT} record")
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["shape"] = tuple(int(v) for v in kwargs.get("shape", ()))
        kwargs["sources"] = tuple(str(v) for v in kwargs.get("sources", ()))
        return cls(**kwargs)


@dataclass(frozen=True)
class BatchReport:
    """The outcome of :func:`fuse_many`: one :class:`StackRecord` per stack, in input order.

    Attributes
    ----------
    records : tuple of StackRecord
    out_dir : str
    seconds : float
        Wall time of the whole batch, cluster start included.
    n_workers : int
        Workers of the cluster when the batch was submitted.
    dashboard_link : str
        The dask dashboard's address ("" when unknown).
    """

    records: tuple[StackRecord, ...]
    out_dir: str
    seconds: float
    n_workers: int
    dashboard_link: str = ""

    def with_status(self, status: str) -> tuple[StackRecord, ...]:
        """Return the records whose status is ``status``."""
        return tuple(r for r in self.records if r.status == status)

    @property
    def done(self) -> tuple[StackRecord, ...]:
        """Stacks fused by this run."""
        return self.with_status("done")

    @property
    def skipped(self) -> tuple[StackRecord, ...]:
        """Stacks finished by an earlier run and left alone."""
        return self.with_status("skipped")

    @property
    def failed(self) -> tuple[StackRecord, ...]:
        """Stacks that could not be fused (each with its reason in ``error``)."""
        return self.with_status("failed")

    @property
    def ok(self) -> bool:
        """True when no stack failed."""
        return not self.failed

    def summary(self) -> str:
        """Return a few lines for a terminal: counts, then every failure with its reason."""
        lines = [
            f"{plural(len(self.records), 'stack')}: {len(self.done)} fused, "
            f"{len(self.skipped)} already done, {len(self.failed)} failed "
            f"({self.seconds:.1f} s, {plural(self.n_workers, 'worker')})"
        ]
        for rec in self.failed:
            lines.append(f"  FAILED {rec.name}: {rec.error}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the task


@dataclass(frozen=True)
class _Job:
    name: str
    source: StackSpec
    out_dir: str
    image_suffix: str
    options: FusionOptions
    numba_threads: int | None


def _paths(out_dir: str, name: str, image_suffix: str) -> tuple[Path, Path, Path]:
    base = Path(out_dir)
    return base / f"{name}{image_suffix}", base / f"{name}.depth.tif", base / f"{name}.json"


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    from nanoro_optics.io import write_json

    write_json(path, dict(data))


def _limit_numba_threads(n: int | None) -> None:
    """Give each task ``n`` numba threads: the parallelism of a batch is across stacks."""
    if n is None:
        return
    import numba

    from .._numba import fusion_threads

    numba.set_num_threads(fusion_threads(limit=n))


def _fuse_one(job: _Job) -> StackRecord:
    """Fuse one stack and write its outputs, together (runs on a worker)."""
    from nanoro_optics.fusion import fuse_stack
    from nanoro_optics.pipeline import FusionOutputs, fuse_to_files, write_outputs

    t0 = time.perf_counter()
    c0 = time.process_time()
    _limit_numba_threads(job.numba_threads)
    image_path, depth_path, record_path = _paths(job.out_dir, job.name, job.image_suffix)
    common: dict[str, Any] = {
        "name": job.name,
        "image_path": str(image_path),
        "depth_path": str(depth_path),
        "record_path": str(record_path),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "options": job.options.to_json(),
    }
    outputs = FusionOutputs(image_path, depth_path)
    sources: tuple[str, ...] = ()
    try:
        if callable(job.source):  # frames from the caller's function: arrays in
            res = fuse_stack(job.source(), job.options)
            write_outputs(
                outputs,
                res.image,
                depth=res.depth,
                depth_unit=res.depth_unit,
                options=job.options,
                overwrite=True,
            )
            n_frames, shape, dtype, unit = (
                res.n_frames,
                res.image.shape,
                res.image.dtype,
                res.depth_unit,
            )
        else:  # the file pipeline, as the fuse command
            from nanoro_optics.io import list_stack_files

            sources = tuple(str(f) for f in list_stack_files(job.source))
            done = fuse_to_files(job.source, outputs, job.options, overwrite=True)
            n_frames, shape, dtype, unit = done.n_frames, done.shape, done.dtype, done.depth_unit
    except (ValueError, TypeError, OSError) as exc:
        # bad input: the record says why, the batch goes on
        rec = StackRecord(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - t0,
            cpu_seconds=time.process_time() - c0,
            sources=sources,
            **common,
        )
        _write_json_atomic(record_path, rec.to_json())
        return rec
    rec = StackRecord(
        status="done",
        n_frames=n_frames,
        shape=tuple(int(n) for n in shape),
        dtype=str(dtype),
        depth_unit=unit,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
        sources=sources,
        **common,
    )
    _write_json_atomic(record_path, rec.to_json())  # last: a record means a finished stack
    return rec


def _finished(job: _Job) -> StackRecord | None:
    """Return the record of an earlier run that fused this stack with the same options, if any."""
    image_path, depth_path, record_path = _paths(job.out_dir, job.name, job.image_suffix)
    try:
        with open(record_path, encoding="utf-8") as fh:
            rec = StackRecord.from_json(json.load(fh))
    except (OSError, ValueError, TypeError):
        return None
    if rec.status != "done" or rec.options != job.options.to_json():
        return None
    if not (image_path.is_file() and depth_path.is_file()):
        return None
    return rec


# --------------------------------------------------------------------------------------------
# the cluster


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"stack names must be str, got {type(name).__name__} {name!r}")
    bad = sorted(_BAD_NAME_CHARS.intersection(name))
    if not name or name.startswith(".") or bad or name != name.strip():
        raise ValueError(
            f"stack name {name!r} cannot name a file: it must be non-empty, must not start with "
            f"'.' or space, and must not hold any of {''.join(sorted(_BAD_NAME_CHARS))!r}"
        )
    return name


def _expand_stack_globs(stacks: Iterable[Any]) -> list[str | os.PathLike[str]]:
    """Replace each glob pattern of a list of stacks by the folders and files it matches.

    A path that exists is kept as it is (even if it holds ``*``); a pattern's matches are taken
    in natural order, each one stack, as a shell would expand an unquoted pattern.
    """
    from nanoro_optics.io import IMAGE_SUFFIXES as FRAME_SUFFIXES
    from nanoro_optics.io import is_glob, natural_key

    out: list[str | os.PathLike[str]] = []
    for src in stacks:
        if not isinstance(src, (str, os.PathLike)):
            raise TypeError(
                "a list of stacks must hold paths (give a mapping {name: source} for other "
                f"sources), got {type(src).__name__} {src!r}"
            )
        text = os.fspath(src)
        if os.path.exists(os.path.expanduser(text)) or not is_glob(text):
            out.append(src)
            continue
        matches = [
            Path(m)
            for m in glob.glob(os.path.expanduser(text))
            if os.path.isdir(m) or Path(m).suffix.lower() in FRAME_SUFFIXES
        ]
        if not matches:
            raise FileNotFoundError(f"the pattern {text!r} matches no stack (folder or image file)")
        out.extend(sorted(matches, key=lambda p: natural_key(str(p))))
    return out


def _absolute(source: StackSpec) -> StackSpec:
    """Make a path source (or each path of a list) absolute: workers may run elsewhere."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.abspath(os.path.expanduser(os.fspath(source)))
    if isinstance(source, (list, tuple)) and all(
        isinstance(item, (str, os.PathLike)) for item in source
    ):
        return [_absolute(item) for item in source]
    return source


def _check_sources_exist(named: Mapping[str, StackSpec]) -> None:
    """Refuse a path source that does not exist, before any cluster starts or record is written.

    Only existence is checked here (it is a typo, not a stack that failed); an empty folder or
    a damaged file fails its stack on the worker, with a record saying why.
    """
    from nanoro_optics.io import list_stack_files

    for name, src in named.items():
        if callable(src):
            continue
        try:
            list_stack_files(src)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"stack {name!r}: {exc}; nothing was fused") from None
        except ValueError:
            pass  # an empty folder or a pattern matching no file: its record says so


def _named_stacks(stacks: Any) -> dict[str, StackSpec]:
    if isinstance(stacks, Mapping):
        items = [(_check_name(k), v) for k, v in stacks.items()]
    elif isinstance(stacks, (str, os.PathLike)) or not isinstance(stacks, Iterable):
        raise TypeError(
            "stacks must be a mapping {name: source} or a list of stack paths, got "
            f"{type(stacks).__name__} {stacks!r}"
        )
    else:
        items = []
        for src in _expand_stack_globs(stacks):
            p = Path(src)
            items.append((_check_name(p.stem if p.is_file() else p.name), src))
    out: dict[str, StackSpec] = {}
    for name, src in items:
        if name in out:
            raise ValueError(f"two stacks are named {name!r}; give a mapping with unique names")
        if not (callable(src) or isinstance(src, (str, os.PathLike, Sequence))):
            raise TypeError(
                f"stack {name!r}: source must be a path, a glob, a list of paths or a callable "
                f"returning frames, got {type(src).__name__}"
            )
        out[name] = src
    if not out:
        raise ValueError("stacks is empty: nothing to fuse")
    return out


#: dtypes the fuser has kernels for (any other is fused as float32)
_WORK_DTYPES = ("uint8", "uint16", "float32")


def _warm_kernels(dtypes: Iterable[str] = _WORK_DTYPES, *, align: bool = False) -> None:
    """Compile (or load from numba's cache) the fuser's kernels once, before workers start.

    Kernels are cached on disk (``cache=True``), so worker processes load them instead of
    each compiling its own copy at the same time. Only the kernels for ``dtypes`` (names of
    :data:`_WORK_DTYPES`) are compiled, with the alignment kernels when ``align``: a cold
    cache compiles for about half a minute per dtype.
    """
    import numpy as np

    from nanoro_optics.fusion import fuse_stack

    for name in dtypes:
        frames = np.zeros((2, 64, 64, 3), dtype=np.dtype(name))
        frames[:, 20:40:3, 16:48:5] = 1  # texture for the aligner to register
        fuse_stack(frames, levels=2, align=align)


def _frame_dtypes(jobs: Sequence[_Job], *, most: int = 4) -> tuple[str, ...]:
    """Return the work dtypes of the first frame of the first ``most`` stacks, from files.

    All of :data:`_WORK_DTYPES` when a stack's frames come from a callable or cannot be read
    here (its task will report why), so that workers never compile at the same time.
    """
    from nanoro_optics.io import iter_stack

    found: set[str] = set()
    for job in jobs[:most]:
        if callable(job.source):
            return _WORK_DTYPES
        frames = iter_stack(job.source)
        try:
            first = next(frames)
        except (ValueError, TypeError, OSError, StopIteration):
            return _WORK_DTYPES
        finally:
            getattr(frames, "close", lambda: None)()  # close the file now, not when collected
        name = first.dtype.name
        found.add(name if name in _WORK_DTYPES else "float32")
    if len(jobs) > most:  # the rest are not looked at: they may hold any dtype
        return _WORK_DTYPES
    return tuple(d for d in _WORK_DTYPES if d in found)


def connect(
    client: Any,
    *,
    n_workers: int | None = None,
    timeout_s: float = 10.0,
    warm_dtypes: Iterable[str] = _WORK_DTYPES,
    warm_align: bool = False,
) -> Any:
    """Return ``(client, owned)`` for ``client`` (None, an address or a Client).

    ``None`` starts a :class:`distributed.LocalCluster` of ``n_workers`` single-threaded worker
    processes (default: one per core), after compiling the fuser's kernels for
    ``warm_dtypes`` (and alignment's with ``warm_align``) once here; an address
    (``"tcp://host:8786"``) connects to a running scheduler and raises
    :class:`ConnectionError` if it cannot be reached within ``timeout_s``. ``owned`` says
    whether the caller must close the client (and its cluster).
    """
    distributed = require_distributed()
    if client is None:
        n = (os.cpu_count() or 1) if n_workers is None else check_int(n_workers, "n_workers", 1)
        _warm_kernels(warm_dtypes, align=warm_align)
        cluster = distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        return distributed.Client(cluster), True
    if isinstance(client, (str, os.PathLike)):
        address = os.fspath(client)
        try:
            return distributed.Client(address, timeout=f"{timeout_s}s"), True
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"cannot reach the dask scheduler at {address!r} within {timeout_s:g} s "
                f"({type(exc).__name__}: {exc}); nothing was submitted"
            ) from exc
    _check_client(client)
    if n_workers is not None:
        raise ValueError("n_workers applies only to a LocalCluster started by client=None")
    return client, False


def _check_client(client: Any) -> None:
    """Refuse a ``client`` that is not None, an address or a :class:`distributed.Client`."""
    distributed = require_distributed()
    if client is None or isinstance(client, (str, os.PathLike, distributed.Client)):
        return
    raise TypeError(
        "client must be None (start a LocalCluster), a scheduler address or a "
        f"distributed.Client, got {type(client).__name__} {client!r}"
    )


def _close(client: Any) -> None:
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _failed_from_exception(job: _Job, exc: BaseException, retries: int) -> StackRecord:
    image_path, depth_path, record_path = _paths(job.out_dir, job.name, job.image_suffix)
    reason = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "KilledWorker":
        reason = (
            "the worker fusing it died every time it tried (out of memory or killed; dask "
            f"gives up after distributed.scheduler.allowed-failures): {reason}"
        )
    elif type(exc).__name__ != "CancelledError":
        reason = f"{reason} (after {retries} retries)"
    rec = StackRecord(
        name=job.name,
        status="failed",
        image_path=str(image_path),
        depth_path=str(depth_path),
        record_path=str(record_path),
        error=reason,
        options=job.options.to_json(),
    )
    try:
        _write_json_atomic(record_path, rec.to_json())
    except OSError:
        pass  # the report still carries the failure
    return rec


def fuse_many(
    stacks: Mapping[str, StackSpec] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: FusionOptions | None = None,
    *,
    client: Any = None,
    n_workers: int | None = None,
    image_suffix: str = ".tif",
    overwrite: bool = False,
    retries: int = 2,
    numba_threads: int | None = 1,
    timeout_s: float = 10.0,
    progress: Callable[[StackRecord, int, int], None] | None = None,
    on_start: Callable[[str, int, int], None] | None = None,
    **overrides: Any,
) -> BatchReport:
    """Fuse many focus stacks on a dask cluster, one task per stack, resumably.

    Parameters
    ----------
    stacks : mapping or sequence
        ``{name: source}``, where a source is anything :func:`~nanoro_optics.io.iter_stack`
        reads (a folder, a multi-page TIFF, a glob, a list of files), or a picklable callable
        returning an iterable of frames (called on the worker). A plain list of folders or
        files names each stack after its folder (or file stem); a glob pattern in such a
        list stands for every folder and image file it matches, each one stack. A path
        that does not exist is refused before anything runs.
    out_dir : path
        Output folder (created if missing); see the module docstring for its layout.
    options : FusionOptions, optional
        The fusion's settings, the same for every stack (recorded in each stack's record; a
        stack finished with other options is fused again). ``z_um`` is refused (each stack
        has its own frames); ``z_step_um`` puts frame ``k`` at ``k * z_step_um``.
    client : None, str or distributed.Client, optional
        ``None`` starts a LocalCluster of single-threaded worker processes (``n_workers``,
        default one per core) and closes it at the end; a scheduler address
        (``"tcp://host:8786"``) connects to a running cluster whose workers see ``out_dir``
        and the sources at the same paths; a :class:`distributed.Client` is used as is.
    n_workers : int, optional
        Workers of the LocalCluster started when ``client`` is None.
    image_suffix : {".tif", ".tiff", ".png"}, optional
        Format of the fused image (TIFF keeps every dtype; PNG 8/16-bit integers only).
    overwrite : bool, optional
        Fuse every stack again, even those finished by an earlier run (default: skip them).
    retries : int, optional
        Times dask resubmits a task whose worker died or which raised an unexpected error
        (bad input is not retried: it fails the stack at once with its reason).
    numba_threads : int or None, optional
        numba threads per task (default 1: a batch is parallel across stacks); None leaves
        numba's setting alone.
    timeout_s : float, optional
        How long to try to reach a scheduler given by address.
    progress : callable, optional
        Called as ``progress(record, n_finished, n_total)`` as each stack finishes (stacks
        finished by an earlier run first).
    on_start : callable, optional
        Called as ``on_start(dashboard_link, n_workers, n_to_fuse)`` once the cluster is
        reached, before any task is submitted (not called when every stack is finished).
    **overrides
        Fields of ``options`` to set (``align=True``, ``z_step_um=2.0``, ...), checked here
        by :meth:`~nanoro_optics.fusion.FusionOptions.replace`, which names an unknown one.

    Returns
    -------
    BatchReport
        One record per stack (in the order of ``stacks``): done, skipped or failed with the
        reason.

    Raises
    ------
    ConnectionError
        If a scheduler address cannot be reached (before anything is submitted).
    ValueError, TypeError
        Bad arguments (stack names that cannot name a file, unknown fusion options, ...).
    ImportError
        If dask.distributed is not installed (``pip install "nanoro_optics[dask]"``).

    Notes
    -----
    A stack is finished when ``NAME.json`` says ``"done"`` with the same options and its
    image and depth map exist. Every file is written under a temporary name and moved into
    place with :func:`os.replace`, the record last, so an interrupted task leaves either
    nothing or a complete stack. A worker that dies mid-task is replaced by dask and the
    task retried (dask gives up on a task that killed
    ``distributed.scheduler.allowed-failures`` workers: it is then reported as failed).

    Examples
    --------
    >>> from nanoro_optics.distributed import fuse_many
    >>> report = fuse_many({"a": "stacks/a", "b": "stacks/b.tif"}, "out")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    2 stacks: 2 fused, 0 already done, 0 failed (6.1 s, 2 workers)
    """
    t_start = time.perf_counter()
    require_distributed()
    named = _named_stacks(stacks)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__} {out_dir!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__} {overwrite!r}")
    suffix = check_choice(image_suffix, "image_suffix", IMAGE_SUFFIXES)
    retries = check_int(retries, "retries", 0, 100)
    if numba_threads is not None:
        numba_threads = check_int(numba_threads, "numba_threads", 1)
    timeout_s = check_positive(timeout_s, "timeout_s")
    for cb_name, cb in (("progress", progress), ("on_start", on_start)):
        if cb is not None and not callable(cb):
            raise TypeError(f"{cb_name} must be callable, got {type(cb).__name__}")
    if n_workers is not None:
        n_workers = check_int(n_workers, "n_workers", 1)
    opts = _fusion_options(options, overrides)
    _check_client(client)
    named = {name: _absolute(src) for name, src in named.items()}
    _check_sources_exist(named)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)

    jobs = [_Job(name, src, str(out), suffix, opts, numba_threads) for name, src in named.items()]
    records: dict[str, StackRecord] = {}
    todo = []
    for job in jobs:
        prev = None if overwrite else _finished(job)
        if prev is None:
            todo.append(job)
        else:
            records[job.name] = StackRecord(**{**asdict(prev), "status": "skipped"})
    n_total = len(jobs)
    if progress is not None:
        for k, rec in enumerate(records.values(), start=1):
            progress(rec, k, n_total)

    n_workers_seen = 0
    link = ""
    if todo:
        warm = _frame_dtypes(todo) if client is None else _WORK_DTYPES
        dask_client, owned = connect(
            client,
            n_workers=n_workers,
            timeout_s=timeout_s,
            warm_dtypes=warm,
            warm_align=opts.align,
        )
        try:
            n_workers_seen = len(dask_client.scheduler_info().get("workers", {}))
            link = str(getattr(dask_client, "dashboard_link", "") or "")
            if on_start is not None:
                on_start(link, n_workers_seen, len(todo))
            _run(dask_client, todo, records, retries, progress, n_total)
        finally:
            if owned:
                _close(dask_client)
    ordered = tuple(records[job.name] for job in jobs)
    return BatchReport(
        records=ordered,
        out_dir=str(out),
        seconds=time.perf_counter() - t_start,
        n_workers=n_workers_seen,
        dashboard_link=link,
    )


def _fusion_options(options: FusionOptions | None, overrides: Mapping[str, Any]) -> FusionOptions:
    """Build the batch's options here, before any task runs (the message names the field)."""
    from nanoro_optics.fusion.options import merge

    opts = merge(options, overrides)
    if opts.z_um is not None:
        raise ValueError(
            "fuse_many does not take z_um: the options are shared by every stack (give z_step_um)"
        )
    return opts


def _run(
    client: Any,
    todo: list[_Job],
    records: dict[str, StackRecord],
    retries: int,
    progress: Callable[[StackRecord, int, int], None] | None,
    n_total: int,
) -> None:
    distributed = require_distributed()
    token = secrets.token_hex(4)
    futures = {}
    for job in todo:
        fut = client.submit(
            _fuse_one, job, key=f"fuse-{job.name}-{token}", retries=retries, pure=False
        )
        futures[fut] = job
    try:
        for fut in distributed.as_completed(list(futures)):
            job = futures[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # a dead worker, a cancelled task, a bug
                rec = _failed_from_exception(job, exc, retries)
            records[job.name] = rec
            if progress is not None:
                progress(rec, len(records), n_total)
    except BaseException:
        client.cancel(list(futures))
        raise
