"""The settings model, config/default.toml and the production example agree."""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import DEFAULT_CONFIG, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
FILE_ONLY = {"config"}  # FACEMEDIA_CONFIG names the file itself


def _fields() -> set[str]:
    return set(Settings.model_fields) - FILE_ONLY


def test_default_toml_covers_every_setting_with_a_comment() -> None:
    text = DEFAULT_CONFIG.read_text()
    values = tomllib.loads(text)
    assert set(values) == _fields()
    lines = text.splitlines()
    names = [n for n, v in values.items() if not isinstance(v, dict)]
    names += [f"{t}.{n}" for t, v in values.items() if isinstance(v, dict) for n in v]
    for name in names:
        short = name.rsplit(".", 1)[-1]
        pattern = rf"^{short}\s*=" if "." in name else rf"^{name}\s*="
        if "." in name:
            table = name.split(".", 1)[0]
            start = lines.index(f"[{table}]")
            index = next(i for i, line in enumerate(lines) if i > start and re.match(pattern, line))
        else:
            index = next(i for i, line in enumerate(lines) if re.match(pattern, line))
        assert lines[index - 1].startswith("#"), f"{name} has no comment above it"
    for table in (n for n, v in values.items() if isinstance(v, dict)):
        assert lines[lines.index(f"[{table}]") - 1].startswith("#"), f"[{table}] has no comment"


def test_default_toml_matches_the_model_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("FACEMEDIA_"):
            monkeypatch.delenv(name)
    from_file = tomllib.loads(DEFAULT_CONFIG.read_text())
    for name, value in from_file.items():
        default = Settings.model_fields[name].get_default(call_default_factory=True)
        if isinstance(value, dict):
            assert default.model_dump() == value, name
            continue
        assert (Path(value) if isinstance(default, Path) else value) == default, name


def test_production_example_names_only_real_settings() -> None:
    example = tomllib.loads((ROOT / "config" / "production.example.toml").read_text())
    assert set(example) <= _fields()
    assert example["database_url"].startswith("postgresql")
    assert example["store_url"].startswith("s3://")


def test_environment_overrides_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('s3_region = "cn-northwest-1"\nlease_seconds = 12\n')
    monkeypatch.setenv("FACEMEDIA_CONFIG", str(extra))
    monkeypatch.setenv("FACEMEDIA_LEASE_SECONDS", "20")
    monkeypatch.setenv("FACEMEDIA_ALLOWED_REGIONS", "cn-north-1, cn-northwest-1")
    settings = load_settings()
    assert settings.s3_region == "cn-northwest-1"  # from the extra file
    assert settings.lease_seconds == 20  # env beats the file
    assert settings.allowed_regions == ["cn-north-1", "cn-northwest-1"]
    monkeypatch.setenv("FACEMEDIA_RETENTION__OUTPUTS", "3d")
    assert load_settings().retention.ttl("output") == timedelta(days=3)
    assert load_settings().retention.ttl("release") is None


def test_derived_defaults(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert settings.effective_database_url == f"sqlite:///{tmp_path}/ledger.db"
    assert settings.effective_store_url == f"file://{tmp_path}/store"
    assert settings.eager


@pytest.mark.parametrize(
    "bad",
    [
        {"task_time_limit": 300, "task_soft_time_limit": 300},
        {"task_time_limit": 1000, "visibility_timeout": 900},
        {"segment_size": 10},
        {"no_such_setting": 1},
        {"retention": {"outputs": "seven days"}},
    ],
)
def test_unsafe_or_unknown_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        load_settings(**bad)


def test_unknown_variables_and_a_missing_file_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from worker.settings import SETTINGS_ERRORS, SettingsError, describe_settings_error

    monkeypatch.setenv("FACEMEDIA_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError) as missing:
        load_settings()
    assert describe_settings_error(missing.value) == [
        "FACEMEDIA_CONFIG names a file that does not exist"
    ]
    monkeypatch.delenv("FACEMEDIA_CONFIG")
    monkeypatch.setenv("FACEMEDIA_WIBBLE", "x")
    monkeypatch.setenv("FACEMEDIA_TEST_WHATEVER", "x")  # the harness's: not a setting
    with pytest.raises(SETTINGS_ERRORS) as unknown:
        load_settings()
    assert describe_settings_error(unknown.value) == [
        "unknown setting FACEMEDIA_WIBBLE (see config/default.toml for every setting)"
    ]
