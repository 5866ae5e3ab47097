"""Release cryptography: the keyring context of release keys, grants to researchers'
X25519 keys, and Ed25519 signatures (the service's signing key itself is :mod:`.signing`).
Used by both sides, so it imports no ledger.

* **Release objects** are sealed under the release's data key by
  :class:`worker.objects.release_cipher.ReleaseCipher` (the envelope format v1 unchanged).
* **Grants**: ``X25519(ephemeral, researcher) → HKDF-SHA256(salt = eph_pub ‖ researcher_pub,
  info = "facemedia release grant v1") → AES-256-GCM(data key, AD = release id)``.
* **Signatures**: Ed25519 over the exact bytes of ``index.json`` / ``revocations.json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.crypto.secret import SecretKey

from .errors import ReleaseError

__all__ = [
    "GRANT_INFO",
    "fingerprint",
    "load_private_key",
    "load_public_key",
    "load_signer",
    "open_grant",
    "seal_grant",
    "verify_signature",
    "write_keypair",
]

GRANT_INFO = b"facemedia release grant v1"


def release_key_context(release_id: str, which: str) -> dict[str, str]:
    """The keyring context a release key is wrapped under (binds it to the release)."""
    return {"purpose": f"release-{which}-key", "release_id": release_id}


# ----- grants ------------------------------------------------------------------------------


def _raw_public(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(pub: X25519PublicKey | Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex (names a grant; shown to people)."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _grant_key(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(SHA256(), 32, salt=eph_pub + recipient_pub, info=GRANT_INFO).derive(shared)


def seal_grant(release_id: str, data_key: SecretKey, recipient: X25519PublicKey) -> dict[str, Any]:
    """Wrap the release data key to a researcher's public key (JSON-ready document)."""
    eph = X25519PrivateKey.generate()
    eph_pub = _raw_public(eph.public_key())
    rec_pub = _raw_public(recipient)
    key = _grant_key(eph.exchange(recipient), eph_pub, rec_pub)
    nonce = os.urandom(12)
    wrapped = AESGCM(key).encrypt(nonce, data_key.raw(), release_id.encode())
    b64 = base64.b64encode
    return {
        "format": "facemedia.release.grant",
        "version": 1,
        "release_id": release_id,
        "fingerprint": fingerprint(recipient),
        "algorithm": "X25519-HKDF-SHA256-AES-256-GCM",
        "ephemeral_public": b64(eph_pub).decode(),
        "nonce": b64(nonce).decode(),
        "wrapped_key": b64(wrapped).decode(),
    }


def open_grant(release_id: str, grant: Mapping[str, Any], private: X25519PrivateKey) -> SecretKey:
    """Unwrap the release data key with the researcher's private key."""
    try:
        if grant.get("release_id") != release_id:
            raise ValueError("grant is for another release")
        eph_pub = base64.b64decode(grant["ephemeral_public"])
        nonce = base64.b64decode(grant["nonce"])
        wrapped = base64.b64decode(grant["wrapped_key"])
        rec_pub = _raw_public(private.public_key())
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        key = _grant_key(shared, eph_pub, rec_pub)
        raw = AESGCM(key).decrypt(nonce, wrapped, release_id.encode())
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(
            "grant_invalid", "the release grant does not open with this private key"
        ) from exc
    return SecretKey(raw)


def write_keypair(private_path: Any, public_path: Any) -> str:
    """Write a new X25519 key pair (private PEM 0600, public PEM); return the fingerprint."""
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = key.public_key()
    with open(public_path, "wb") as fh:
        fh.write(
            pub.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return fingerprint(pub)


def load_private_key(data: bytes) -> X25519PrivateKey:
    """A researcher's X25519 private key from PEM."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ReleaseError("bad_request", "the key file is not a PEM private key") from exc
    if not isinstance(key, X25519PrivateKey):
        raise ReleaseError("bad_request", "the key file is not an X25519 private key")
    return key


def load_public_key(data: bytes) -> X25519PublicKey:
    """A researcher's X25519 public key from PEM (or 32 raw bytes)."""
    try:
        if len(data) == 32:
            return X25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ReleaseError("bad_request", "the public key file is not a PEM public key") from exc
    if not isinstance(key, X25519PublicKey):
        raise ReleaseError("bad_request", "the public key file is not an X25519 public key")
    return key


# ----- signatures --------------------------------------------------------------------------


def load_signer(data: bytes) -> Ed25519PublicKey:
    """The service's Ed25519 public key from PEM."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ReleaseError("bad_signature", "the signer file is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ReleaseError("bad_signature", "the signer file is not an Ed25519 public key")
    return key


def signer_pem(pub: Ed25519PublicKey) -> bytes:
    """PEM (SubjectPublicKeyInfo) of a signing public key."""
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_signature(pub: Ed25519PublicKey, data: bytes, signature: bytes, what: str) -> None:
    """Raise ``bad_signature`` unless ``signature`` is ``pub``'s over ``data``."""
    try:
        pub.verify(signature, data)
    except InvalidSignature:
        raise ReleaseError("bad_signature", f"the signature of {what} does not verify") from None


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed: sorted keys, no spaces, UTF-8, trailing newline."""
    return (
        json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    ).encode()
