"""Atomic output: the one place where files and folders are moved into place.

Every writer of the package builds its output under a temporary name beside the destination
(same folder, so the final move is a rename on one file system), flushes it to disk, and only
then moves it over the destination. :class:`OutputSet` does this for several outputs of one
run at once, so that they appear together or not at all.

What is atomic and what is not
------------------------------
- One file: readers see the old file or the complete new one (a rename within a folder is atomic
  on POSIX and Windows); after a power loss, the new content is on disk before its name is
  (the file is fsynced before the rename, the folder after it, where the system allows).
- One folder (an OME-Zarr store): a folder cannot replace another in one step, so an existing
  store is first moved aside, the new one moved in, then the old one deleted; between the two
  moves the destination is briefly absent.
- Several outputs: file systems offer no rename of several names in one step. An
  :class:`OutputSet` makes the window as small as it can: every output is complete and fsynced
  before the first rename; the renames then follow one another with nothing in between but
  hard links that keep each replaced file, so that an error in a rename (or SIGINT/SIGTERM,
  deferred while the renames run in the main thread) rolls the set back to the old files. Only
  a kill that cannot be caught (SIGKILL, power loss) between two renames can leave part of a
  set new, and then every file is still either its complete old or complete new self, never
  partial; leftover temporaries are hidden (``.name.<random>.tmp``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["OutputSet", "atomic_write"]


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst``: the package's one call of :func:`os.replace`."""
    os.replace(src, dst)


def _fsync_path(path: Path) -> None:
    """Flush a file, or a folder and everything under it, to disk (where the system allows)."""
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in files:
                _fsync_path(Path(root) / name)
            for name in dirs:
                _fsync_dir(Path(root) / name)
        _fsync_dir(path)
        return
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the renames into it); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened this way
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a file or folder if it is there."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _sibling(path: Path, tag: str) -> Path:
    """Return a hidden, random name beside ``path`` (unique: checked when it is created)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.{tag}"


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (main thread only, else a no-op).

    Python runs signal handlers in the main thread; while the block runs there, a signal is
    only noted, and delivered (KeyboardInterrupt, or the default SIGTERM) once it ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    old: dict[int, Any] = {}
    sig: int
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is None:  # a handler set outside Python: left alone
            continue
        try:
            old[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        except (ValueError, OSError):  # not settable here
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(received):
            signal.raise_signal(sig)  # the handler restored above acts on it now


@dataclass
class _Pending:
    dest: Path
    tmp: Path
    overwrite: bool
    directory: bool
    synced: bool = False


class OutputSet:
    """Outputs of one run, written under temporary names and committed together.

    Use it as a context manager: every output written or reserved inside the block goes to a
    hidden temporary name beside its destination; when the block ends without an error they
    are all moved into place (:meth:`commit`); on any exception, KeyboardInterrupt included,
    every temporary is removed and existing files are left untouched (:meth:`discard`).
    See the module notes for what "together" can and cannot promise across several files.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with OutputSet() as outputs:
    ...         _ = outputs.write(f"{tmp}/a.txt", lambda fh: fh.write(b"a"))
    ...         _ = outputs.write(f"{tmp}/b.txt", lambda fh: fh.write(b"b"))
    ...         print(sorted(p.name for p in pathlib.Path(tmp).iterdir()
    ...                      if not p.name.startswith(".")))
    ...     print(sorted(p.name for p in pathlib.Path(tmp).iterdir()))
    []
    ['a.txt', 'b.txt']
    """

    def __init__(self) -> None:
        self._pending: list[_Pending] = []
        self._closed = False

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    @property
    def paths(self) -> list[Path]:
        """The destinations, in the order they were added (and will be committed)."""
        return [p.dest for p in self._pending]

    def reserve(
        self, path: str | os.PathLike[str], *, overwrite: bool = True, directory: bool = False
    ) -> Path:
        """Create a temporary file (or empty folder) for ``path`` and return its name.

        The caller fills it; :meth:`commit` flushes it to disk and moves it over ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            The destination; its folder must exist.
        overwrite : bool, optional
            Replace an existing ``path`` at commit (default). With False an existing ``path``
            raises :class:`FileExistsError`, now and again at commit.
        directory : bool, optional
            The output is a folder (such as an OME-Zarr store), not a file.

        Returns
        -------
        pathlib.Path
            The temporary name, in the destination's folder.

        Raises
        ------
        FileNotFoundError
            If the destination folder does not exist.
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        ValueError
            If ``path`` is a folder and the output a file (or the reverse), or the same
            destination is already part of this set.
        """
        if self._closed:
            raise RuntimeError("this OutputSet was already committed or discarded")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}"
            )
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
        if not isinstance(directory, bool):
            raise TypeError(f"directory must be a bool, got {directory!r}")
        dest = Path(path)
        folder = dest.parent if str(dest.parent) else Path(".")
        if not folder.is_dir():
            raise FileNotFoundError(f"cannot write {dest}: folder {folder} does not exist")
        if dest.is_dir() and not directory:
            raise ValueError(f"cannot write {dest}: it is a folder")
        if directory and dest.exists() and not dest.is_dir():
            raise ValueError(f"cannot write folder {dest}: a file of that name exists")
        if not overwrite and (dest.exists() or dest.is_symlink()):
            raise FileExistsError(f"{dest} exists and overwrite=False")
        key = os.path.abspath(dest)
        if any(os.path.abspath(p.dest) == key for p in self._pending):
            raise ValueError(f"{dest} is already an output of this set")
        tmp = _sibling(dest, "tmp")
        if directory:
            tmp.mkdir()  # fails rather than reuse an existing name
        else:
            with open(tmp, "xb"):  # "x": never an existing name; the file honours the umask
                pass
        self._pending.append(_Pending(dest, tmp, overwrite, directory))
        return tmp

    def write(
        self,
        path: str | os.PathLike[str],
        write: Callable[[IO[bytes]], Any],
        *,
        overwrite: bool = True,
    ) -> Path:
        """Run ``write(fh)`` on a temporary file for ``path`` and flush it to disk.

        Parameters
        ----------
        path : str or os.PathLike
            The destination (see :meth:`reserve`).
        write : callable
            Called with the temporary file open for binary writing.
        overwrite : bool, optional
            See :meth:`reserve`.

        Returns
        -------
        pathlib.Path
            ``path``, which appears at :meth:`commit`.
        """
        tmp = self.reserve(path, overwrite=overwrite)
        entry = self._pending[-1]
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        entry.synced = True
        return entry.dest

    def discard(self) -> None:
        """Remove every temporary of the set; the destinations are not touched."""
        self._closed = True
        for entry in self._pending:
            _remove(entry.tmp)

    def commit(self) -> list[Path]:
        """Move every output into place, all or none (see the module notes).

        Returns
        -------
        list of pathlib.Path
            The destinations written.

        Raises
        ------
        FileExistsError
            If a destination with ``overwrite=False`` appeared meanwhile (nothing is changed).
        OSError
            If a rename fails; the outputs already moved are rolled back to the old files.
        """
        if self._closed:
            raise RuntimeError("this OutputSet was already committed or discarded")
        try:
            for entry in self._pending:  # every output complete on disk before any rename
                if not entry.synced:
                    _fsync_path(entry.tmp)
                    entry.synced = True
            with _signals_deferred():
                backups = self._swap_in()
        except BaseException:
            self.discard()
            raise
        self._closed = True
        for backup in backups:
            _remove(backup)
        for folder in dict.fromkeys(p.dest.parent for p in self._pending):
            _fsync_dir(folder if str(folder) else Path("."))
        return self.paths

    def _swap_in(self) -> list[Path]:
        """Rename every temporary over its destination; undo them all on any error."""
        # (entry, its old output kept aside, whether there was an old output)
        done: list[tuple[_Pending, Path | None, bool]] = []
        aside: Path | None = None  # the current entry's old output, before its rename
        moved_aside = False  # ... taken away from the destination (a folder), not linked
        entry: _Pending | None = None
        try:
            for entry in self._pending:
                aside, moved_aside = None, False
                dest = entry.dest
                existed = dest.exists() or dest.is_symlink()
                if existed:
                    if not entry.overwrite:
                        raise FileExistsError(f"{dest} exists and overwrite=False")
                    aside = _sibling(dest, "old")
                    if dest.is_dir() and not dest.is_symlink():
                        _move(dest, aside)  # a folder cannot be replaced: the old one aside
                        moved_aside = True
                    else:
                        try:
                            os.link(dest, aside, follow_symlinks=False)  # the old file stays
                        except OSError:  # no hard links here: this file cannot be rolled back
                            aside = None
                    _move(entry.tmp, dest)
                elif entry.overwrite or entry.directory:
                    _move(entry.tmp, dest)
                else:
                    try:
                        os.link(entry.tmp, dest)  # fails if dest appeared: no clobbering
                    except FileExistsError:
                        raise FileExistsError(f"{dest} exists and overwrite=False") from None
                    except OSError:  # no hard links on this file system
                        _move(entry.tmp, dest)
                done.append((entry, aside, existed))
                aside = None
                _remove(entry.tmp)  # after a hard link, the temporary name is left
        except BaseException:
            if aside is not None and entry is not None:  # failed before its own rename
                if moved_aside:
                    _move(aside, entry.dest)
                else:
                    _remove(aside)
            for old_entry, old, existed in reversed(done):
                if not existed:
                    _remove(old_entry.dest)
                elif old is not None:  # else no hard links: the new, complete file stays
                    if old.is_dir():
                        _remove(old_entry.dest)
                    _move(old, old_entry.dest)
            raise
        return [old for _, old, _ in done if old is not None]


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], Any],
    *,
    overwrite: bool = True,
    outputs: OutputSet | None = None,
) -> Path:
    """Write one file atomically: ``write(fh)`` into a temporary file, then move it into place.

    Parameters
    ----------
    path : str or os.PathLike
        The destination; its folder must exist.
    write : callable
        Called with the temporary file open for binary writing.
    overwrite : bool, optional
        Replace an existing file (default); with False an existing file raises
        :class:`FileExistsError` and is left untouched.
    outputs : OutputSet, optional
        Add the file to this set (it appears when the set commits) instead of committing now.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if outputs is not None:
        return outputs.write(path, write, overwrite=overwrite)
    with OutputSet() as single:
        single.write(path, write, overwrite=overwrite)
    return Path(path)
