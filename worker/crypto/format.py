"""The envelope format, version 1: header layout, key derivation and segment nonces.

Byte layout (all integers big-endian; see docs/ENCRYPTION.md for the full description)::

    magic "FMENC" (5) ‖ format version 0x01 (1) ‖ algorithm 0x01 (1) ‖ segment size u32 (4)
    ‖ u8 n ‖ subject key id (n, ASCII) ‖ u8 k ‖ keyring id (k, UTF-8)
    ‖ u16 v ‖ KEK version (v, UTF-8) ‖ salt (32) ‖ nonce prefix (7) ‖ wrap nonce (12)
    ‖ wrapped data key (48) ‖ key commitment (32)

then segments ``AES-256-GCM(content key, prefix ‖ u32 counter ‖ last flag, plaintext)``.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecryptError
from .keyring import KEY_SIZE

__all__ = [
    "ALGORITHM_ID",
    "COMMITMENT_SIZE",
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_SIZE",
    "NONCE_PREFIX_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "WRAPPED_DATA_KEY_SIZE",
    "WRAP_NONCE_SIZE",
    "Header",
    "check_commitment",
    "derive_keys",
    "encode_header_prefix",
    "parse_header",
    "segment_nonce",
]

MAGIC = b"FMENC"
FORMAT_VERSION = 1
ALGORITHM_ID = 1
"""AES-256-GCM segments, HKDF-SHA256 content key and commitment, STREAM nonces."""

DEFAULT_SEGMENT_SIZE = 64 * 1024
MAX_SEGMENT_SIZE = 16 * 1024 * 1024
MAX_SEGMENTS = 1 << 32
TAG_SIZE = 16
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
WRAP_NONCE_SIZE = 12
WRAPPED_DATA_KEY_SIZE = KEY_SIZE + TAG_SIZE
COMMITMENT_SIZE = 32
MAX_KEK_VERSION_SIZE = 2048

CONTENT_KEY_LABEL = b"FMENC/1 content key\x00"
COMMITMENT_LABEL = b"FMENC/1 key commitment\x00"

_FIXED = struct.Struct(">5sBBI")  # magic, version, algorithm, segment size
_TAIL_SIZE = SALT_SIZE + NONCE_PREFIX_SIZE + WRAP_NONCE_SIZE + WRAPPED_DATA_KEY_SIZE
NONCE_STRUCT = struct.Struct(">7sIB")


@dataclass(frozen=True)
class Header:
    """A parsed header. ``raw`` is its exact bytes (authenticated through the commitment)."""

    segment_size: int
    subject_key_id: str
    keyring_id: str
    kek_version: str
    salt: bytes = field(repr=False)
    nonce_prefix: bytes = field(repr=False)
    wrap_nonce: bytes = field(repr=False)
    wrapped_data_key: bytes = field(repr=False)
    commitment: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def wrap_ad(self) -> bytes:
        """The associated data of the data-key wrap: every header byte before the wrapped key."""
        return self.raw[: len(self.raw) - WRAPPED_DATA_KEY_SIZE - COMMITMENT_SIZE]

    @property
    def before_commitment(self) -> bytes:
        """Every header byte before the commitment (input to the key derivation)."""
        return self.raw[: len(self.raw) - COMMITMENT_SIZE]


def check_segment_size(segment_size: int) -> None:
    """Raise ``ValueError`` unless ``1 <= segment_size <= MAX_SEGMENT_SIZE``."""
    if not isinstance(segment_size, int) or not 1 <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment size must be between 1 and {MAX_SEGMENT_SIZE} bytes")


def encode_header_prefix(
    *,
    segment_size: int,
    subject_key_id: str,
    keyring_id: str,
    kek_version: str,
    salt: bytes,
    nonce_prefix: bytes,
    wrap_nonce: bytes,
) -> bytes:
    """The header bytes up to and including the wrap nonce (the data-key wrap's AD)."""
    check_segment_size(segment_size)
    sk = subject_key_id.encode("ascii")
    kr = keyring_id.encode("utf-8")
    kv = kek_version.encode("utf-8")
    if not 1 <= len(sk) <= 255 or not 1 <= len(kr) <= 255:
        raise ValueError("subject key id and keyring id must be 1-255 bytes")
    if not 1 <= len(kv) <= MAX_KEK_VERSION_SIZE:
        raise ValueError(f"KEK version must be 1-{MAX_KEK_VERSION_SIZE} bytes")
    if (len(salt), len(nonce_prefix), len(wrap_nonce)) != (
        SALT_SIZE,
        NONCE_PREFIX_SIZE,
        WRAP_NONCE_SIZE,
    ):
        raise ValueError("salt, nonce prefix or wrap nonce has the wrong size")
    return b"".join(
        (
            _FIXED.pack(MAGIC, FORMAT_VERSION, ALGORITHM_ID, segment_size),
            bytes((len(sk),)),
            sk,
            bytes((len(kr),)),
            kr,
            struct.pack(">H", len(kv)),
            kv,
            salt,
            nonce_prefix,
            wrap_nonce,
        )
    )


def parse_header(read_exact: Callable[[int], bytes]) -> Header:
    """Read and parse a header with ``read_exact(n)`` (which raises on a short read).

    Checks structure only; authenticity comes from unwrapping the data key and the commitment.
    """
    fixed = read_exact(_FIXED.size + 1)
    magic, version, algorithm, segment_size = _FIXED.unpack_from(fixed)
    if magic != MAGIC:
        raise DecryptError("not a facemedia envelope (bad magic)")
    if version != FORMAT_VERSION:
        raise DecryptError(f"unsupported envelope format version {version}")
    if algorithm != ALGORITHM_ID:
        raise DecryptError(f"unsupported envelope algorithm {algorithm}")
    if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
        raise DecryptError("invalid segment size in header")
    parts = [fixed]
    sk = _take(read_exact, _nonzero(fixed[-1]), parts)
    kr_len = _take(read_exact, 1, parts)[0]
    kr = _take(read_exact, _nonzero(kr_len), parts)
    (kv_len,) = struct.unpack(">H", _take(read_exact, 2, parts))
    if kv_len > MAX_KEK_VERSION_SIZE:
        raise DecryptError("malformed envelope header")
    kv = _take(read_exact, _nonzero(kv_len), parts)
    tail = _take(read_exact, _TAIL_SIZE + COMMITMENT_SIZE, parts)
    try:
        subject_key_id = sk.decode("ascii")
        keyring_id = kr.decode("utf-8")
        kek_version = kv.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptError("malformed envelope header") from None
    if not subject_key_id.isprintable():
        raise DecryptError("malformed envelope header")
    o = 0
    salt = tail[o : o + SALT_SIZE]
    o += SALT_SIZE
    nonce_prefix = tail[o : o + NONCE_PREFIX_SIZE]
    o += NONCE_PREFIX_SIZE
    wrap_nonce = tail[o : o + WRAP_NONCE_SIZE]
    o += WRAP_NONCE_SIZE
    wrapped = tail[o : o + WRAPPED_DATA_KEY_SIZE]
    o += WRAPPED_DATA_KEY_SIZE
    commitment = tail[o:]
    return Header(
        segment_size=segment_size,
        subject_key_id=subject_key_id,
        keyring_id=keyring_id,
        kek_version=kek_version,
        salt=salt,
        nonce_prefix=nonce_prefix,
        wrap_nonce=wrap_nonce,
        wrapped_data_key=wrapped,
        commitment=commitment,
        raw=b"".join(parts),
    )


def _take(read_exact: Callable[[int], bytes], n: int, parts: list[bytes]) -> bytes:
    data = read_exact(n)
    parts.append(data)
    return data


def _nonzero(length: int) -> int:
    if length == 0:
        raise DecryptError("malformed envelope header")
    return length


def derive_keys(
    data_key: bytes, salt: bytes, header_before_commitment: bytes, canonical_context: bytes
) -> tuple[bytes, bytes]:
    """Return ``(content key, commitment)``, both HKDF-SHA256 of the data key.

    ``info`` is a distinct label ‖ the header bytes before the commitment ‖ the canonical
    context, so a change to any of them changes both outputs.
    """
    info = header_before_commitment + canonical_context
    content_key = HKDF(SHA256(), KEY_SIZE, salt, CONTENT_KEY_LABEL + info).derive(data_key)
    commitment = HKDF(SHA256(), COMMITMENT_SIZE, salt, COMMITMENT_LABEL + info).derive(data_key)
    return content_key, commitment


def check_commitment(expected: bytes, found: bytes) -> None:
    """Raise :class:`DecryptError` unless the commitments are equal (constant time)."""
    if not hmac.compare_digest(expected, found):
        raise DecryptError("key commitment mismatch (wrong encryption context or tampered header)")


def segment_nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    """``prefix (7) ‖ u32 counter ‖ last flag (0x00 or 0x01)``."""
    return NONCE_STRUCT.pack(prefix, counter, 1 if last else 0)
