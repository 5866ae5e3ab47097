"""The service's Ed25519 signing key (the release index and revocation lists): generated once,
stored wrapped under the keyring in the ledger's ``service_keys``, re-wrapped after a KEK
rotation. Service side only; the researcher's side verifies with :mod:`.keys`."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from worker.crypto.keyring import Keyring
from worker.ledger.db import Database
from worker.ledger.service_keys import ServiceSecret

from .keys import signer_pem

__all__ = ["SIGNING_KEY_NAME", "SigningKeys"]

SIGNING_KEY_NAME = "release-signing"


def _new_signing_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


class SigningKeys:
    """The service's Ed25519 signing key: generated once, stored wrapped in ``service_keys``."""

    def __init__(self, db: Database, keyring: Keyring) -> None:
        self._secret = ServiceSecret(db, keyring, SIGNING_KEY_NAME, _new_signing_key)
        self._key: Ed25519PrivateKey | None = None

    def _load(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = Ed25519PrivateKey.from_private_bytes(self._secret.get().raw())
        return self._key

    def rewrap(self) -> bool:
        """Re-wrap the signing key under the keyring's current KEK (after a rotation)."""
        return self._secret.rewrap()

    def public(self) -> Ed25519PublicKey:
        """The public half (published next to each release)."""
        return self._load().public_key()

    def public_pem(self) -> bytes:
        """The public key as PEM."""
        return signer_pem(self.public())

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over ``data``."""
        return self._load().sign(data)

    def __repr__(self) -> str:
        return "SigningKeys(<wrapped in service_keys>)"
