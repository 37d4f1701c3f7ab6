"""Fuzz the file readers and the ``fuse`` command with mutated PNG, TIFF and JPEG files.

Each case takes a valid seed file (8/16-bit grey, RGB, RGBA PNG from the package's encoder,
a palette PNG from Pillow; TIFF uncompressed, deflate, LZW, one page per write; JPEG), damages
it (bit flips, a random byte run, a truncation, a hand-made bad IHDR with a valid CRC, a
bad TIFF tag value) and reads it in a stack of good frames:

1. through ``io.read_stack`` (in this process), and
2. through the command line, ``fuse DIR -o out.png``: ``cli.main`` in this process for every
   case, and ``python -m nanoro_optics fuse`` in a subprocess for the first ``--subprocess``
   cases (to see signals and exit codes as a user does).

Outcomes:

- ``clean``: a ValueError / FileNotFoundError whose message names the damaged file (the CLI:
  exit 2 and one line naming it);
- ``crash``: any other exception, a message without the file name, a traceback, exit 1,
  a signal, a hang past ``--timeout-s``;
- ``same``: read, and the pixels equal the undamaged file's (the damage hit nothing used);
- ``valid``: read, pixels differ, and Pillow (the reference decoder) reads the damaged file to
  the same pixels: valid data that changed (TIFF and JPEG carry no checksum of their pixels);
- ``silent``: read, pixels differ, and Pillow refuses the file or decodes other pixels:
  corrupt data accepted without a word. The goal is 0 ``crash`` and 0 ``silent``.

Seeded and bounded (``--cases``, ``--seed``); prints a table and writes JSON
(default ``bench_results/fuzz_files.json``).

Usage: python benchmarks/fuzz_files.py [--cases 400] [--cli-cases 120] [--subprocess 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io as pyio
import json
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTCOMES = ("clean", "crash", "same", "valid", "silent")
SIZE = (24, 32)


# ------------------------------------------------------------------------------ seed files


def _pattern(shape: tuple[int, ...], dtype: str, k: int) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = (x * 7 + y * 13 + k * 29) % 251
    if len(shape) == 3:
        base = np.stack([(base + 40 * c) % 251 for c in range(shape[2])], axis=-1)
    scale = 257 if dtype == "uint16" else 1
    return (base * scale).astype(dtype)


def seeds() -> dict[str, Callable[[Path, int], None]]:
    """Writers of the valid seed files, by name: ``write(path_without_suffix, k)``."""
    import tifffile
    from PIL import Image

    from nanoro_optics.io import write_image

    def png(shape: tuple[int, ...], dtype: str) -> Callable[[Path, int], None]:
        return lambda p, k: write_image(p.with_suffix(".png"), _pattern(shape, dtype, k))

    def palette(p: Path, k: int) -> None:
        Image.fromarray(_pattern(SIZE, "uint8", k)).convert("P").save(p.with_suffix(".png"))

    def tiff(compression: str | None) -> Callable[[Path, int], None]:
        def write(p: Path, k: int) -> None:
            tifffile.imwrite(
                p.with_suffix(".tif"),
                _pattern(SIZE, "uint16", k),
                photometric="minisblack",
                compression=compression,
            )

        return write

    def streamed(p: Path, k: int) -> None:
        with tifffile.TiffWriter(p.with_suffix(".tif")) as tw:
            for j in range(3):
                tw.write(_pattern(SIZE, "uint8", k + j), photometric="minisblack")

    def jpeg(p: Path, k: int) -> None:
        Image.fromarray(_pattern((*SIZE, 3), "uint8", k)).save(p.with_suffix(".jpg"), quality=95)

    return {
        "png-grey8": png(SIZE, "uint8"),
        "png-grey16": png(SIZE, "uint16"),
        "png-rgb8": png((*SIZE, 3), "uint8"),
        "png-rgba16": png((*SIZE, 4), "uint16"),
        "png-palette": palette,
        "tiff-raw16": tiff(None),
        "tiff-deflate16": tiff("zlib"),
        "tiff-lzw16": tiff("lzw"),
        "tiff-pages8": streamed,
        "jpeg-rgb": jpeg,
    }


# ------------------------------------------------------------------------------ mutations


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Damage ``data`` one way chosen by ``rng``; return the way and the damaged bytes."""
    buf = bytearray(data)
    how = rng.choice(["bitflip", "bytes", "truncate", "header", "zero-run"])
    if how == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif how == "bytes":
        i = rng.randrange(len(buf))
        n = rng.randint(1, 16)
        buf[i : i + n] = bytes(rng.randrange(256) for _ in range(n))
    elif how == "truncate":
        buf = buf[: rng.randrange(1, len(buf))]
    elif how == "zero-run":
        i, n = rng.randrange(len(buf)), rng.randint(4, 256)
        buf[i : i + n] = bytes(len(buf[i : i + n]))
    elif data[:8] == b"\x89PNG\r\n\x1a\n":  # a hand-made IHDR: random fields, valid CRC
        w, h, depth, colour, comp, filt, inter = struct.unpack(">IIBBBBB", data[16:29])
        field = rng.randrange(7)
        values = [w, h, depth, colour, comp, filt, inter]
        values[field] = rng.choice(
            [0, 1, 2, 3, 5, 7, 255, 2**31, 2**32 - 1, rng.randrange(2**16)]
            if field < 2
            else [0, 1, 2, 3, 4, 5, 6, 7, 16, 255]
        )
        ihdr = struct.pack(">IIBBBBB", *values)
        buf = bytearray(data[:8] + _chunk(b"IHDR", ihdr) + data[33:])
    elif data[:2] in (b"II", b"MM"):  # a TIFF tag's value replaced (width, height, counts...)
        endian = "<" if data[:2] == b"II" else ">"
        (ifd,) = struct.unpack(endian + "I", data[4:8])
        if ifd + 2 <= len(data):
            (n,) = struct.unpack(endian + "H", data[ifd : ifd + 2])
            if n:
                entry = ifd + 2 + 12 * rng.randrange(min(n, 64))
                value = rng.choice([0, 1, 2**15, 2**31, 2**32 - 1, rng.randrange(2**32)])
                buf[entry + 8 : entry + 12] = struct.pack(endian + "I", value)
    else:  # JPEG: a random marker segment length
        i = data.find(b"\xff\xc0")
        if i > 0:
            buf[i + 5 : i + 9] = struct.pack(">HH", rng.randrange(2**16), rng.randrange(2**16))
    return how, bytes(buf)


# ------------------------------------------------------------------------------ classification


def _pillow_pixels(path: Path) -> list[np.ndarray] | None:
    """Every frame as Pillow decodes it, or None if Pillow refuses the file."""
    import warnings

    from PIL import Image, ImageSequence

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                frames = []
                for page in ImageSequence.Iterator(im):
                    page.load()
                    if page.mode == "P":
                        page = page.convert("RGB")
                    frames.append(np.array(page))
                return frames
    except Exception:
        return None


def classify_read(path: Path, reference: list[np.ndarray]) -> tuple[str, str]:
    """Read ``path`` with io.read_stack; return (outcome, detail)."""
    from nanoro_optics import io as nio

    try:
        got = list(nio.read_stack(path))
    except (ValueError, FileNotFoundError) as exc:
        ok = path.name in str(exc)
        return ("clean" if ok else "crash"), f"{type(exc).__name__}: {exc}"[:200]
    except Exception as exc:
        return "crash", f"{type(exc).__name__}: {exc}"[:200]
    return _judge(path, got, reference)


def _judge(path: Path, got: list[np.ndarray], reference: list[np.ndarray]) -> tuple[str, str]:
    if len(got) == len(reference) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got, reference, strict=True)
    ):
        return "same", ""
    pil = _pillow_pixels(path)
    if pil is not None and len(pil) == len(got):
        if all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got, pil, strict=True)):
            return "valid", "Pillow reads the same changed pixels"
    return "silent", "read; Pillow refuses it or reads other pixels" if pil is None else "differs"


def classify_cli(folder: Path, bad: Path, reference: list[np.ndarray]) -> tuple[str, str]:
    """Run ``cli.main(["fuse", folder, "-o", out])`` in this process."""
    from nanoro_optics.cli import main

    out = folder.parent / "out.png"
    err = pyio.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(pyio.StringIO()):
            code = main(["fuse", str(folder), "-o", str(out), "--overwrite"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        return "crash", f"{type(exc).__name__}: {exc}"[:200]
    text = err.getvalue().strip()
    if code == 2:
        return ("clean" if bad.name in text else "crash"), text[:200]
    if code != 0:
        return "crash", f"exit {code}: {text[:200]}"
    from nanoro_optics import io as nio

    return _judge(bad, list(nio.read_stack(bad)), reference)


def classify_subprocess(folder: Path, bad: Path, timeout_s: float) -> tuple[str, str]:
    out = folder.parent / "out.png"
    cmd = [sys.executable, "-m", "nanoro_optics", "fuse", str(folder), "-o", str(out)]
    cmd.append("--overwrite")
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "crash", f"hang past {timeout_s} s"
    if run.returncode == 2 and bad.name in run.stderr and "Traceback" not in run.stderr:
        return "clean", run.stderr.strip()[:200]
    if run.returncode == 0:
        return "accepted", ""
    return "crash", f"exit {run.returncode}: {run.stderr.strip()[-200:]}"


# ------------------------------------------------------------------------------ the run


def run(
    cases: int,
    cli_cases: int,
    subprocesses: int,
    seed: int,
    timeout_s: float,
    save_dir: Path | None = None,
) -> dict:
    """Fuzz ``cases`` damaged files (the first ``cli_cases`` through the CLI too).

    ``save_dir``: where to copy the damaged files that crash or are accepted silently.
    """
    rng = random.Random(seed)
    writers = seeds()
    names = sorted(writers)
    table: dict[str, Counter[str]] = {"read_stack": Counter(), "cli": Counter()}
    by_seed: dict[str, Counter[str]] = {n: Counter() for n in names}
    examples: dict[str, list[dict[str, str]]] = {"crash": [], "silent": []}
    sub: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        originals: dict[str, tuple[Path, list[np.ndarray]]] = {}
        from nanoro_optics import io as nio

        for name in names:
            folder = base / "seeds" / name
            folder.mkdir(parents=True)
            for k in range(3):
                writers[name](folder / f"f{k}", k)
            files = sorted(folder.iterdir())
            originals[name] = (folder, [list(nio.read_stack(f)) for f in files])  # type: ignore[misc]
        for case in range(cases):
            name = names[case % len(names)]
            folder, ref = originals[name]
            files = sorted(folder.iterdir())
            victim = rng.randrange(len(files))
            how, data = mutate(files[victim].read_bytes(), rng)
            stack = base / f"case{case}" / "stack"
            stack.mkdir(parents=True)
            for k, f in enumerate(files):
                (stack / f.name).write_bytes(data if k == victim else f.read_bytes())
            bad = stack / files[victim].name
            outcome, detail = classify_read(bad, ref[victim])
            table["read_stack"][outcome] += 1
            by_seed[name][outcome] += 1
            if save_dir is not None and outcome in ("crash", "silent"):
                save_dir.mkdir(parents=True, exist_ok=True)
                (save_dir / f"{outcome}-{case}-{how}-{bad.name}").write_bytes(data)
            if outcome in examples and len(examples[outcome]) < 10:
                examples[outcome].append(
                    {"seed": name, "how": how, "via": "read", "detail": detail}
                )
            if case < cli_cases:
                outcome, detail = classify_cli(stack, bad, ref[victim])
                table["cli"][outcome] += 1
                if outcome in examples and len(examples[outcome]) < 10:
                    examples[outcome].append(
                        {"seed": name, "how": how, "via": "cli", "detail": detail}
                    )
            if case < subprocesses:
                outcome, _ = classify_subprocess(stack, bad, timeout_s)
                sub[outcome] += 1
    return {
        "seed": seed,
        "cases": cases,
        "cli_cases": min(cli_cases, cases),
        "subprocess_cases": min(subprocesses, cases),
        "read_stack": dict(table["read_stack"]),
        "cli": dict(table["cli"]),
        "subprocess": dict(sub),
        "by_seed": {k: dict(v) for k, v in by_seed.items()},
        "examples": examples,
    }


def _print(result: dict) -> None:
    print(f"fuzz: {result['cases']} damaged files, seed {result['seed']}")
    print(f"{'path':<12}{'cases':>7}" + "".join(f"{o:>8}" for o in OUTCOMES))
    for key in ("read_stack", "cli"):
        row = result[key]
        print(f"{key:<12}{sum(row.values()):>7}" + "".join(f"{row.get(o, 0):>8}" for o in OUTCOMES))
    if result["subprocess"]:
        print(f"subprocess CLI ({result['subprocess_cases']} cases): {result['subprocess']}")
    print(f"{'seed file':<16}" + "".join(f"{o:>8}" for o in OUTCOMES))
    for name, row in result["by_seed"].items():
        print(f"{name:<16}" + "".join(f"{row.get(o, 0):>8}" for o in OUTCOMES))
    for kind in ("crash", "silent"):
        for ex in result["examples"][kind][:5]:
            print(f"  {kind}: {ex}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400, help="damaged files (bounded)")
    parser.add_argument("--cli-cases", type=int, default=120, help="of those, through cli.main")
    parser.add_argument("--subprocess", type=int, default=10, help="of those, as a subprocess")
    parser.add_argument("--seed", type=int, default=20251207)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--json", default="bench_results/fuzz_files.json", help="JSON output")
    parser.add_argument("--save-dir", type=Path, help="keep crashing / silently read files here")
    args = parser.parse_args()
    if not 1 <= args.cases <= 100_000:
        parser.error(f"--cases must be 1 to 100000, got {args.cases}")
    t0 = time.perf_counter()
    result = run(
        args.cases, args.cli_cases, args.subprocess, args.seed, args.timeout_s, args.save_dir
    )
    result["seconds"] = time.perf_counter() - t0
    _print(result)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path} ({result['seconds']:.0f} s)")
    crashes = result["read_stack"].get("crash", 0) + result["cli"].get("crash", 0)
    return 1 if crashes or result["subprocess"].get("crash", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
