"""Segment engines and file-like adapters for the STREAM construction.

A plaintext is cut into segments of ``segment_size`` bytes; every segment but the last is full,
the last holds 1..segment_size bytes (0 only when the whole plaintext is empty). Segment ``i`` is
``AES-256-GCM(content key, nonce = prefix ‖ u32 i ‖ last, plaintext, no AD)``. A reader looks
one byte past a segment to know whether it is the last, so the decryptor never needs the length
in advance and a stream cut at a segment boundary fails (its last segment carries flag 0).

Per segment the hot loop makes one ``readinto`` on the source and one AES-GCM call, into reused
buffers where the destination allows it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import CryptoError, DecryptError
from .format import MAX_SEGMENTS, NONCE_STRUCT, TAG_SIZE, segment_nonce

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "DecryptingReader",
    "EncryptingReader",
    "EncryptingWriter",
    "SegmentDecryptor",
    "SegmentEncryptor",
    "Source",
    "write_all",
]


class Source:
    """Fills buffers from a binary stream, with ``readinto`` if it has one, else ``read(n)``.

    Works with files, ``BytesIO``, pipes and botocore's ``StreamingBody`` (``read`` only).
    """

    __slots__ = ("_read", "_readinto")

    def __init__(self, src: Any) -> None:
        self._read = src.read
        readinto = getattr(src, "readinto", None)
        self._readinto = readinto if callable(readinto) else None

    def fill(self, mv: memoryview) -> int:
        """Read into ``mv`` until it is full or the stream ends; return the byte count."""
        total = len(mv)
        n = 0
        readinto = self._readinto
        if readinto is not None:
            while n < total:
                got = readinto(mv[n:] if n else mv)
                if not got:
                    if got is None:
                        raise CryptoError("source stream is non-blocking and had no data")
                    break
                n += got
        else:
            read = self._read
            while n < total:
                data = read(total - n)
                if not data:
                    break
                got = len(data)
                mv[n : n + got] = data
                n += got
        return n

    def read_exact(self, size: int) -> bytes:
        """Read exactly ``size`` bytes or raise :class:`DecryptError` (truncated input)."""
        buf = bytearray(size)
        if self.fill(memoryview(buf)) != size:
            raise DecryptError("ciphertext is truncated (incomplete header)")
        return bytes(buf)


def write_all(dst: Any, data: ReadableBuffer) -> None:
    """``dst.write(data)`` until everything is written (raw files may write partially)."""
    view = memoryview(data)
    written = dst.write(view)
    if written is None or written >= len(view):
        return
    view = view[written:]
    while view:
        written = dst.write(view)
        if written is None:
            return
        if written <= 0:
            raise OSError("destination stream accepted no bytes")
        view = view[written:]


class SegmentEncryptor:
    """Pulls plaintext segments from a :class:`Source` and encrypts them in order.

    The plaintext buffer holds one segment plus one byte of look-ahead: a segment is known to
    be the last when the source cannot fill that extra byte.
    """

    __slots__ = (
        "_aead",
        "_counter",
        "_done",
        "_failed",
        "_have",
        "_mv",
        "_prefix",
        "_seg",
        "_source",
    )

    def __init__(self, aead: AESGCM, prefix: bytes, segment_size: int, source: Source) -> None:
        self._aead = aead
        self._prefix = prefix
        self._seg = segment_size
        self._source = source
        self._mv = memoryview(bytearray(segment_size + 1))
        self._have = 0  # 1 when mv[seg] holds the look-ahead byte of the next segment
        self._counter = 0
        self._done = False
        self._failed = False

    @property
    def done(self) -> bool:
        """Whether the final segment has been produced."""
        return self._done

    def into(self, out: memoryview) -> tuple[int, bytes | None]:
        """Encrypt segments into ``out`` while whole ones fit.

        Returns ``(bytes written, overflow)``: if space was left but the next segment did not
        fit, that segment is returned as ``overflow`` for the caller to split. Writes fewer
        than ``len(out)`` bytes without overflow only at the end of the stream.
        """
        if self._done:
            return 0, None
        if self._failed:
            raise CryptoError("the stream already failed")
        seg = self._seg
        csize = seg + TAG_SIZE
        mv = self._mv
        head = mv[:seg]
        body = mv[1:]
        fill = self._source.fill
        pack = NONCE_STRUCT.pack
        prefix = self._prefix
        space = len(out)
        pos = 0
        overflow = None
        counter = self._counter
        have = self._have
        try:
            while pos < space:
                if have:
                    mv[0] = mv[seg]
                    n = 1 + fill(body)
                else:
                    n = fill(mv)
                if counter >= MAX_SEGMENTS:
                    raise CryptoError("plaintext too long for one envelope")
                if n > seg:
                    plain, size, last, have = head, csize, 0, 1
                else:
                    plain, size, last, have = mv[:n], n + TAG_SIZE, 1, 0
                nonce = pack(prefix, counter, last)
                counter += 1
                if size <= space - pos:
                    self._aead.encrypt_into(nonce, plain, None, out[pos : pos + size])
                    pos += size
                else:
                    overflow = self._aead.encrypt(nonce, plain, None)
                if last:
                    self._done = True
                    break
                if overflow is not None:
                    break
        except BaseException:
            self._failed = True
            raise
        finally:
            self._counter = counter
            self._have = have
        return pos, overflow

    def pump(self, dst: Any) -> int:
        """Encrypt every remaining segment into ``dst``; return the ciphertext bytes written.

        The hot loop of the writer form: one ``readinto``, one ``encrypt_into`` into a reused
        buffer and one ``write`` per segment (``write`` must not keep the buffer, per the io
        contract).
        """
        if self._done:
            return 0
        if self._failed:
            raise CryptoError("the stream already failed")
        seg = self._seg
        csize = seg + TAG_SIZE
        mv = self._mv
        head = mv[:seg]
        body = mv[1:]
        out = memoryview(bytearray(csize))
        encrypt_into = self._aead.encrypt_into
        pack = NONCE_STRUCT.pack
        prefix = self._prefix
        fill = self._source.fill
        write = dst.write
        counter = self._counter
        total = 0
        try:
            if self._have:
                mv[0] = mv[seg]
                n = 1 + fill(body)
            else:
                n = fill(mv)
            while n > seg:
                if counter >= MAX_SEGMENTS:
                    raise CryptoError("plaintext too long for one envelope")
                encrypt_into(pack(prefix, counter, 0), head, None, out)
                written = write(out)
                if written is not None and written != csize:
                    write_all(dst, out[written:])
                total += csize
                counter += 1
                mv[0] = mv[seg]
                n = 1 + fill(body)
            if counter >= MAX_SEGMENTS:
                raise CryptoError("plaintext too long for one envelope")
            last = out[: n + TAG_SIZE]
            encrypt_into(pack(prefix, counter, 1), mv[:n], None, last)
            write_all(dst, last)
            counter += 1
            self._done = True
        except BaseException:
            self._failed = True
            raise
        finally:
            self._counter = counter
            self._have = 0 if self._done else 1
        return total + n + TAG_SIZE


class SegmentDecryptor:
    """Pulls ciphertext segments from a :class:`Source`, authenticates and decrypts them.

    A segment's plaintext is written out only after its tag verified; if a tag fails, the
    bytes it was decrypted into are zeroed before :class:`DecryptError` is raised.
    """

    __slots__ = (
        "_aead",
        "_counter",
        "_csize",
        "_done",
        "_failed",
        "_have",
        "_mv",
        "_prefix",
        "_source",
    )

    def __init__(self, aead: AESGCM, prefix: bytes, segment_size: int, source: Source) -> None:
        self._aead = aead
        self._prefix = prefix
        self._csize = segment_size + TAG_SIZE
        self._source = source
        self._mv = memoryview(bytearray(self._csize + 1))
        self._have = 0
        self._counter = 0
        self._done = False
        self._failed = False

    @property
    def done(self) -> bool:
        """Whether the final segment has been authenticated."""
        return self._done

    def into(self, out: memoryview) -> tuple[int, bytes | None]:
        """Decrypt segments into ``out`` while whole ones fit; see :meth:`SegmentEncryptor.into`."""
        if self._done:
            return 0, None
        if self._failed:
            raise DecryptError("the stream already failed")
        csize = self._csize
        mv = self._mv
        head = mv[:csize]
        body = mv[1:]
        fill = self._source.fill
        pack = NONCE_STRUCT.pack
        prefix = self._prefix
        aead = self._aead
        space = len(out)
        pos = 0
        overflow = None
        counter = self._counter
        have = self._have
        target: memoryview | None = None
        try:
            while pos < space:
                if have:
                    mv[0] = mv[csize]
                    n = 1 + fill(body)
                else:
                    n = fill(mv)
                if counter >= MAX_SEGMENTS:
                    raise DecryptError("too many segments")
                if n > csize:
                    ct, last, have = head, 0, 1
                else:
                    if n < TAG_SIZE or (n == TAG_SIZE and counter > 0):
                        raise DecryptError("ciphertext is truncated (final segment missing)")
                    ct, last, have = mv[:n], 1, 0
                nonce = pack(prefix, counter, last)
                size = len(ct) - TAG_SIZE
                if size <= space - pos:
                    target = out[pos : pos + size]
                    aead.decrypt_into(nonce, ct, None, target)
                    target = None
                    pos += size
                else:
                    overflow = aead.decrypt(nonce, ct, None)
                counter += 1
                if last:
                    self._done = True
                    break
                if overflow is not None:
                    break
        except InvalidTag:
            self._failed = True
            if target is not None:
                target[:] = bytes(len(target))  # no unauthenticated plaintext left behind
            raise _segment_error(counter) from None
        except BaseException:
            self._failed = True
            raise
        finally:
            self._counter = counter
            self._have = have
        return pos, overflow

    def pump(self, dst: Any) -> int:
        """Decrypt every remaining segment into ``dst``; return the plaintext bytes written.

        Each segment is written only after it is authenticated.
        """
        if self._done:
            return 0
        if self._failed:
            raise DecryptError("the stream already failed")
        csize = self._csize
        seg = csize - TAG_SIZE
        mv = self._mv
        head = mv[:csize]
        body = mv[1:]
        out = memoryview(bytearray(seg))
        decrypt_into = self._aead.decrypt_into
        pack = NONCE_STRUCT.pack
        prefix = self._prefix
        fill = self._source.fill
        write = dst.write
        counter = self._counter
        total = 0
        try:
            if self._have:
                mv[0] = mv[csize]
                n = 1 + fill(body)
            else:
                n = fill(mv)
            while n > csize:
                if counter >= MAX_SEGMENTS:
                    raise DecryptError("too many segments")
                decrypt_into(pack(prefix, counter, 0), head, None, out)
                written = write(out)
                if written is not None and written != seg:
                    write_all(dst, out[written:])
                total += seg
                counter += 1
                mv[0] = mv[csize]
                n = 1 + fill(body)
            if n < TAG_SIZE or (n == TAG_SIZE and counter > 0):
                raise DecryptError("ciphertext is truncated (final segment missing)")
            last = out[: n - TAG_SIZE]
            decrypt_into(pack(prefix, counter, 1), mv[:n], None, last)
            write_all(dst, last)
            counter += 1
            self._done = True
        except InvalidTag:
            self._failed = True
            out[:] = bytes(seg)  # no unauthenticated plaintext left behind
            raise _segment_error(counter) from None
        except BaseException:
            self._failed = True
            raise
        finally:
            self._counter = counter
            self._have = 0 if self._done else 1
        return total + len(last)


def _segment_error(counter: int) -> DecryptError:
    return DecryptError(
        f"segment {counter} failed authentication "
        "(tampered, reordered, truncated or from another object)"
    )


_MAX_SCRATCH = 16 * 1024 * 1024


class _SegmentReader(io.BufferedIOBase):
    """A readable binary stream over a segment engine (``read(n)`` returns n bytes until EOF)."""

    def __init__(self, engine: SegmentEncryptor | SegmentDecryptor, first: bytes = b"") -> None:
        super().__init__()
        self._engine = engine
        self._pending = memoryview(first)
        self._position = 0
        self._scratch: memoryview | None = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes handed out so far."""
        return self._position

    def read(self, size: int | None = -1, /) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if size is None or size < 0:
            return self._read_all()
        pending = self._pending
        if size <= len(pending):
            self._pending = pending[size:]
            self._position += size
            return bytes(pending[:size])
        # Segments go straight into a reused scratch buffer, copied once into the result.
        scratch = self._scratch
        if scratch is None or len(scratch) < size:
            scratch = memoryview(bytearray(size))
            if size <= _MAX_SCRATCH:
                self._scratch = scratch
        got = self.readinto(scratch[:size])
        return bytes(scratch[:got])

    def read1(self, size: int = -1, /) -> bytes:
        return self.read(size)

    def _read_all(self) -> bytes:
        parts = []
        while chunk := self.read(1 << 20):
            parts.append(chunk)
        return b"".join(parts)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(buffer).cast("B")
        total = len(out)
        n = 0
        pending = self._pending
        if pending:
            n = min(total, len(pending))
            out[:n] = pending[:n]
            self._pending = pending[n:]
        if n < total:
            got, overflow = self._engine.into(out[n:])
            n += got
            if overflow is not None:
                take = total - n
                out[n:] = overflow[:take]
                self._pending = memoryview(overflow)[take:]
                n = total
        self._position += n
        return n

    def readinto1(self, buffer: WriteableBuffer, /) -> int:
        return self.readinto(buffer)

    def close(self) -> None:
        self._pending = memoryview(b"")
        self._scratch = None
        super().close()


class EncryptingReader(_SegmentReader):
    """Ciphertext (header, then segments) read from a plaintext source, segment by segment."""


class DecryptingReader(_SegmentReader):
    """Plaintext read from a ciphertext source; only authenticated segments are handed out.

    Raises :class:`DecryptError` from ``read`` when a segment fails or the stream ends early.
    """


class EncryptingWriter(io.BufferedIOBase):
    """A writable stream that encrypts what is written to it into ``dst``.

    ``close()`` writes the final segment; leaving a ``with`` block on an exception does *not*
    (the ciphertext is then rejected as truncated), so a failed producer never yields a valid
    but partial object. ``dst`` is not closed.
    """

    def __init__(
        self, aead: AESGCM, prefix: bytes, segment_size: int, header: bytes, dst: Any
    ) -> None:
        super().__init__()
        self._aead = aead
        self._prefix = prefix
        self._seg = segment_size
        self._dst = dst
        self._buf = bytearray(segment_size)
        self._fill = 0
        self._out = bytearray(segment_size + TAG_SIZE)
        self._out_mv = memoryview(self._out)
        self._counter = 0
        self._written = 0
        self._aborted = False
        write_all(dst, header)
        self._written += len(header)

    def writable(self) -> bool:
        return True

    @property
    def bytes_written(self) -> int:
        """Ciphertext bytes written to ``dst`` so far."""
        return self._written

    def write(self, data: ReadableBuffer, /) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        src = memoryview(data).cast("B")
        total = len(src)
        pos = 0
        seg = self._seg
        while pos < total:
            if self._fill == seg:  # a full segment and more data: it is not the last
                self._emit(memoryview(self._buf), last=False)
                self._fill = 0
            if self._fill == 0:
                while total - pos > seg:  # whole segments straight from the caller's buffer
                    self._emit(src[pos : pos + seg], last=False)
                    pos += seg
            take = min(seg - self._fill, total - pos)
            self._buf[self._fill : self._fill + take] = src[pos : pos + take]
            self._fill += take
            pos += take
        return total

    def _emit(self, plain: memoryview, *, last: bool) -> None:
        counter = self._counter
        if counter >= MAX_SEGMENTS:
            raise CryptoError("plaintext too long for one envelope")
        self._counter = counter + 1
        size = len(plain) + TAG_SIZE
        out = self._out_mv[:size]
        self._aead.encrypt_into(segment_nonce(self._prefix, counter, last), plain, None, out)
        write_all(self._dst, out)
        self._written += size

    def abort(self) -> None:
        """Close without writing the final segment (the output will not decrypt)."""
        self._aborted = True
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._aborted:
                self._emit(memoryview(self._buf)[: self._fill], last=True)
                flush = getattr(self._dst, "flush", None)
                if callable(flush):
                    flush()
        finally:
            super().close()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
