"""Quasi-identifiers are generalized at capture; the raw values are kept nowhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from worker.jobs.errors import SubmitRefused
from worker.ledger.models import Job, ResearchSample
from worker.ledger.subjects import Consent
from worker.research.quasi import (
    PROVINCES,
    QuasiIdentifiers,
    UnknownAttribute,
    generalize,
    generalize_age,
    generalize_device,
    generalize_region,
)


@pytest.mark.parametrize(
    ("age", "band"),
    [
        ("34", "30-39"),
        ("0", "0-9"),
        ("9", "0-9"),
        ("10", "10-19"),
        (99, "90-99"),
        ("130", "130-139"),
    ],
)
def test_age_bands(age: Any, band: str) -> None:
    assert generalize_age(age) == band


@pytest.mark.parametrize("age", ["", "-3", "34.5", "thirty", "131", "1000", "3 4"])
def test_bad_ages_are_dropped(age: str) -> None:
    assert generalize_age(age) is None


@pytest.mark.parametrize(
    ("region", "province"),
    [
        ("Zhejiang", "Zhejiang"),
        ("zhejiang", "Zhejiang"),
        ("浙江", "Zhejiang"),
        ("浙江省", "Zhejiang"),
        ("Zhejiang Sheng", "Zhejiang"),
        ("Zhejiang Province", "Zhejiang"),
        ("Hangzhou", "Zhejiang"),
        ("杭州", "Zhejiang"),
        ("Shanghai Shi", "Shanghai"),
        ("上海市", "Shanghai"),
        ("Shaanxi", "Shaanxi"),
        ("Shanxi", "Shanxi"),
        ("Inner Mongolia", "Nei Mongol"),
        ("内蒙古自治区", "Nei Mongol"),
        ("新疆维吾尔自治区", "Xinjiang"),
        ("广西壮族自治区", "Guangxi"),
        ("Tibet", "Xizang"),
        ("Hong Kong SAR", "Hong Kong"),
        ("澳门特别行政区", "Macao"),
        ("Xi'an", "Shaanxi"),
        ("Shenzhen", "Guangdong"),
    ],
)
def test_regions_become_provinces(region: str, province: str) -> None:
    assert generalize_region(region) == province


@pytest.mark.parametrize(
    "region",
    ["", "Atlantis", "Fuzhou", "Xihu District, Hangzhou, 310000", "30.25,120.16", "x" * 80],
)
def test_anything_else_is_dropped_never_kept_raw(region: str) -> None:
    assert generalize_region(region) is None


def test_the_34_divisions_each_resolve_from_pinyin_and_chinese() -> None:
    assert len(PROVINCES) == 34
    for name, chinese in PROVINCES.items():
        assert generalize_region(name) == name
        assert generalize_region(chinese) == name


@pytest.mark.parametrize(
    ("device", "family"),
    [
        ("iPhone14,2", "ios"),
        ("iPad13,4", "ios"),
        ("iOS 17.1", "ios"),
        ("SM-G991B", "android"),
        ("Pixel 8 Pro", "android"),
        ("Android 14; Redmi Note 12", "android"),
        ("HarmonyOS 4.0", "harmonyos"),
        ("Windows 11", "windows"),
        ("Macintosh; Intel Mac OS X 14_1", "macos"),
        ("Ubuntu 22.04", "linux"),
        ("PlayStation 5", "other"),
        ("a1b2c3d4-e5f6-7890-abcd-ef1234567890", "other"),
    ],
)
def test_device_families(device: str, family: str) -> None:
    assert generalize_device(device) == family


def test_generalize_and_round_trip() -> None:
    q = generalize(
        {"age": "34", "region": "Zhejiang", "device": "iPhone14,2"},
        datetime(2026, 3, 9, 23, 59, tzinfo=UTC),
    )
    assert q == QuasiIdentifiers("30-39", "Zhejiang", "ios", "2026-03")
    assert QuasiIdentifiers.from_json(q.to_json()) == q
    assert json.dumps(q.to_json())  # JSON-ready
    with pytest.raises(UnknownAttribute, match="imei"):
        generalize({"imei": "356938035643809"})


def _research_container(make_settings: Any) -> Any:
    from worker.bootstrap import Container, set_container

    container = Container(make_settings(research={"sample_rate": 1.0}))
    set_container(container)
    return container


@pytest.fixture
def research(make_settings: Any) -> Iterator[Any]:
    """An embedded container that samples every consenting job."""
    from worker.bootstrap import set_container

    container = _research_container(make_settings)
    try:
        yield container
    finally:
        container.close()
        set_container(None)


def test_submit_generalizes_and_raw_values_are_nowhere(
    research: Any, flipped_astronaut: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    from worker.logs import configure_logging

    configure_logging("DEBUG")
    raw = {"age": "34", "region": "Zhejiang Sheng", "device": "iPhone14,2"}
    job_id = research.client.submit(
        flipped_astronaut,
        "detect",
        subject_id="quasi-subject",
        consent=Consent(research=True),
        attributes=raw,
    )
    assert research.service.status(job_id)["status"] == "succeeded"
    with research.db.session() as s:
        sample = s.scalars(select(ResearchSample)).one()
        job = s.get(Job, job_id)
        assert job is not None
        month = f"{job.created_at.year:04d}-{job.created_at.month:02d}"
        assert sample.quasi == {
            "age_band": "30-39",
            "region": "Zhejiang",
            "device_family": "ios",
            "capture_month": month,
        }
        assert job.quasi is None  # the job's copy goes when the job ends
    logs = capfd.readouterr()
    home = research.settings.home_dir
    blobs = [p.read_bytes() for p in home.rglob("*") if p.is_file()]
    for needle in (b"iPhone14,2", b"iPhone", b"Zhejiang Sheng", b'"34"'):
        for blob in [*blobs, (logs.out + logs.err).encode()]:
            assert needle not in blob


def test_without_consent_no_quasi_is_recorded(research: Any, flipped_astronaut: bytes) -> None:
    research.client.enqueue = lambda job_id: None  # keep the job queued to look at it
    job_id = research.client.submit(
        flipped_astronaut, "detect", subject_id="q-none", attributes={"age": "41"}
    )
    with research.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.quasi is None


def test_unknown_attribute_is_refused_before_anything_is_kept(
    research: Any, flipped_astronaut: bytes
) -> None:
    with pytest.raises(SubmitRefused) as info:
        research.client.submit(
            flipped_astronaut,
            "detect",
            subject_id="q-bad",
            consent=Consent(research=True),
            attributes={"ip": "10.0.0.1"},
        )
    assert info.value.code == "bad_params"
    with research.db.session() as s:
        assert s.scalars(select(Job)).first() is None
    assert list(research.store.keys()) == []


def test_cli_submit_attr_flags(research: Any, flipped_astronaut: bytes, tmp_path: Path) -> None:
    from worker.cli import app

    photo = tmp_path / "in.jpg"
    photo.write_bytes(flipped_astronaut)
    runner = CliRunner()
    bad = runner.invoke(app, ["submit", str(photo), "--attr", "imei=356938035643809"])
    assert bad.exit_code == 2
    assert "unknown key 'imei'" in bad.output and "356938035643809" not in bad.output
    assert runner.invoke(app, ["submit", str(photo), "--attr", "age"]).exit_code == 2
    res = runner.invoke(
        app,
        [
            "submit",
            str(photo),
            "--subject",
            "cli-quasi",
            "--research-consent",
            "--minor",
            "--guardian-consent",
            "--attr",
            "age=15",
            "--attr",
            "region=浙江",
            "--attr",
            "device=SM-G991B",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    job_id = json.loads(res.stdout.strip().splitlines()[-1])["job_id"]
    with research.db.session() as s:
        sample = s.scalars(select(ResearchSample).where(ResearchSample.source_job_id == job_id))
        quasi = sample.one().quasi
    assert (quasi["age_band"], quasi["region"], quasi["device_family"]) == (
        "10-19",
        "Zhejiang",
        "android",
    )


@pytest.fixture(scope="module")
def flipped_astronaut() -> bytes:
    """scikit-image's astronaut, mirrored (the unmirrored photo is a gate false positive)."""
    import cv2
    import numpy as np
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr[:, ::-1]))
    assert ok
    return bytes(buf)
