"""A 512 MiB stream goes through encryption and decryption with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIZE = 512 * 1024 * 1024
LIMIT = 100 * 1000 * 1000  # bytes of peak RSS growth

SCRIPT = textwrap.dedent(
    """
    import hashlib, io, json, os, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from worker.crypto import Envelope, InMemorySubjectKeyStore, LocalKeyring, SubjectKeys

    SIZE = int(sys.argv[2])

    def hwm() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    class Generated(io.RawIOBase):
        # SIZE bytes made on the fly (a 1 MiB random block, each copy tagged with its
        # index), hashed as they are handed out; never held whole.
        def __init__(self, size):
            self.left = size
            self.block = bytearray(os.urandom(1 << 20))
            self.index = 0
            self.off = 0
            self.sha = hashlib.sha256()
        def readable(self):
            return True
        def readinto(self, b):
            view = memoryview(b)
            n = min(len(view), self.left, len(self.block) - self.off)
            if n <= 0:
                return 0
            if self.off == 0:
                self.block[:8] = self.index.to_bytes(8, "big")
                self.index += 1
            view[:n] = self.block[self.off:self.off + n]
            self.sha.update(view[:n])
            self.off = (self.off + n) % len(self.block)
            self.left -= n
            return n

    class HashSink(io.RawIOBase):
        def __init__(self):
            self.sha = hashlib.sha256()
            self.n = 0
        def writable(self):
            return True
        def write(self, b):
            self.sha.update(b)
            self.n += len(b)
            return len(b)

    tmp = tempfile.mkdtemp()
    keys = SubjectKeys(LocalKeyring(Path(tmp) / "kek.json"), InMemorySubjectKeyStore())
    env = Envelope(keys)
    key_id = keys.create()
    ctx = {"object_key": "originals/big", "object_class": "original", "job_id": "big"}
    env.open(ctx, env.seal(key_id, ctx, b"warm up" * 100000))
    base = hwm()

    # reader -> reader
    src = Generated(SIZE)
    plain = env.decrypt_stream(ctx, env.encrypt_stream(key_id, ctx, src))
    out = hashlib.sha256()
    total = 0
    while chunk := plain.read(1 << 20):
        out.update(chunk)
        total += len(chunk)
    ok_reader = total == SIZE and out.digest() == src.sha.digest()
    after_reader = hwm()

    # reader -> writer form
    src2 = Generated(SIZE)
    sink = HashSink()
    written = env.decrypt(ctx, env.encrypt_stream(key_id, ctx, src2), sink)
    ok_writer = written == SIZE == sink.n and sink.sha.digest() == src2.sha.digest()
    print(json.dumps({"base": base, "after_reader": after_reader, "after_writer": hwm(),
                      "ok_reader": ok_reader, "ok_writer": ok_writer}))
    """
)


def test_512_mib_round_trip_keeps_peak_rss_growth_under_100_mb(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO), str(SIZE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok_reader"], "reader -> reader round trip changed the data"
    assert report["ok_writer"], "reader -> writer round trip changed the data"
    growth = report["after_writer"] - report["base"]
    assert growth < LIMIT, f"peak RSS grew by {growth / 1e6:.1f} MB"
    # bounded means a few segments, not 'under the limit by luck'
    assert report["after_reader"] - report["base"] < 20 * 1000 * 1000
