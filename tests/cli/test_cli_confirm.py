"""Destructive commands (``erase``, ``keys retire``, ``hold release``; ``research revoke`` with
the research commands) ask on a terminal and require ``--yes`` off one, with or without
``--json`` (issue 18, *Consistency*). The terminal is a real pseudo-terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.cli.conftest import Ran, on_a_terminal

Fm = Callable[..., Ran]


def _subject(fm: Fm, tmp_path: Path, name: str) -> None:
    """A subject the ledger knows (encrypting a file for it creates it)."""
    src = tmp_path / "plain.bin"
    src.write_bytes(b"x" * 100)
    assert (
        fm("crypto", "encrypt", str(src), str(tmp_path / f"{name}.fme"), "--subject", name).code
        == 0
    )


def test_off_a_terminal_destructive_commands_need_yes(fm: Fm, tmp_path: Path) -> None:
    _subject(fm, tmp_path, "s1")
    assert fm("hold", "set", "--subject", "s1", "--reason", "litigation").code == 0
    for args in (
        ["erase", "s1"],
        ["keys", "retire"],
        ["hold", "release", "--subject", "s1"],
        ["research", "revoke", "no-such-release"],
    ):
        plain = fm(*args)
        assert plain.code == 2 and "confirmation_required" in plain.stderr, (args, plain)
        as_json = fm(*args, "--json")
        assert as_json.code == 2 and as_json.json()["error"] == "confirmation_required"
    # nothing happened: the hold is still there, the subject not erased
    shown = fm("hold", "show", "--subject", "s1", "--json")
    assert shown.code == 0 and shown.json()["reason"] == "litigation", shown
    released = fm("hold", "release", "--subject", "s1", "--yes", "--json")
    assert released.code == 0, released
    erased = fm("erase", "s1", "--yes", "--json")
    assert erased.code == 0 and erased.json()


def test_on_a_terminal_they_ask_and_no_means_nothing_changes(fm: Fm, tmp_path: Path) -> None:
    _subject(fm, tmp_path, "s2")
    code, shown = on_a_terminal(tmp_path, ["erase", "s2"], "n")
    assert "Erase this subject's data for good?" in shown
    assert code == 2 and "declined" in shown
    still = fm(
        "crypto", "decrypt", str(tmp_path / "s2.fme"), str(tmp_path / "back"), "--subject", "s2"
    )
    assert still.code == 0  # not erased: its key still opens the file
    code, shown = on_a_terminal(tmp_path, ["erase", "s2", "--json"], "y")
    assert code == 0, shown
    gone = fm(
        "crypto", "decrypt", str(tmp_path / "s2.fme"), str(tmp_path / "back2"), "--subject", "s2"
    )
    assert gone.code != 0
