"""Stack sources: folders, files, glob patterns and lists of them, in natural order."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: File suffixes taken from a folder (case-insensitive). Hidden files (``.name``) are skipped.
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_TIFF_SUFFIXES = (".tif", ".tiff")
_PNG_SUFFIXES = (".png",)
_JPEG_SUFFIXES = (".jpg", ".jpeg")
#: File suffixes :func:`write_image` can write (case-insensitive).
WRITE_SUFFIXES: tuple[str, ...] = _TIFF_SUFFIXES + _PNG_SUFFIXES + _JPEG_SUFFIXES

PathLike = str | os.PathLike[str]
StackSource = PathLike | Sequence[PathLike]


def natural_key(text: str) -> tuple[Any, ...]:
    """Return the sort key of the natural order io lists files in (``f2`` before ``f10``).

    Runs of digits compare as numbers, the rest case-folded.

    Parameters
    ----------
    text : str
        A file name or path.

    Returns
    -------
    tuple
        Alternating case-folded text and integers.

    Examples
    --------
    >>> from nanoro_optics.io import natural_key
    >>> sorted(["f10.png", "F2.png", "f1.png"], key=natural_key)
    ['f1.png', 'F2.png', 'f10.png']
    """
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))


def is_glob(text: str) -> bool:
    """Return whether ``text`` is a glob pattern (holds ``*``, ``?`` or ``[``), io's rule.

    Parameters
    ----------
    text : str
        A path or pattern.

    Returns
    -------
    bool

    Examples
    --------
    >>> from nanoro_optics.io import is_glob
    >>> is_glob("stacks/*/"), is_glob("stacks/a")
    (True, False)
    """
    return any(ch in text for ch in "*?[")


def _expand(item: PathLike) -> list[Path]:
    if not isinstance(item, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path, a glob pattern or a list of them, got "
            f"{type(item).__name__} {item!r}"
        )
    text = os.fspath(item)
    path = Path(text).expanduser()
    if path.is_dir():
        found = [
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not found:
            raise ValueError(
                f"empty stack: folder {path} holds no image files "
                f"(looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        return sorted(found, key=lambda p: natural_key(p.name))
    if path.is_file():
        return [path]
    if is_glob(text):
        matches = [Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True)]
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise ValueError(f"empty stack: the pattern {text!r} matches no file")
        return sorted(matches, key=lambda p: natural_key(str(p)))
    raise FileNotFoundError(f"no such file or folder: {text}")


def list_stack_files(source: StackSource) -> list[Path]:
    """Return the files of a stack source, in stack order.

    Parameters
    ----------
    source : path, glob pattern, or sequence of them
        A folder (its image files, see :data:`IMAGE_SUFFIXES`, hidden files skipped), a single
        file, a glob pattern (``"stack/*.png"``, ``**`` recurses), or a list of any of these.
        Folders and patterns are expanded in natural order (``frame2`` before ``frame10``,
        case-insensitive); a list keeps its own order.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    FileNotFoundError
        If a path that is not a pattern does not exist.
    ValueError
        If the source yields no file (an empty folder, list, or a pattern matching nothing).
    TypeError
        If ``source`` is not a path or a sequence of paths.

    Examples
    --------
    >>> sorted(["f10.png", "f2.png", "f1.png"], key=natural_key)
    ['f1.png', 'f2.png', 'f10.png']
    """
    if isinstance(source, (str, os.PathLike)):
        items: list[PathLike] = [source]
    elif isinstance(source, Iterable):
        items = list(source)
        if not items:
            raise ValueError("empty stack: source is an empty list")
    else:
        raise TypeError(
            f"source must be a path, a glob pattern or a list of them, got "
            f"{type(source).__name__} {source!r}"
        )
    files: list[Path] = []
    for item in items:
        files.extend(_expand(item))
    return files


def is_stack_source(obj: Any) -> bool:
    """Say whether ``obj`` names files: a path, a glob pattern, or a non-empty list of them.

    Examples
    --------
    >>> import numpy as np
    >>> is_stack_source("stack/*.png"), is_stack_source(["a.tif", Path("b.tif")])
    (True, True)
    >>> is_stack_source(np.zeros((2, 4, 4))), is_stack_source([np.zeros((4, 4))])
    (False, False)
    """
    if isinstance(obj, (str, os.PathLike)):
        return True
    if isinstance(obj, (list, tuple)) and obj:
        return all(isinstance(item, (str, os.PathLike)) for item in obj)
    return False
