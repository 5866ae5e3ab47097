"""One typed settings object for the whole worker.

Sources, highest precedence first: ``FACEMEDIA_*`` environment variables, the TOML file named by
``FACEMEDIA_CONFIG``, ``config/default.toml``. Nothing is read at import time: call
:func:`load_settings`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class RetentionSettings(BaseModel):
    """Time to live per object class (``30m``, ``24h``, ``7d``, ``3y`` or ``until_revoked``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    originals: str = "24h"
    outputs: str = "7d"
    research: str = "3y"
    staging: str = "24h"
    releases: str = "until_revoked"
    audit: str = "10y"

    @field_validator("*")
    @classmethod
    def _valid(cls, value: str) -> str:
        from worker.retention.policy import parse_ttl

        parse_ttl(value)
        return value

    def ttl(self, object_class: str) -> timedelta | None:
        """The TTL of an object class; None means kept until revoked."""
        from worker.retention.policy import parse_ttl

        field = {"original": "originals", "output": "outputs", "release": "releases"}.get(
            object_class, object_class
        )
        return parse_ttl(str(getattr(self, field)))


class ResearchSettings(BaseModel):
    """Research sampling and dataset releases (see docs/PRIVACY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    operator: str = "mask"
    k_same_k: int = Field(default=5, ge=2, le=64)
    release_k: int = Field(default=5, ge=1)
    shard_samples: int = Field(default=256, ge=1)


class Settings(BaseSettings):
    """Every knob of the worker; see config/default.toml for what each one means."""

    model_config = SettingsConfigDict(
        env_prefix="FACEMEDIA_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    home: Path = Path("./var")
    broker_url: str = ""
    database_url: str = ""
    store_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "cn-north-1"
    allowed_regions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cn-north-1", "cn-northwest-1"]
    )
    keyring: str = "local"
    kms_endpoint_url: str = ""
    segment_size: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    detector_threshold: float = Field(default=0.5, gt=0, lt=1)
    detector_working_size: int = Field(default=640, ge=128)
    max_video_seconds: float = Field(default=60.0, gt=0)
    max_video_side: int = Field(default=1920, ge=16)
    max_video_short_side: int = Field(default=1080, ge=16)
    detect_every: int = Field(default=5, ge=1)
    task_time_limit: int = Field(default=300, gt=0)
    task_soft_time_limit: int = Field(default=270, gt=0)
    visibility_timeout: int = Field(default=900, gt=0)
    redis_restore_interval: int = Field(default=5, ge=1)
    amqp_quorum_queues: bool = True
    amqp_delivery_limit: int = Field(default=20, ge=1)
    lease_seconds: int = Field(default=15, ge=3)
    rescue_interval: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    max_deliveries: int = Field(default=5, ge=1)
    retention: RetentionSettings = Field(default_factory=lambda: RetentionSettings())
    research: ResearchSettings = Field(default_factory=lambda: ResearchSettings())
    sweep_batch: int = Field(default=1000, ge=1, le=1000)
    sweep_lock_seconds: int = Field(default=600, ge=10)
    orphan_grace: str = "24h"
    delete_verify: Literal["listing", "confirmations"] = "listing"
    log_level: str = "INFO"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    soft_shutdown_seconds: float = Field(default=60.0, ge=0)
    # Not in default.toml on purpose: the path of an extra TOML file (read by the source below).
    config: str = ""

    @field_validator("allowed_regions", mode="before")
    @classmethod
    def _split_regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("task_soft_time_limit")
    @classmethod
    def _soft_below_hard(cls, value: int, info: Any) -> int:
        hard = info.data.get("task_time_limit")
        if hard is not None and value >= hard:
            raise ValueError("task_soft_time_limit must be below task_time_limit")
        return value

    @field_validator("visibility_timeout")
    @classmethod
    def _visibility_above_limit(cls, value: int, info: Any) -> int:
        hard = info.data.get("task_time_limit")
        if hard is not None and value <= hard:
            raise ValueError(
                "visibility_timeout must exceed task_time_limit, or a long task runs twice"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files: list[Path] = [DEFAULT_CONFIG] if DEFAULT_CONFIG.exists() else []
        extra = os.environ.get("FACEMEDIA_CONFIG", "")
        if extra:
            files.append(Path(extra))
        # TomlConfigSettingsSource: later files win over earlier ones.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=files),
        )

    # ----- derived values -------------------------------------------------------------------

    @property
    def home_dir(self) -> Path:
        """The embedded state directory, absolute."""
        return self.home.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        """The ledger URL; SQLite under ``home`` when unset."""
        return self.database_url or f"sqlite:///{self.home_dir / 'ledger.db'}"

    @property
    def effective_store_url(self) -> str:
        """The store URL; a directory under ``home`` when unset."""
        return self.store_url or f"file://{self.home_dir / 'store'}"

    @property
    def eager(self) -> bool:
        """True when no broker is configured: tasks run in-process."""
        return not self.broker_url

    @property
    def store_scheme(self) -> str:
        """``file`` or ``s3``."""
        return urlparse(self.effective_store_url).scheme


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from their sources now; ``overrides`` win over everything."""
    return Settings(**overrides)
