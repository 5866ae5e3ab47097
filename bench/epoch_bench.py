"""Re-wrap rate of a KEK epoch change on PostgreSQL with the local keyring.

Run: ``.venv/bin/python bench/epoch_bench.py [--keys 20000] [--pg ADMIN_URL] [--json]``
(``ADMIN_URL`` defaults to ``postgresql://postgres@127.0.0.1:5432/postgres``).

A fresh database is created (and dropped afterwards), migrated, and filled with ``--keys``
subject keys wrapped under KEK v1 (one bulk insert); one of them is destroyed (the pending
erasure). Then, in the same process and on the same rows:

* ``raw AES-GCM``: unwrap + wrap every key with ``AESGCM`` in a loop (no ledger) - the crypto
  floor;
* ``plain UPDATE, batched``: the same rows updated as the pass writes them - ``REWRAP_BATCH``
  rows read per SELECT and written per transaction (an executemany of ``UPDATE subject_keys SET
  wrapped = ... WHERE key_id = ... AND destroyed_at IS NULL``) - with no crypto: the ledger
  floor of the pass (the baseline of the ratio);
* ``plain UPDATE, per row``: one such UPDATE per row, each in its own transaction (one WAL
  flush per key: what a re-wrap through the per-key store port costs);
* ``epoch pass``: ``KeyEpochs.run(force=True)`` - new KEK version, every live key re-wrapped
  through the SubjectKeyStore port (read, unwrap, wrap, compare-and-set write), service secrets
  re-wrapped, the stale-key barrier, old version destroyed.

Reported: seconds and keys per second of each, and the epoch pass's ratio to both baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, insert, select, update

from worker.crypto import LocalKeyring, SubjectKeys
from worker.crypto.subject_keys import subject_key_context
from worker.ledger.db import Database
from worker.ledger.models import SubjectKeyRow
from worker.ledger.subject_keys import LedgerSubjectKeyStore
from worker.retention.epochs import REWRAP_BATCH, KeyEpochs


def _seed(db: Database, keyring: LocalKeyring, n: int) -> list[tuple[str, bytes]]:
    """``n`` subject keys wrapped under the current KEK, inserted in bulk; (key_id, raw)."""
    keys = [(f"sk_{uuid.uuid4().hex}", os.urandom(32)) for _ in range(n)]
    now = datetime.now(UTC)
    rows = []
    for key_id, raw in keys:
        wrapped = keyring.wrap(raw, subject_key_context(key_id))
        rows.append(
            {
                "key_id": key_id,
                "keyring_id": wrapped.kek.keyring_id,
                "kek_version": wrapped.kek.version,
                "wrapped": wrapped.blob,
                "created_at": now,
            }
        )
    with db.session() as s:
        for start in range(0, len(rows), 5000):
            s.execute(insert(SubjectKeyRow), rows[start : start + 5000])
    return keys


def _raw_aes(keys: list[tuple[str, bytes]]) -> float:
    """Unwrap + wrap each key with AES-GCM directly (associated data of the same size)."""
    kek_old, kek_new = AESGCM(os.urandom(32)), AESGCM(os.urandom(32))
    blobs = []
    for key_id, raw in keys:
        nonce = os.urandom(12)
        blobs.append((key_id, nonce, kek_old.encrypt(nonce, raw, key_id.encode())))
    start = time.perf_counter()
    for key_id, nonce, blob in blobs:
        raw = kek_old.decrypt(nonce, blob, key_id.encode())
        fresh = os.urandom(12)
        kek_new.encrypt(fresh, raw, key_id.encode())
    return time.perf_counter() - start


def _batched_update(db: Database, keys: list[tuple[str, bytes]]) -> float:
    """The pass's ledger work without crypto: read a batch of rows, write them back in one
    transaction (executemany of a compare-and-set UPDATE)."""
    write = (
        update(SubjectKeyRow)
        .where(
            SubjectKeyRow.key_id == bindparam("b_key_id"),
            SubjectKeyRow.destroyed_at.is_(None),
        )
        .values(wrapped=bindparam("b_wrapped"))
    )
    ids = sorted(k for k, _ in keys)
    start = time.perf_counter()
    for first in range(0, len(ids), REWRAP_BATCH):
        batch = ids[first : first + REWRAP_BATCH]
        with db.session() as s:
            rows = s.execute(
                select(SubjectKeyRow.key_id, SubjectKeyRow.wrapped).where(
                    SubjectKeyRow.key_id.in_(batch)
                )
            ).all()
        with db.session() as s:
            s.connection().execute(
                write, [{"b_key_id": k, "b_wrapped": bytes(w or b"")[::-1]} for k, w in rows]
            )
    return time.perf_counter() - start


def _plain_update(db: Database, keys: list[tuple[str, bytes]]) -> float:
    """One UPDATE per row, one transaction each, writing a 60-byte value."""
    filler = os.urandom(60)
    start = time.perf_counter()
    for key_id, _raw in keys:
        with db.session() as s:
            s.execute(
                update(SubjectKeyRow)
                .where(SubjectKeyRow.key_id == key_id, SubjectKeyRow.destroyed_at.is_(None))
                .values(wrapped=filler)
            )
    return time.perf_counter() - start


def main() -> None:
    """Parse the arguments, run the three measurements, print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--per-row", type=int, default=2000, help="rows in the per-row UPDATE baseline"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import psycopg

    name = f"fm_epoch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    db = Database(url)
    try:
        db.migrate()
        with tempfile.TemporaryDirectory() as tmp:
            keyring = LocalKeyring(Path(tmp) / "kek.json")
            keys = _seed(db, keyring, args.keys)
            subject_keys = SubjectKeys(keyring, LedgerSubjectKeyStore(db))
            subject_keys.destroy(keys[0][0])  # one pending erasure
            live = keys[1:]

            raw_s = _raw_aes(live)
            epoch = KeyEpochs(db, subject_keys).run(force=True)
            assert epoch.ran and epoch.rewrapped.subject_keys == len(live)
            batched_s = _batched_update(db, live)
            update_s = _plain_update(db, live[: args.per_row])
    finally:
        db.dispose()
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    n = len(live)
    result: dict[str, Any] = {
        "keys": n,
        "raw_aes_s": round(raw_s, 3),
        "raw_aes_keys_per_s": round(n / raw_s),
        "batched_update_s": round(batched_s, 3),
        "batched_update_keys_per_s": round(n / batched_s),
        "per_row_update_keys_per_s": round(min(n, args.per_row) / update_s),
        "epoch_s": round(epoch.seconds, 3),
        "epoch_keys_per_s": round(n / epoch.seconds),
        "epoch_vs_batched_update": round(batched_s / epoch.seconds, 3),
        "epoch_vs_raw_aes": round(raw_s / epoch.seconds, 4),
        "keys_per_hour": round(3600 * n / epoch.seconds),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
