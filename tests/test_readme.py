"""Every ```python block in README.md runs, so the user's manual never rots; every command line it
shows parses, and every example script is in it.

Each block runs on its own, in a fresh namespace inside a temporary working directory,
so every block is a complete example a user can paste.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tinygrad_seq import cli

ROOT = Path(__file__).resolve().parent.parent
README_TEXT = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README_TEXT, flags=re.S)
SHELL_LINES = [line for block in re.findall(r"```bash\n(.*?)```", README_TEXT, flags=re.S)
               for line in block.splitlines()]
COMMANDS = [shlex.split(line, comments=True) for line in SHELL_LINES if line.startswith("tinygrad-seq ")]


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})


def test_readme_command_lines_parse() -> None:
    """Parsing only: a renamed option or subcommand breaks this test, not a reader's first try."""
    assert {words[1] for words in COMMANDS} >= {"train", "sample", "gradcheck", "graph"}
    for words in COMMANDS:
        args, unknown = cli.build_parser().parse_known_args(words[1:])  # a bad option exits: the test fails
        assert not unknown, words


def test_readme_lists_every_example() -> None:
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f"`{script.name}`" in README_TEXT, script.name
