"""The fusion options ``nanoro-optics fuse`` and ``nanoro-optics fuse-batch`` share.

Every field of :class:`~nanoro_optics.fusion.FusionOptions` has a flag here (or a reason in
:data:`NO_FLAG`; a test keeps the two in step), with the field's one help text
(:data:`nanoro_optics.fusion.options.HELP`). Both commands call :func:`add_fusion_arguments`
on their parser and :func:`fusion_options` on the parsed arguments, which builds the one
``FusionOptions`` the command passes on (validated there: the message names the field, its
value and the limit). :func:`unused_option_notes` lists the options that do nothing in the
combination given, for the commands to print on stderr.

Frame alignment (``--align``) registers every frame onto the *first* frame of the stack (the
first file in stack order), or with ``--reference middle`` onto the middle one: the fused
image has that frame's pixel grid and magnification.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..fusion.options import HALO_MODES, HELP, REFERENCES, FusionOptions
from ..psf.scaling import SCALING_MODELS

__all__ = [
    "FUSER_OPTIONS",
    "MISMATCH_FLAGS",
    "NO_FLAG",
    "FuserOption",
    "add_fusion_arguments",
    "check_output_options",
    "fuser_options",
    "fusion_options",
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


def _opt(
    flag: str,
    field_name: str,
    dest: str | None = None,
    convert: Callable[[Any], Any] = _identity,
    **kwargs: Any,
) -> FuserOption:
    """One flag of field ``field_name``, with the field's help text unless ``help`` is given."""
    kwargs.setdefault("help", HELP[field_name])
    return FuserOption((flag,), dest or field_name, field_name, kwargs, convert)


#: The flags that set fields of FusionOptions, in ``--help`` order.
FUSER_OPTIONS: tuple[FuserOption, ...] = (
    _opt("--align", "align", action="store_true"),
    _opt("--reference", "reference", choices=REFERENCES),
    _opt("--crop", "crop", action="store_true"),
    _opt("--levels", "levels", type=int, metavar="N"),
    _opt(
        "--sharpness",
        "sharpness",
        convert=lambda v: None if v == HARD else v,
        type=_sharpness,
        metavar="N|hard",
    ),
    _opt(
        "--hard",
        "sharpness",
        "hard",
        lambda v: None,
        action="store_true",
        help="the same as --sharpness hard",
    ),
    _opt("--window", "window_px", type=int, metavar="PX"),
    _opt("--coarse-window", "coarse_window_px", type=int, metavar="PX"),
    _opt("--inherit", "inherit", type=float, metavar="W"),
    _opt("--focus-levels", "focus_levels", type=int, metavar="N"),
    _opt("--noise-floor", "noise_floor", type=float, metavar="F"),
    _opt("--bit-depth", "bit_depth", type=int, metavar="BITS"),
    _opt("--noise-dn", "noise_dn", None, tuple, type=float, nargs="+", metavar="SIGMA"),
    _opt("--guide-channel", "guide_channel", type=int, metavar="C"),
    _opt(
        "--keep-depth-holes",
        "fill_depth",
        "keep_depth_holes",
        lambda v: False,
        action="store_true",
        help="leave the depth map NaN where no frame is confidently in focus (default: "
        "fill those pixels from their confident neighbours; the confidence map marks them)",
    ),
    _opt("--min-confidence", "min_confidence", type=float, metavar="C"),
    _opt("--z-step-um", "z_step_um", type=float, metavar="UM"),
    _opt("--halo", "halo", choices=HALO_MODES),
    _opt("--halo-blur-px", "halo_blur_px", type=float, metavar="PX"),
)

#: flags that build ``index_mismatch`` (:class:`~nanoro_optics.psf.IndexMismatch`): dest, flag,
#: argparse keywords; ``--n-immersion``, ``--n-sample`` and ``--na`` are needed together
MISMATCH_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "n_immersion",
        "--n-immersion",
        {
            "type": float,
            "metavar": "N",
            "help": "refractive index of the immersion medium the "
            "objective is designed for (e.g. 1.518 for oil)",
        },
    ),
    (
        "n_sample",
        "--n-sample",
        {
            "type": float,
            "metavar": "N",
            "help": "refractive index of the sample (e.g. 1.33 for water)",
        },
    ),
    ("na", "--na", {"type": float, "metavar": "NA", "help": "numerical aperture"}),
    (
        "mismatch_model",
        "--mismatch-model",
        {
            "choices": SCALING_MODELS,
            "default": "carlsson",
            "help": "axial scaling model of "
            "nanoro_optics.psf.actual_depth_um (default "
            "carlsson; loginov and wave need --wavelength-um)",
        },
    ),
    (
        "wavelength_um",
        "--wavelength-um",
        {
            "type": float,
            "metavar": "UM",
            "help": "vacuum wavelength in um (for the loginov and wave models)",
        },
    ),
    (
        "interface_um",
        "--interface-um",
        {
            "type": float,
            "metavar": "UM",
            "default": 0.0,
            "help": "z (um, from the first frame, up positive) at "
            "which the focus lies on the interface (default 0: the "
            "first frame)",
        },
    ),
)

#: fields without a flag of their own, and why
NO_FLAG: dict[str, str] = {
    "z_um": "files carry no z positions; --z-step-um gives evenly spaced ones",
    "index_mismatch": "built from --n-immersion, --n-sample, --na and --mismatch-model "
    "(MISMATCH_FLAGS)",
}


def add_fusion_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every field of FusionOptions to ``parser`` (groups "fusion", "depth").

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A command's parser.
    """
    group = parser.add_argument_group("fusion")
    for opt in FUSER_OPTIONS:
        kwargs = dict(opt.argparse_kwargs)
        if kwargs.get("action") != "store_true":
            kwargs.setdefault("default", None)
        group.add_argument(*opt.flags, dest=opt.dest, **kwargs)
    depth = parser.add_argument_group(
        "depth correction for an index mismatch",
        HELP["index_mismatch"] + "; needs --z-step-um",
    )
    for dest, flag, kwargs in MISMATCH_FLAGS:
        depth.add_argument(flag, dest=dest, **{"default": None, **kwargs})


def fuser_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the fields the command line sets, as ``{field: value}`` (``align`` always).

    Only options given on the command line appear, so the library's defaults apply to the
    rest; the values are checked by :class:`~nanoro_optics.fusion.FusionOptions`.

    Raises
    ------
    ValueError
        If two options set the same field to different values (``--hard --sharpness 8``),
        or the index-mismatch flags are incomplete.

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
    if getattr(args, "reference", None) is not None and not out["align"]:
        del out["reference"]  # a note says it does nothing (unused_option_notes)
    mismatch = _index_mismatch(args)
    if mismatch is not None:
        out["index_mismatch"] = mismatch
    return out


def _index_mismatch(args: argparse.Namespace) -> Any:
    needed = ("n_immersion", "n_sample", "na")
    given = [d for d in needed if getattr(args, d, None) is not None]
    if not given:
        if getattr(args, "wavelength_um", None) is not None:
            raise ValueError(
                "--wavelength-um is for the index-mismatch correction: give "
                "--n-immersion, --n-sample and --na too"
            )
        return None
    if len(given) < len(needed):
        missing = [f"--{d.replace('_', '-')}" for d in needed if d not in given]
        raise ValueError(
            f"the index-mismatch correction needs --n-immersion, --n-sample and --na; "
            f"missing {', '.join(missing)}"
        )
    if args.z_step_um is None:
        raise ValueError(
            "the index-mismatch correction (--n-immersion ...) corrects a depth map in um: "
            "give --z-step-um"
        )
    from ..psf import IndexMismatch

    return IndexMismatch(
        interface_um=args.interface_um,
        na=args.na,
        n_immersion=args.n_immersion,
        n_sample=args.n_sample,
        model=args.mismatch_model,
        wavelength_um=args.wavelength_um,
    )


def fusion_options(args: argparse.Namespace) -> FusionOptions:
    """Build the command's :class:`~nanoro_optics.fusion.FusionOptions` (validated there).

    Raises
    ------
    ValueError, TypeError
        Naming the field, its value and the limit.
    """
    return FusionOptions(**fuser_options(args))


def check_output_options(args: argparse.Namespace) -> None:
    """Check ``--z-step-um`` by the options' one rule, and ``--crop`` (needs ``--align``).

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
    ValueError: z_step_um must be finite, >= -1e+09 and <= 1e+09, got nan
    """
    if args.z_step_um is not None:
        FusionOptions(z_step_um=args.z_step_um)  # finite, not 0; negative: a scan moving down
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
