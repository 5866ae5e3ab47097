"""PTA (photo to avatar): measured avatar parameters (``avatar.json``) and what is drawn from them.

Importing this package is light (no OpenCV): the spec, its schema and the renderers load only
numpy and, when drawing a PNG, Pillow. Measuring a photo lives in :mod:`pipelines.pta.avatar`.
"""

from pipelines.pta.schema import AVATAR_SCHEMA
from pipelines.pta.spec import SCHEMA_ID, SCHEMA_VERSION, STYLES, AvatarSpec

__all__ = ["AVATAR_SCHEMA", "SCHEMA_ID", "SCHEMA_VERSION", "STYLES", "AvatarSpec"]
