"""The one exception root of the release package, with stable codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ReleaseError"]

CODES = frozenset(
    {
        "bad_request",  # invalid name, k, key file or arguments
        "exists",  # a release with this name already exists
        "not_found",  # no such release (or nothing published under that id)
        "no_eligible_samples",  # nothing left after consent, erasure and withdrawal checks
        "k_unreachable",  # every sample would have to be suppressed to reach k
        "not_published",  # the release is still building (or failed)
        "no_grant",  # no grant for this researcher key
        "grant_invalid",  # the grant does not open with this private key
        "bad_signature",  # a signature does not verify, or another signer than the pinned one
        "checksum_mismatch",  # a file's bytes differ from the signed index
        "malformed_release",  # a signed index, manifest or revocation list that does not parse
        # or names an invalid file
        "missing_file",  # a file the index lists is absent
        "decrypt_failed",  # a shard does not decrypt under the release key
        "untrusted_signer",  # no signer pinned (--signer, or `research trust`): refused
        "rollback",  # a revocation list older than the newest seen for this release
        "revoked_present",  # a pulled file still holds a sample the signed list revokes
    }
)


class ReleaseError(Exception):
    """A release operation failed; ``code`` is stable (see :data:`CODES`), ``str()`` is for
    people and never holds personal data."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        path: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if code not in CODES:
            raise ValueError(f"unknown release error code {code!r}")
        super().__init__(message)
        self.code = code
        self.path = path
        self.details: dict[str, Any] = dict(details or {})

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view (``path`` names the file for checksum failures; ``details`` adds
        figures, e.g. the loss funnel of ``no_eligible_samples``)."""
        return {"error": self.code, "message": str(self), "path": self.path} | self.details
