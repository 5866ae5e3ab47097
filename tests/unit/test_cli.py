"""The facemedia command: crypto round trip, failures leave nothing, key rotation, JSON keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from worker.cli import app

runner = CliRunner()


def _json(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_crypto_round_trip_and_failures(embedded: Any, tmp_path: Path) -> None:
    src = tmp_path / "plain.bin"
    src.write_bytes(b"secret face bytes " * 5000)
    enc, dec = tmp_path / "c.fme", tmp_path / "p.out"
    ctx = ["--context", "object_key=originals/abc", "--context", "job_id=abc"]
    args = ["crypto", "encrypt", str(src), str(enc), "--subject", "s1", *ctx]
    assert runner.invoke(app, args).exit_code == 0
    assert b"secret face" not in enc.read_bytes()
    args = ["crypto", "decrypt", str(enc), str(dec), "--subject", "s1", *ctx]
    assert runner.invoke(app, args).exit_code == 0
    assert dec.read_bytes() == src.read_bytes()

    dec.unlink()
    wrong_ctx = ["--context", "object_key=originals/other", "--context", "job_id=abc"]
    bad = runner.invoke(
        app, ["crypto", "decrypt", str(enc), str(dec), "--subject", "s1", *wrong_ctx]
    )
    assert bad.exit_code != 0 and "decryption failed" in bad.output
    assert not dec.exists()
    bad = runner.invoke(app, ["crypto", "decrypt", str(enc), str(dec), "--subject", "s2", *ctx])
    assert bad.exit_code != 0 and not dec.exists()
    tampered = tmp_path / "t.fme"
    blob = bytearray(enc.read_bytes())
    blob[-100] ^= 1
    tampered.write_bytes(bytes(blob))
    bad = runner.invoke(
        app, ["crypto", "decrypt", str(tampered), str(dec), "--subject", "s1", *ctx]
    )
    assert bad.exit_code != 0 and not dec.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fm-")] == []


def test_rotation_keeps_old_outputs_readable(embedded: Any, astronaut_jpeg: bytes) -> None:
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="s-rot")
    before = embedded.client.outputs(job_id)
    old = embedded.keyring.current().version
    rotated = _json(runner.invoke(app, ["keys", "rotate", "--json"]))
    assert rotated["rewrapped"] >= 1 and rotated["kek_version"] != old
    embedded.keyring.retire(old)
    assert embedded.client.outputs(job_id) == before
    # the pseudonym key was re-wrapped too: the same subject maps to the same row
    assert embedded.subjects.find("s-rot") is not None


def test_run_status_and_result_json(embedded: Any, astronaut_jpeg: bytes, tmp_path: Path) -> None:
    photo = tmp_path / "in.jpg"
    photo.write_bytes(astronaut_jpeg)
    ran = _json(runner.invoke(app, ["run", str(photo), "--job", "detect", "--json"]))
    for key in ("job_id", "status", "error_code", "faces", "outputs", "original_deleted"):
        assert key in ran
    assert ran["status"] == "succeeded" and ran["faces"] == 1 and ran["original_deleted"]
    status = _json(runner.invoke(app, ["status", ran["job_id"], "--json"]))
    assert status["status"] == "succeeded"
    out = tmp_path / "out"
    got = _json(runner.invoke(app, ["result", ran["job_id"], "--out", str(out), "--json"]))
    assert json.loads(Path(got["written"][0]).read_text())["faces"]
    assert _json(runner.invoke(app, ["audit", "verify", "--json"]))["ok"] is True


def test_errors_are_one_line_and_nonzero(embedded: Any, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["run", str(tmp_path / "nope.jpg")])
    assert missing.exit_code == 2 and "not found" in missing.output
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\x00" * 10)
    refused = runner.invoke(app, ["run", str(bad), "--params", "[1]"])
    assert refused.exit_code == 2 and "JSON object" in refused.output
    assert runner.invoke(app, ["status", "f" * 32]).exit_code == 2
    ran = runner.invoke(app, ["run", str(bad), "--json"])
    assert ran.exit_code == 1, ran.output  # the job ran and failed
    failed = json.loads(ran.stdout.strip().splitlines()[-1])
    assert (failed["status"], failed["error_code"]) == ("failed", "unsupported_format")
