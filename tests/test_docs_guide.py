"""Every ```python block of the user guide (docs/guide/*.md) runs as written, offline, in a
scratch folder; the blocks of one page share nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
GUIDE = ROOT / "docs" / "guide"
PAGES = sorted(GUIDE.glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
CASES = [
    (page.name, i, code)
    for page in PAGES
    for i, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8")))
]


def test_guide_pages_have_python_blocks():
    names = {page.name for page in PAGES}
    assert {
        "training.md",
        "sampling.md",
        "likelihoods.md",
        "checkpoints.md",
        "diffusers.md",
    } <= names
    assert len(CASES) >= 20


@pytest.mark.parametrize("page, i, code", CASES, ids=[f"{page}:{i + 1}" for page, i, _ in CASES])
def test_guide_block_runs(page, i, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (checkpoints, sweep output)
    torch.set_num_threads(1)
    exec(compile(code, f"docs/guide/{page} python block {i + 1}", "exec"), {"__name__": "guide"})
