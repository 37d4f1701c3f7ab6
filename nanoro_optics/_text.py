"""Small helpers for user-facing text."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, word: str, words: str | None = None) -> str:
    """Return ``"1 frame"``, ``"2 frames"``: the count and the word in the right number.

    Parameters
    ----------
    n : int
        The count.
    word : str
        The singular.
    words : str, optional
        The plural, when it is not ``word + "s"``.

    Examples
    --------
    >>> plural(1, "frame"), plural(0, "frame"), plural(3, "stack")
    ('1 frame', '0 frames', '3 stacks')
    """
    return f"{n} {word if n == 1 else (words or word + 's')}"
