"""A small seeded fuzz pass: damaged PNG/TIFF/JPEG files give clean errors, never crashes.

The full pass is ``python benchmarks/fuzz_files.py`` (thousands of cases); this one runs the
same code on a few dozen, so that a reader regression shows up in the test suite.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_files.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("_fuzz_files", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_damaged_files_give_clean_errors_or_valid_pixels(fuzz) -> None:
    result = fuzz.run(cases=50, cli_cases=10, subprocesses=0, seed=7, timeout_s=60.0)
    for path in ("read_stack", "cli"):
        counts = result[path]
        assert counts.get("crash", 0) == 0, result["examples"]["crash"]
        assert counts.get("silent", 0) == 0, result["examples"]["silent"]
        assert counts.get("clean", 0) > 0  # the damage was seen
    assert sum(result["read_stack"].values()) == 50 and sum(result["cli"].values()) == 10


def test_the_mutations_are_seeded(fuzz) -> None:
    data = bytes(range(256)) * 4
    a = [fuzz.mutate(data, random.Random(3)) for _ in range(5)]
    b = [fuzz.mutate(data, random.Random(3)) for _ in range(5)]
    assert a == b and any(damaged != data for _, damaged in a)
