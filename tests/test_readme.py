"""The README's Python snippets run as written (the driver-testing one is compiled only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_opens_with_two_commands() -> None:
    first = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert first == [
        "pip install -e . && nanoro-optics demo",
        'pip install -e ".[test]" && python -m pytest -q',
    ]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_snippet_runs(block: str) -> None:
    code = compile(block, str(README), "exec")
    if "MyStage" in block:  # needs the user's own driver
        return
    exec(code, {})
