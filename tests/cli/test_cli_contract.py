"""What every ``facemedia`` command promises a person at a shell (issue 18, *Dead ends* 4 and 5,
*Consistency*): documented exit codes (0 ok, 1 failed, 2 refused, 3 not finished, 4 service
unreachable), JSON errors on stdout with ``--json``, quiet by default, configuration mistakes
refused by name and never by value, validated ``--attr``, help text on every option, the status
document's fields. Every check runs the command in a fresh process."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import FACEMEDIA, Ran, clean_env

SECRET = "s3cr3t-Value-9f2b"
Fm = Callable[..., Ran]


# ----- exit codes, --help, --version, completion -------------------------------------------------


def test_help_documents_the_exit_codes_and_version_and_completion(fm: Fm, tmp_path: Path) -> None:
    helped = fm("--help")
    assert helped.code == 0
    text = " ".join(helped.stdout.split())
    for phrase in (
        "0 succeeded",
        "1 the job ran and failed, or a check failed",
        "2 refused before anything ran",
        "3 not finished within the wait",
        "4 a service could not be reached",
    ):
        assert phrase in text, phrase
    version = fm("--version")
    assert version.code == 0 and re.fullmatch(r"facemedia \S+\n", version.stdout)
    # as a person types it, from a shell (typer detects the shell from its parent process)
    shown = subprocess.run(
        ["bash", "-c", " ".join(shlex.quote(a) for a in [*FACEMEDIA, "--show-completion"])],
        cwd=tmp_path,
        env=clean_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and "_FACEMEDIA_COMPLETE" in shown.stdout, shown.stderr
    assert "--install-completion" in helped.stdout


def test_usage_errors_exit_2_and_are_json_with_json(fm: Fm) -> None:
    plain = fm("status", "--bogus")
    assert plain.code == 2 and "No such option" in plain.stderr and plain.stdout == ""
    as_json = fm("status", "x", "--bogus", "--json")
    assert as_json.code == 2 and as_json.stderr == ""
    assert as_json.json()["error"] == "usage" and "--bogus" in as_json.json()["message"]
    missing = fm("hold", "set", "--subject", "s1", "--json")  # --reason is required
    assert missing.code == 2 and "--reason" in missing.json()["message"]


def test_unknown_id_is_refused_with_2(fm: Fm) -> None:
    ran = fm("status", "f" * 32, "--json")
    assert ran.code == 2 and ran.json() == {"error": "not_found", "message": "no such job"}
    plain = fm("status", "f" * 32)
    assert plain.code == 2 and plain.stdout == "" and "error: not_found" in plain.stderr


def test_a_database_that_cannot_be_reached_exits_4(fm: Fm) -> None:
    url = f"postgresql://fm:{SECRET}@127.0.0.1:1/nowhere"
    ran = fm("status", "f" * 32, "--json", env={"FACEMEDIA_DATABASE_URL": url})
    assert ran.code == 4, (ran.stdout, ran.stderr)
    assert ran.json()["error"] == "unreachable"
    assert SECRET not in ran.stdout + ran.stderr


# ----- configuration mistakes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        (
            "FACEMEDIA_BROKR_URL",
            "unknown setting FACEMEDIA_BROKR_URL; did you mean FACEMEDIA_BROKER_URL?",
        ),
        (
            "FACEMEDIA_COLOUR_SCHEME",
            "unknown setting FACEMEDIA_COLOUR_SCHEME (see config/default.toml",
        ),
        ("FACEMEDIA_LONG", "unknown setting FACEMEDIA_LONG (see"),
    ],
)
def test_unknown_variables_are_refused_by_name_never_by_value(
    fm: Fm, tmp_path: Path, variable: str, expected: str
) -> None:
    for args in (("status", "x"), ("status", "x", "--json"), ("doctor",)):
        ran = fm(*args, env={variable: f"redis://u:{SECRET}@h/0"})
        assert ran.code == 2, (args, ran.stdout, ran.stderr)
        assert expected in ran.stdout + ran.stderr
        assert SECRET not in ran.stdout + ran.stderr
    assert not (tmp_path / "var").exists()  # nothing was opened with half a configuration


def test_test_harness_variables_are_not_settings(fm: Fm) -> None:
    ran = fm("status", "f" * 32, "--json", env={"FACEMEDIA_TEST_ANYTHING": "1"})
    assert ran.code == 2 and ran.json()["error"] == "not_found"


def test_a_missing_config_file_is_refused(fm: Fm, tmp_path: Path) -> None:
    missing = tmp_path / f"{SECRET}.toml"
    ran = fm("status", "x", "--json", env={"FACEMEDIA_CONFIG": str(missing)})
    assert ran.code == 2
    assert ran.json() == {
        "error": "invalid_settings",
        "message": "FACEMEDIA_CONFIG names a file that does not exist",
    }
    assert SECRET not in ran.stdout + ran.stderr


# ----- every option explained; run takes what submit takes ------------------------------------


def _commands(command: Any, path: str = "facemedia") -> Iterator[tuple[str, Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    import typer.main

    from worker.cli import app

    missing = []
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            if param.name == "help":
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path}: {param.name}")
    assert missing == []


def test_run_takes_every_flag_submit_takes() -> None:
    import typer.main

    from worker.cli import app

    group: Any = typer.main.get_command(app)
    flags = {
        name: {opt for p in group.commands[name].params for opt in getattr(p, "opts", [])}
        for name in ("run", "submit")
    }
    assert flags["submit"] <= flags["run"], flags["submit"] - flags["run"]
    for flag in ("--attr", "--research-consent", "--minor", "--guardian-consent"):
        assert flag in flags["run"]


# ----- jobs: exit codes, quiet by default, status fields, --attr ----------------------------


def test_run_exit_codes_quiet_output_and_status_fields(fm: Fm, photo: Path, tmp_path: Path) -> None:
    from worker.jobs.reads import JOB_STATUS_FIELDS

    ran = fm("run", str(photo), "--json")
    assert ran.code == 0, ran.stderr
    assert ran.stderr == ""  # quiet by default: no INFO lines
    status = ran.json()
    assert set(JOB_STATUS_FIELDS) <= set(status)
    assert status["status"] == "succeeded" and status["faces"] == 1
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]
    assert 0 <= status["duration_s"] < 300

    again = fm("status", status["job_id"], "--json").json()
    assert {k: again[k] for k in JOB_STATUS_FIELDS} == {k: status[k] for k in JOB_STATUS_FIELDS}

    verbose = fm("-v", "run", str(photo), "--json")
    assert verbose.code == 0
    events = [json.loads(line)["event"] for line in verbose.stderr.splitlines()]
    assert "job.submitted" in events and "job.succeeded" in events

    bad = tmp_path / "not-media.jpg"
    bad.write_bytes(b"\x00" * 64)
    failed = fm("run", str(bad), "--json")
    assert failed.code == 1  # the job ran and failed
    assert (failed.json()["status"], failed.json()["error_code"]) == (
        "failed",
        "unsupported_format",
    )
    assert fm("run", str(tmp_path / "nope.jpg"), "--json").json()["error"] == "not_found"


def test_status_shows_media_kind_frames_and_effect_chain(fm: Fm, photo: Path) -> None:
    chain = '{"effects":[{"effect":"beautify","smooth":0.5},{"effect":"sticker","name":"glasses"}]}'
    ran = fm("run", str(photo), "--job", "ar", "--params", chain, "--json")
    assert ran.code == 0, ran.stdout + ran.stderr
    status = ran.json()
    assert status["media_kind"] == "image" and status["frames"] == 1
    assert status["effects"] == ["beautify", "sticker"]
    table = fm("status", status["job_id"])
    for label in ("created_at", "duration_s", "media_kind", "frames", "effects", "beautify"):
        assert label in table.stdout


@pytest.mark.parametrize(
    ("attr", "accepted"),
    [
        ("age=abc", "a whole number of years from 0 to 130"),
        ("age=300", "a whole number of years from 0 to 130"),
        ("region=Atlantis", "a province-level division"),
        ("height=180", "accepted are age, region, device"),
        ("age", "KEY=VALUE"),
    ],
)
def test_malformed_attributes_are_refused_with_the_accepted_forms(
    fm: Fm, photo: Path, attr: str, accepted: str
) -> None:
    for command in ("run", "submit"):
        ran = fm(command, str(photo), "--attr", attr, "--research-consent", "--json")
        assert ran.code == 2, (command, attr, ran.stdout)
        error = ran.json()
        assert error["error"] == "bad_params" and accepted in error["message"]
        value = attr.partition("=")[2]
        assert not value or value not in error["message"]  # the value is never echoed


def test_an_unknown_device_model_is_kept_as_other(fm: Fm, photo: Path, tmp_path: Path) -> None:
    ran = fm(
        "submit",
        str(photo),
        "--attr",
        "device=Zorblax Quantum 9",
        "--attr",
        "age=34",
        "--attr",
        "region=Hangzhou",
        "--research-consent",
        "--json",
    )
    assert ran.code == 0, ran.stdout + ran.stderr
    job_id = ran.json()["job_id"]
    import sqlite3

    with sqlite3.connect(tmp_path / "var" / "ledger.db") as db:
        row = db.execute("SELECT quasi FROM jobs WHERE id = ?", (job_id,)).fetchone()
    quasi = json.loads(row[0]) if row and row[0] else None
    if quasi is not None:  # kept only until the job ends (then on its research sample, if any)
        assert quasi["device_family"] == "other" and quasi["age_band"] == "30-39"


# ----- --json everywhere --------------------------------------------------------------------


def test_crypto_and_db_upgrade_speak_json(fm: Fm, tmp_path: Path) -> None:
    plain, sealed, back = tmp_path / "p.bin", tmp_path / "p.fme", tmp_path / "p.out"
    plain.write_bytes(b"bytes " * 1000)
    enc = fm("crypto", "encrypt", str(plain), str(sealed), "--subject", "s1", "--json")
    assert enc.code == 0 and enc.json()["path"] == str(sealed)
    dec = fm("crypto", "decrypt", str(sealed), str(back), "--subject", "s1", "--json")
    assert dec.code == 0 and dec.json()["bytes"] == plain.stat().st_size
    wrong = fm("crypto", "decrypt", str(sealed), str(back), "--subject", "s2", "--json")
    assert wrong.code == 1 and wrong.json()["error"] == "decryption_failed"
    gone = fm("crypto", "encrypt", str(tmp_path / "nope"), str(sealed), "--subject", "s1", "--json")
    assert gone.code == 2 and gone.json()["error"] == "not_found"
    upgraded = fm("db", "upgrade", "--json")
    assert upgraded.code == 0 and upgraded.json()["revision"]
