"""DELF-style static check: every table and object class has a retention policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.ledger.models import Base
from worker.retention.policy import OBJECT_CLASSES, TABLE_POLICY, parse_ttl
from worker.settings import load_settings


def test_every_ledger_table_has_a_policy() -> None:
    tables = set(Base.metadata.tables) | {"alembic_version"}
    assert tables == set(TABLE_POLICY), tables ^ set(TABLE_POLICY)


def test_every_object_class_has_a_ttl() -> None:
    retention = load_settings().retention
    for object_class in OBJECT_CLASSES:
        ttl = retention.ttl(object_class)  # raises on a class with no setting
        assert ttl is None or ttl > timedelta(0)
    assert retention.ttl("original") == timedelta(hours=24)
    assert retention.ttl("output") == timedelta(days=7)
    assert retention.ttl("research") == timedelta(days=3 * 365)
    assert retention.ttl("release") is None


def test_object_classes_in_code_are_covered() -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "worker"
    used = set()
    for path in root.rglob("*.py"):
        used |= set(re.findall(r'object_class="([a-z_]+)"', path.read_text()))
    assert used <= set(OBJECT_CLASSES), used - set(OBJECT_CLASSES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", timedelta(minutes=30)), ("24h", timedelta(hours=24)), ("until_revoked", None)],
)
def test_parse_ttl(text: str, expected: timedelta | None) -> None:
    assert parse_ttl(text) == expected


def test_parse_ttl_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        parse_ttl("soon")
