"""Envelope encryption of objects: per-object data key, wrapped by a subject key, in a header.

See :mod:`worker.crypto.format` for the bytes and docs/ENCRYPTION.md for the design.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .context import canonical_context
from .errors import CryptoError, DecryptError, KeyNotFoundError
from .format import (
    DEFAULT_SEGMENT_SIZE,
    NONCE_PREFIX_SIZE,
    SALT_SIZE,
    TAG_SIZE,
    WRAP_NONCE_SIZE,
    Header,
    check_commitment,
    check_segment_size,
    derive_keys,
    encode_header_prefix,
    parse_header,
)
from .keyring import KEY_SIZE
from .stream import (
    DecryptingReader,
    EncryptingReader,
    EncryptingWriter,
    SegmentDecryptor,
    SegmentEncryptor,
    Source,
    write_all,
)
from .subject_keys import SubjectKeys, valid_key_id

__all__ = ["Envelope"]

RandBytes = Callable[[int], bytes]


class Envelope:
    """Encrypts and decrypts objects for subjects, streaming, with bounded memory.

    ``context`` (for stored objects: ``object_key``, ``object_class``, ``job_id``) is
    authenticated but not stored: decrypting with a different context fails with
    :class:`DecryptError`. Errors: :class:`DecryptError` for anything wrong with the ciphertext
    (including wrong context or subject), :class:`KeyShreddedError` when the subject key was
    destroyed, :class:`KeyringError` when the KEK is unavailable.

    ``randbytes`` is for known-answer tests only; it defaults to :func:`os.urandom`.
    """

    def __init__(
        self,
        subject_keys: SubjectKeys,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        *,
        randbytes: RandBytes = os.urandom,
    ) -> None:
        check_segment_size(segment_size)
        self._keys = subject_keys
        self._segment_size = segment_size
        self._randbytes = randbytes

    @property
    def segment_size(self) -> int:
        """Plaintext bytes per segment for new ciphertexts."""
        return self._segment_size

    # -- encryption --------------------------------------------------------------------------

    def _begin_encrypt(
        self, key_id: str, context: Mapping[str, str]
    ) -> tuple[bytes, AESGCM, bytes]:
        """Build the header; return it with the content AEAD and the nonce prefix."""
        ctx = canonical_context(context)
        if not valid_key_id(key_id):
            raise KeyNotFoundError("malformed subject key id")
        subject_key, kek = self._keys.load(key_id)
        rand = self._randbytes
        data_key = _random(rand, KEY_SIZE)
        salt = _random(rand, SALT_SIZE)
        prefix = _random(rand, NONCE_PREFIX_SIZE)
        wrap_nonce = _random(rand, WRAP_NONCE_SIZE)
        head = encode_header_prefix(
            segment_size=self._segment_size,
            subject_key_id=key_id,
            keyring_id=kek.keyring_id,
            kek_version=kek.version,
            salt=salt,
            nonce_prefix=prefix,
            wrap_nonce=wrap_nonce,
        )
        wrapped = AESGCM(subject_key.raw()).encrypt(wrap_nonce, data_key, head)
        before_commitment = head + wrapped
        content_key, commitment = derive_keys(data_key, salt, before_commitment, ctx)
        return before_commitment + commitment, AESGCM(content_key), prefix

    def encrypt_stream(self, key_id: str, context: Mapping[str, str], src: BinaryIO) -> BinaryIO:
        """A readable stream of the ciphertext of ``src`` (e.g. for boto3 ``upload_fileobj``).

        ``read(n)`` returns exactly ``n`` bytes until the end; memory stays at about two segments.
        """
        header, aead, prefix = self._begin_encrypt(key_id, context)
        engine = SegmentEncryptor(aead, prefix, self._segment_size, Source(src))
        return cast(BinaryIO, EncryptingReader(engine, header))

    def encrypt(self, key_id: str, context: Mapping[str, str], src: BinaryIO, dst: BinaryIO) -> int:
        """Encrypt ``src`` into ``dst``; return the ciphertext bytes written."""
        header, aead, prefix = self._begin_encrypt(key_id, context)
        engine = SegmentEncryptor(aead, prefix, self._segment_size, Source(src))
        write_all(dst, header)
        return len(header) + engine.pump(dst)

    def encrypt_writer(
        self, key_id: str, context: Mapping[str, str], dst: BinaryIO
    ) -> EncryptingWriter:
        """A writable stream: what is written is encrypted into ``dst``.

        ``close()`` (or leaving a ``with`` block normally) finishes the ciphertext; leaving on an
        exception does not, so the partial output will not decrypt.
        """
        header, aead, prefix = self._begin_encrypt(key_id, context)
        return EncryptingWriter(aead, prefix, self._segment_size, header, dst)

    def seal(self, key_id: str, context: Mapping[str, str], data: bytes) -> bytes:
        """Encrypt a small object held in memory."""
        out = io.BytesIO()
        self.encrypt(key_id, context, cast(BinaryIO, io.BytesIO(data)), cast(BinaryIO, out))
        return out.getvalue()

    # -- decryption --------------------------------------------------------------------------

    def _begin_decrypt(self, context: Mapping[str, str], source: Source) -> tuple[Header, AESGCM]:
        """Read and authenticate the header; return it with the content AEAD."""
        ctx = canonical_context(context)
        header = parse_header(source.read_exact)
        subject_key, _ = self._keys.load(header.subject_key_id)
        try:
            data_key = AESGCM(subject_key.raw()).decrypt(
                header.wrap_nonce, header.wrapped_data_key, header.wrap_ad
            )
        except InvalidTag:
            raise DecryptError(
                "the data key does not open under the subject key (wrong subject or tampered "
                "header)"
            ) from None
        content_key, commitment = derive_keys(data_key, header.salt, header.before_commitment, ctx)
        check_commitment(commitment, header.commitment)
        return header, AESGCM(content_key)

    def decrypt_stream(self, context: Mapping[str, str], src: BinaryIO | Any) -> BinaryIO:
        """A readable stream of the plaintext of ``src``.

        The header is read and authenticated now (so a wrong context, a shredded key or a
        foreign object fails here); each segment is handed out only once authenticated, and a
        missing final segment raises :class:`DecryptError` from ``read``. ``src`` needs only
        ``read(n)`` (a botocore ``StreamingBody`` works).
        """
        source = Source(src)
        header, aead = self._begin_decrypt(context, source)
        engine = SegmentDecryptor(aead, header.nonce_prefix, header.segment_size, source)
        return cast(BinaryIO, DecryptingReader(engine))

    def decrypt(self, context: Mapping[str, str], src: BinaryIO | Any, dst: BinaryIO) -> int:
        """Decrypt ``src`` into ``dst``; return the plaintext bytes written.

        Segments are written as they are authenticated: on failure ``dst`` may hold a prefix of
        the plaintext (use :meth:`decrypt_to_file` for a file that appears only when complete).
        """
        source = Source(src)
        header, aead = self._begin_decrypt(context, source)
        engine = SegmentDecryptor(aead, header.nonce_prefix, header.segment_size, source)
        return engine.pump(dst)

    def decrypt_to_file(
        self, context: Mapping[str, str], src: BinaryIO | Any, path: Path | str
    ) -> int:
        """Decrypt into ``path`` (mode 0600) via a temp file beside it and a rename
        (:func:`worker.private_files.private_output`: never through a symlink).

        On any failure the temp file is removed and ``path`` is left as it was.
        """
        from worker.private_files import private_output

        with private_output(Path(path)) as fh:
            return self.decrypt(context, src, fh)

    def open(self, context: Mapping[str, str], data: bytes) -> bytes:
        """Decrypt a small object held in memory."""
        out = io.BytesIO()
        self.decrypt(context, io.BytesIO(data), cast(BinaryIO, out))
        return out.getvalue()

    # -- inspection --------------------------------------------------------------------------

    @staticmethod
    def header_of(data: bytes | BinaryIO) -> Header:
        """Parse (without authenticating) the header at the start of ``data``.

        A seekable stream is returned to its position; a non-seekable one loses the header.
        """
        if isinstance(data, bytes | bytearray | memoryview):
            return parse_header(Source(io.BytesIO(bytes(data))).read_exact)
        start: int | None = None
        with contextlib.suppress(OSError, AttributeError, ValueError):
            if data.seekable():
                start = data.tell()
        try:
            return parse_header(Source(data).read_exact)
        finally:
            if start is not None:
                data.seek(start)

    @staticmethod
    def key_id_of(data: bytes | BinaryIO) -> str:
        """The subject key id in the header of ``data`` (not authenticated; see header_of)."""
        return Envelope.header_of(data).subject_key_id

    @staticmethod
    def ciphertext_length(header_length: int, plaintext_length: int, segment_size: int) -> int:
        """The ciphertext size for a plaintext size, given the header size of the object."""
        if plaintext_length < 0:
            raise ValueError("negative length")
        segments = max(1, -(-plaintext_length // segment_size))
        return header_length + plaintext_length + segments * TAG_SIZE

    def __repr__(self) -> str:
        return f"Envelope(segment_size={self._segment_size}, subject_keys={self._keys!r})"


def _random(rand: RandBytes, size: int) -> bytes:
    value = rand(size)
    if len(value) != size:
        raise CryptoError("random source returned the wrong number of bytes")
    return bytes(value)
