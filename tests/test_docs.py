"""The README and docs/ name only flags that exist: each command line's flags in its own
parser's --help, every other flag in some parser of the project (or of torchrun and pip)."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_eval import cli

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAG = re.compile(r"(?<![\w/-])--[a-z][a-z0-9-]*(?:_[a-z0-9_]+)?")
OTHER_TOOLS = {"--nproc_per_node", "--nnodes", "--rdzv_backend", "--rdzv_endpoint", "--no-python", "--master_port"}
OTHER_TOOLS |= {"--index-url"}  # pip
NOT_FLAGS = {"--model"}  # named to say it is not taken for --models


def _flags(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")}


PARSERS = {
    "compare": _flags(cli.command_parser("compare")),
    "main": _flags(cli.command_parser("run")),
    "validate": _flags(cli.command_parser("validate")),
    "check-data": _flags(cli.command_parser("check-data")),
    "report": _flags(cli.command_parser("report")),
}


@functools.cache
def _script_flags(script: str) -> frozenset[str]:
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    return frozenset(FLAG.findall(help_text))


def _commands(text: str) -> list[str]:
    """Command lines of the ```bash blocks and of `$ `-prompted lines, continuations joined."""
    lines = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith(("ensemble-eval", "python", "torchrun", ".venv/bin/")):
                lines.append(line.split(" #")[0])
    return lines


def _subcommand(words: list[str]) -> str:
    return words[0] if words and words[0] in PARSERS else "main"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_flag_in_the_docs_exists(page):
    text = page.read_text()
    scripts = [_script_flags(path.name) for path in sorted((ROOT / "scripts").glob("*.py"))]
    known = set().union(*PARSERS.values(), *scripts)
    unknown = sorted(set(FLAG.findall(text)) - known - OTHER_TOOLS - NOT_FLAGS)
    assert not unknown, f"{page.name} names flags no parser has: {unknown}"
    for line in _commands(text):
        words = line.split()
        if "ensemble-eval" in words or "ensemble_eval" in words:
            at = words.index("ensemble-eval" if "ensemble-eval" in words else "ensemble_eval") + 1
            rest = words[at:]
            parser = _subcommand(rest)
            wrong = sorted(set(FLAG.findall(" ".join(rest))) - PARSERS[parser])
            assert not wrong, f"{page.name}: `{line}` uses {wrong}, which `ensemble-eval {parser}` does not take"
        elif words[0] == "python" and words[1].startswith("scripts/"):
            wrong = sorted(set(FLAG.findall(line)) - _script_flags(Path(words[1]).name))
            assert not wrong, f"{page.name}: `{line}` uses {wrong}, which {words[1]} does not take"


def test_the_checker_sees_commands_and_catches_a_wrong_flag():
    text = "```bash\nensemble-eval validate a.pt --table\npython scripts/benchmark.py --nope\n```\n"
    assert _commands(text) == ["ensemble-eval validate a.pt --table", "python scripts/benchmark.py --nope"]
    assert "--table" not in PARSERS["validate"] and "--table" in PARSERS["main"]
    assert "--nope" not in _script_flags("benchmark.py")


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for page in PAGES[1:]:
        if page.name != "ARCHITECTURE.md":
            assert f"docs/{page.name}" in text, f"the README does not link {page.name}"
