"""Research dataset releases: k-anonymous, per-release pseudonyms, encrypted WebDataset shards,
signed index, grants to researchers' X25519 keys, signed revocation lists; and the researcher's
pull and verify. Nothing is done at import."""

from .errors import ReleaseError
from .service import ReleaseConfig, ReleaseRequest, ReleaseResult, ReleaseService

__all__ = ["ReleaseConfig", "ReleaseError", "ReleaseRequest", "ReleaseResult", "ReleaseService"]
