"""PTA (photo to avatar): a versioned JSON avatar spec per face and a cartoon render."""

from pipelines.pta.avatar import (
    SCHEMA_ID,
    SCHEMA_VERSION,
    AvatarConfig,
    AvatarResult,
    make_avatars,
)
from pipelines.pta.render import RenderParams
from pipelines.pta.schema import AVATAR_SCHEMA

__all__ = [
    "AVATAR_SCHEMA",
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "AvatarConfig",
    "AvatarResult",
    "RenderParams",
    "make_avatars",
]
