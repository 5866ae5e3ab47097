"""The log filter keeps ids and drops anything personal."""

from __future__ import annotations

from worker.logs import REDACTED, drop_personal


def test_unknown_keys_are_dropped_and_ids_checked() -> None:
    event = drop_personal(
        None,
        "info",
        {
            "event": "job.submitted",
            "job_id": "0123456789abcdef0123456789abcdef",
            "subject_id": "alice",
            "filename": "IMG_0001.JPG",
            "object_id": "alice's photo",
            "ip": "10.0.0.8",
        },
    )
    assert event == {
        "event": "job.submitted",
        "job_id": "0123456789abcdef0123456789abcdef",
        "object_id": REDACTED,
    }


def test_personal_values_are_redacted_in_allowed_keys() -> None:
    event = drop_personal(
        None,
        "info",
        {"event": "x", "reason": "upload from 192.168.1.20 of selfie.heic by bob@example.com"},
    )
    assert "192.168" not in event["reason"]
    assert "selfie" not in event["reason"]
    assert "bob@" not in event["reason"]
