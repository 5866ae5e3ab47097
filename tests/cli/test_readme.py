"""The README's commands, run exactly as written (issue 18, *Done means*).

Every ```sh block of README.md runs with ``bash -euo pipefail`` in one scratch directory (with a
``.venv`` link to this checkout's, ``FACEMEDIA_HOME`` under it, the embedded default: no broker,
SQLite, a local store), in file order: a later block may use what an earlier one wrote. A block
fails the test on a non-zero exit, on a line of JSON that does not parse, or on a status
document missing a field the README's *Job status* table documents.

A block that cannot run there says so on the line before its fence, and is skipped by name:
``<!-- doctest: skip: REASON -->`` or ``<!-- doctest: services: REASON -->`` (needs a broker,
PostgreSQL, an S3 server or the network).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import clean_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*doctest:\s*(skip|services)\s*:\s*(.+?)\s*-->$")


@dataclass(frozen=True)
class Block:
    """One shell block: where it starts, its text, and why it is skipped (if it is)."""

    line: int
    text: str
    skip: str | None


def blocks(text: str) -> list[Block]:
    """The ```sh blocks of ``text``, each with the doctest marker on the line before it."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() in ("```sh", "```bash", "```shell"):
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            before = lines[start - 1].strip() if start else ""
            marker = MARKER.match(before)
            skip = f"{marker.group(1)}: {marker.group(2)}" if marker else None
            found.append(Block(start + 1, "\n".join(lines[start + 1 : j]) + "\n", skip))
            i = j
        i += 1
    return found


def documented_status_fields(text: str) -> set[str]:
    """The field names of the README's *Job status* table (first column, in backquotes)."""
    section = text.split("### Job status", 1)[1].split("\n#", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            names.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return names


README_TEXT = README.read_text()
BLOCKS = blocks(README_TEXT)


class Scratch:
    """The shared directory; runs blocks in file order, each at most once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / ".venv").symlink_to(ROOT / ".venv")
        self.env = clean_env(root / "var", HOME=str(root), XDG_CONFIG_HOME=str(root / ".config"))
        self.env.pop("VIRTUAL_ENV", None)
        self.done: dict[int, subprocess.CompletedProcess[str]] = {}

    def run_through(self, block: Block) -> subprocess.CompletedProcess[str]:
        """Run every runnable block up to and including ``block``; return its result."""
        for earlier in BLOCKS:
            if earlier.skip is None and earlier.line not in self.done:
                self.done[earlier.line] = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", earlier.text],
                    cwd=self.root,
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
            if earlier is block:
                break
        return self.done[block.line]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    return Scratch(tmp_path_factory.mktemp("readme"))


def test_the_readme_documents_every_status_field() -> None:
    from worker.jobs.reads import JOB_STATUS_FIELDS

    assert documented_status_fields(README_TEXT) == set(JOB_STATUS_FIELDS)


def test_the_readme_has_blocks_that_run() -> None:
    assert sum(block.skip is None for block in BLOCKS) >= 1


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs_as_written(block: Block, scratch: Scratch) -> None:
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    done = scratch.run_through(block)
    where = f"README.md:{block.line}\n{block.text}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, where
    documented = documented_status_fields(README_TEXT)
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not one line of JSON: {line[:200]}\n{where}")
        if isinstance(data, dict) and {"job_id", "job_type", "status"} <= set(data):
            missing = documented - set(data)
            assert not missing, f"status document without {sorted(missing)}\n{where}"
    assert os.path.isdir(scratch.root)
