"""Every ```python block of README.md runs as written (offline, in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

# the repository root: the nearest folder above this file holding pyproject.toml
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
README = ROOT / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5  # train/sample, likelihood, sweep, OT metrics, diffusers


def test_readme_is_short_and_keeps_the_ci_test_command():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160  # the entry point; the docs site holds the rest
    # .ci/run runs exactly the test command README gives, with its own environment's python
    command = re.search(r"^\.venv/bin/python (-m pytest.*)$", text, re.M)
    assert command is not None, "README must give the test command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f'"$tmp/venv/bin/python" {command.group(1)} ' in ci


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (checkpoints under runs/)
    torch.set_num_threads(1)
    code = compile(BLOCKS[i], f"README.md python block {i + 1}", "exec")
    exec(code, {"__name__": f"readme_block_{i + 1}"})
