"""The fusion options ``nanoro-optics fuse`` and ``nanoro-optics fuse-batch`` share.

Both commands call :func:`add_fusion_arguments` on their parser and :func:`fuser_options` on
the parsed arguments, so an option is spelled, documented, checked and passed on the same way
in both. Each option is one :class:`FuserOption` of :data:`FUSER_OPTIONS`: adding an option of
:class:`~nanoro_optics.fusion.StackFuser` (or :func:`~nanoro_optics.fusion.fuse_stack`) to both
commands is adding one entry there. Options about what is written (``--crop``,
``--z-step-um``) are added by :func:`add_fusion_arguments` too, and checked by
:func:`check_output_options`; the commands apply them. :func:`unused_option_notes` lists the
options that do nothing in the combination given, for the commands to print on stderr (a
command whose depth map is optional passes whether it writes one).

Frame alignment (``--align``) registers every frame onto the *first* frame of the stack (the
first file in stack order), or with ``--reference middle`` onto the middle one: the fused
image has that frame's pixel grid and magnification.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FUSER_OPTIONS",
    "FuserOption",
    "add_fusion_arguments",
    "check_output_options",
    "fuser_options",
    "unused_option_notes",
]

#: the value of ``--sharpness`` that selects the hard maximum-activity rule
HARD = "hard"


def _sharpness(text: str) -> int | str:
    """Parse ``--sharpness``: an integer, or ``hard``."""
    if text.strip().lower() == HARD:
        return HARD
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 1 to 64 or 'hard', got {text!r}"
        ) from None


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class FuserOption:
    """One command-line option that sets a keyword of ``StackFuser`` / ``fuse_stack``.

    Attributes
    ----------
    flags : tuple of str
        The option strings (``("--levels",)``); the parsed value lands in ``args.<dest>``.
    dest : str
        Attribute of the parsed arguments.
    keyword : str
        The keyword argument it sets.
    argparse_kwargs : dict
        Passed to :meth:`argparse.ArgumentParser.add_argument` (``type``, ``help``...). The
        default is always ``None`` (or ``False`` for a flag): an option not given passes
        nothing, so the library's own default applies.
    convert : callable
        Maps the parsed value (never ``None``/``False``) to the keyword's value.
    """

    flags: tuple[str, ...]
    dest: str
    keyword: str
    argparse_kwargs: dict[str, Any] = field(default_factory=dict)
    convert: Callable[[Any], Any] = _identity


#: The options that set keywords of StackFuser / fuse_stack, in ``--help`` order.
FUSER_OPTIONS: tuple[FuserOption, ...] = (
    FuserOption(
        ("--align",),
        "align",
        "align",
        {
            "action": "store_true",
            "help": "align every frame onto the first frame of the stack (or the one "
            "--reference names) before fusing (focus breathing: scale; drift: translation); "
            "the result has that frame's pixel grid",
        },
    ),
    FuserOption(
        ("--reference",),
        "reference",
        "reference",
        {
            "choices": ("first", "middle"),
            "help": "with --align, the frame whose pixel grid the result keeps: the first "
            "(default) or the middle one (half the largest warp; the files are read twice)",
        },
    ),
    FuserOption(
        ("--levels",),
        "levels",
        "levels",
        {"type": int, "metavar": "N", "help": "pyramid levels, 1 to 32 (default: from the size)"},
    ),
    FuserOption(
        ("--sharpness",),
        "sharpness",
        "sharpness",
        {
            "type": _sharpness,
            "metavar": "N|hard",
            "help": "exponent of the soft selection weights (a / a_max)^N, 1 to 64 (default 4; "
            "larger is closer to a hard pick); 'hard' is the hard maximum-activity rule",
        },
        lambda v: None if v == HARD else v,
    ),
    FuserOption(
        ("--hard",),
        "hard",
        "sharpness",
        {"action": "store_true", "help": "the same as --sharpness hard"},
        lambda v: None,
    ),
    FuserOption(
        ("--window",),
        "window_px",
        "window_px",
        {
            "type": int,
            "metavar": "PX",
            "help": "side of the activity window in px at the two finest levels, odd, 1 to 15 "
            "(default 5)",
        },
    ),
    FuserOption(
        ("--coarse-window",),
        "coarse_window_px",
        "coarse_window_px",
        {
            "type": int,
            "metavar": "PX",
            "help": "the same from the third level on (default: --window); 1 measures each "
            "coefficient's own energy there, which keeps sharp occluding edges from "
            "spreading onto the background",
        },
    ),
    FuserOption(
        ("--inherit",),
        "inherit",
        "inherit",
        {
            "type": float,
            "metavar": "W",
            "help": "weight of the finer level's activity in a level's activity, 0 to 100 "
            "(default 1; the guard against halos next to sharp edges)",
        },
    ),
    FuserOption(
        ("--bit-depth",),
        "bit_depth",
        "bit_depth",
        {
            "type": int,
            "metavar": "BITS",
            "help": "bits the camera records (e.g. 12 for 12-bit data in 16-bit files); a frame "
            "with a larger value is refused",
        },
    ),
    FuserOption(
        ("--noise-dn",),
        "noise_dn",
        "noise_dn",
        {
            "type": float,
            "metavar": "SIGMA",
            "help": "noise standard deviation in DN (default: estimated from the first frame); "
            "activity is measured in units of the noise",
        },
    ),
    FuserOption(
        ("--keep-depth-holes",),
        "keep_depth_holes",
        "fill_depth",
        {
            "action": "store_true",
            "help": "leave the depth map NaN where no frame is confidently in focus (default: "
            "fill those pixels from their confident neighbours; the confidence map marks them)",
        },
        lambda v: False,
    ),
)


def add_fusion_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the shared fusion options, and ``--crop`` and ``--z-step-um``, to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A command's parser; the options go into an argument group "fusion".
    """
    group = parser.add_argument_group("fusion")
    for opt in FUSER_OPTIONS:
        kwargs = dict(opt.argparse_kwargs)
        if kwargs.get("action") != "store_true":
            kwargs.setdefault("default", None)
        group.add_argument(*opt.flags, dest=opt.dest, **kwargs)
    group.add_argument(
        "--crop",
        action="store_true",
        help="with --align, crop the result to the area every frame covers (the box is printed)",
    )
    group.add_argument(
        "--z-step-um",
        type=float,
        metavar="UM",
        help="focus step between frames in um; the depth map is then in um from the first frame",
    )


def fuser_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the keyword options for ``StackFuser`` / ``fuse_stack`` from parsed arguments.

    Only options given on the command line appear (``align`` always), so the library's
    defaults apply to the rest. The values are checked by the fuser itself, which names the
    keyword and its limit.

    Raises
    ------
    ValueError
        If two options set the same keyword to different values (``--hard --sharpness 8``).

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_fusion_arguments(p)
    >>> fuser_options(p.parse_args(["--levels", "5", "--hard"]))
    {'align': False, 'levels': 5, 'sharpness': None}
    """
    out: dict[str, Any] = {}
    given_by: dict[str, str] = {}
    for opt in FUSER_OPTIONS:
        value = getattr(args, opt.dest)
        if opt.keyword == "align":
            out["align"] = bool(value)
            continue
        if value is None or value is False:
            continue
        converted = opt.convert(value)
        if opt.keyword in out and out[opt.keyword] != converted:
            raise ValueError(
                f"{given_by[opt.keyword]} and {opt.flags[0]} both set {opt.keyword}, to "
                f"{out[opt.keyword]!r} and {converted!r}; give one"
            )
        out[opt.keyword] = converted
        given_by[opt.keyword] = opt.flags[0]
    return out


def check_output_options(args: argparse.Namespace) -> None:
    """Check ``--z-step-um`` (finite, not 0) and ``--crop`` (needs ``--align``).

    Raises
    ------
    ValueError
        Naming the option, its value and the limit.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_fusion_arguments(p)
    >>> check_output_options(p.parse_args(["--z-step-um", "nan"]))
    Traceback (most recent call last):
    ...
    ValueError: --z-step-um must be a finite number, got nan
    """
    step = args.z_step_um
    if step is not None and not math.isfinite(step):
        raise ValueError(f"--z-step-um must be a finite number, got {step}")
    if step == 0:
        raise ValueError("--z-step-um must not be 0 (frames must be at distinct z positions)")
    if args.crop and not args.align:
        raise ValueError("--crop needs --align (without alignment every frame covers the image)")


def unused_option_notes(args: argparse.Namespace, *, depth_written: bool) -> list[str]:
    """Say which options given do nothing in this combination (for stderr).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of a command that called :func:`add_fusion_arguments`.
    depth_written : bool
        Whether the command writes a depth map.

    Returns
    -------
    list of str
        One sentence per option that has no effect; empty if every option given acts.

    Examples
    --------
    >>> p = argparse.ArgumentParser()
    >>> add_fusion_arguments(p)
    >>> unused_option_notes(p.parse_args(["--z-step-um", "2"]), depth_written=False)
    ['--z-step-um does nothing without --depth-map (it sets the unit of the depth map)']
    """
    notes = []
    if getattr(args, "reference", None) is not None and not args.align:
        notes.append("--reference does nothing without --align (it names the frame to align to)")
    if getattr(args, "keep_depth_holes", False) and not depth_written:
        notes.append("--keep-depth-holes does nothing without a depth map")
    if args.z_step_um is not None and not depth_written:
        notes.append(
            "--z-step-um does nothing without --depth-map (it sets the unit of the depth map)"
        )
    return notes


def option_help() -> dict[str, str]:
    """Return the ``--help`` text of every fusion option, by its destination (``args.<dest>``).

    For front ends other than the command line (the napari widget's tooltips), so that an
    option is described in one place.

    Examples
    --------
    >>> option_help()["levels"]
    'pyramid levels, 1 to 32 (default: from the size)'
    """
    parser = argparse.ArgumentParser(add_help=False)
    add_fusion_arguments(parser)
    return {a.dest: str(a.help) for a in parser._actions if a.help}
