"""Atomic writes: a temporary file beside the destination, moved into place when complete."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any


def atomic_write(path: Path, overwrite: bool, write: Any) -> None:
    """Run ``write(fh)`` into a temporary file beside ``path``, then move it into place."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists and overwrite=False")
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # "x" mode: never reuses an existing name; the new file honours the umask
    fh = open(tmp, "xb")
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: no clobbering race
            except FileExistsError:
                raise FileExistsError(f"{path} exists and overwrite=False") from None
            except OSError:  # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{path} exists and overwrite=False") from None
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
