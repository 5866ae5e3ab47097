"""HTTP API keys (worker.ledger.api_keys): only a hash of the key is stored, authentication is
exact and revocation immediate, scopes are checked, secrets never show in a repr, the list or the
audit log, the webhook secret is wrapped by the KEK and follows KEK epochs; the ``apikey``
commands through the installed ``facemedia`` entrypoint. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import select, text

from worker.bootstrap import Container
from worker.crypto import KekRef, Keyring, KeyringError, WrappedKey
from worker.ledger.api_keys import (
    SCOPES,
    ApiKeyStore,
    BadLimit,
    BadScope,
    CreatedKey,
    Principal,
    UnknownApiKey,
)
from worker.ledger.models import ApiKeyRow, AuditEntry
from worker.ledger.tenants import BadTenant


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def built(request: pytest.FixtureRequest, make_settings: Any) -> Iterator[Container]:
    """A container on SQLite (embedded) or on a fresh PostgreSQL database."""
    overrides: dict[str, Any] = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    container = Container(make_settings(**overrides))
    try:
        yield container
    finally:
        container.close()


def _row(built: Container, key_id: str) -> ApiKeyRow:
    with built.db.session() as s:
        row = s.get(ApiKeyRow, key_id)
        assert row is not None
        return row


def _audit(built: Container, event: str) -> list[AuditEntry]:
    with built.db.session() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.event == event)))


def test_a_key_authenticates_until_revoked_and_nothing_else_does(built: Container) -> None:
    store = built.api_keys
    created = store.create("acme", ["jobs:write", "jobs:read"])
    assert created.key.startswith(f"fmk_{created.key_id}_")
    assert created.webhook_secret.startswith("whsec_")
    principal = store.authenticate(created.key)
    assert principal == Principal(
        key_id=created.key_id,
        tenant="acme",
        scopes=frozenset({"jobs:write", "jobs:read"}),
        rate_per_second=built.settings.api.rate_per_second,
        burst=built.settings.api.burst,
    )
    assert principal.allows("jobs:read") and not principal.allows("subjects:manage")

    # Wrong secret under a real id, a flipped last character, unknown id, malformed, empty.
    other = store.create("acme", ["jobs:read"])
    secret = created.key.split("_", 2)[2]
    last = "A" if secret[-1] != "A" else "B"
    forged = [
        f"fmk_{created.key_id}_{other.key.split('_', 2)[2]}",  # another key's secret
        created.key[:-1] + last,
        f"fmk_{'0' * 16}_{secret}",
        created.key.replace("fmk_", "fmk-"),
        created.key + "x",
        created.key_id,
        "",
        other.webhook_secret,
    ]
    for bearer in forged:
        assert store.authenticate(bearer) is None, bearer
    assert store.authenticate(other.key) is not None

    # Revocation is immediate and idempotent; the revoked key (and its id with any secret) fails.
    assert store.revoke(created.key_id) is True
    assert store.authenticate(created.key) is None
    assert store.authenticate(f"fmk_{created.key_id}_{secret[:-1]}{last}") is None
    assert store.revoke(created.key_id) is False
    assert store.revoke("0" * 16) is False
    assert store.authenticate(other.key) is not None  # the other key is untouched
    assert [e.entity for e in _audit(built, "apikey.created")] == [
        created.key_id,
        other.key_id,
    ]
    (revoked,) = _audit(built, "apikey.revoked")
    assert revoked.entity == created.key_id


def test_only_a_hash_is_stored_and_no_listing_or_audit_entry_shows_a_secret(
    built: Container,
) -> None:
    store = built.api_keys
    created = store.create("acme", ["subjects:manage"], rate_per_second=2.5, burst=3)
    secrets = [created.key, created.key.split("_", 2)[2], created.webhook_secret]
    secrets.append(created.webhook_secret.removeprefix("whsec_"))
    with built.db.session() as s:
        dumped = json.dumps(
            [[repr(v) for v in r] for r in s.execute(text("SELECT * FROM api_keys")).all()]
            + [[repr(v) for v in r] for r in s.execute(text("SELECT * FROM audit_log")).all()]
        )
    row = _row(built, created.key_id)
    import hashlib

    assert row.key_hash == hashlib.sha256(created.key.encode()).hexdigest()
    listed = store.list()
    assert listed == [store.get(created.key_id)]
    assert listed[0]["scopes"] == ["subjects:manage"] and listed[0]["revoked"] is False
    assert listed[0]["rate_per_second"] == 2.5 and listed[0]["burst"] == 3
    shown = json.dumps(listed)
    assert row.key_hash not in shown
    for secret in secrets:
        assert secret not in dumped and secret not in shown
    principal = store.authenticate(created.key)
    assert principal is not None and (principal.rate_per_second, principal.burst) == (2.5, 3)
    if built.db.dialect == "sqlite":  # nor anywhere in the ledger's files (WAL included)
        built.db.checkpoint()
        home = built.settings.home_dir
        for path in home.glob("ledger.db*"):
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, path


def test_list_filters_by_tenant_and_scopes_and_limits_are_checked(built: Container) -> None:
    store = built.api_keys
    a = store.create("tenant-a", sorted(SCOPES))
    b = store.create("tenant-b", ["jobs:read"])
    assert [k["key_id"] for k in store.list("tenant-a")] == [a.key_id]
    assert [k["key_id"] for k in store.list("tenant-b")] == [b.key_id]
    assert {k["key_id"] for k in store.list()} == {a.key_id, b.key_id}
    assert store.list("tenant-c") == []
    with pytest.raises(BadScope) as bad:
        store.create("tenant-a", ["jobs:write", "admin"])
    assert bad.value.code == "bad_scope" and "admin" in str(bad.value)
    with pytest.raises(BadScope):
        store.create("tenant-a", [])
    with pytest.raises(BadLimit):
        store.create("tenant-a", ["jobs:read"], rate_per_second=0)
    with pytest.raises(BadLimit):
        store.create("tenant-a", ["jobs:read"], burst=0)
    with pytest.raises(BadTenant):
        store.create("Tenant A", ["jobs:read"])
    assert len(store.list()) == 2  # nothing refused was stored
    with pytest.raises(UnknownApiKey):
        store.webhook_secret("0" * 16)


def test_repr_hides_the_key_and_the_webhook_secret(built: Container) -> None:
    created = built.api_keys.create("acme", ["jobs:read"])
    for shown in (repr(created), str(created), f"{created}", repr([created])):
        assert created.key_id in shown
        assert created.key not in shown and created.key.split("_", 2)[2] not in shown
        assert created.webhook_secret not in shown
    assert created.to_json() == {
        "key_id": created.key_id,
        "key": created.key,
        "webhook_secret": created.webhook_secret,
    }
    assert "wrapped" in repr(built.api_keys) and isinstance(created, CreatedKey)


def test_webhook_secret_is_wrapped_by_the_kek_and_follows_key_epochs(built: Container) -> None:
    store: ApiKeyStore = built.api_keys
    created = store.create("acme", ["jobs:write"])
    revoked = store.create("acme", ["jobs:write"])
    store.revoke(revoked.key_id)
    assert store.webhook_secret(created.key_id) == created.webhook_secret.encode()
    before = _row(built, created.key_id)
    old = WrappedKey(
        KekRef(before.keyring_id, before.kek_version), bytes(before.wrapped_webhook_secret)
    )
    context = {"purpose": "webhook-secret", "key_id": created.key_id}
    assert built.keyring.unwrap(old, context)  # opens under the KEK it names...
    with pytest.raises(KeyringError):  # ...and only for its own row (the id is bound)
        built.keyring.unwrap(old, {"purpose": "webhook-secret", "key_id": revoked.key_id})

    # `keys rotate`: re-wrapped under the new version, the old one still live.
    _, counts = built.epochs.rotate()
    assert counts.webhook_secrets == 2  # the revoked key's too (its jobs' callbacks)
    assert _row(built, created.key_id).kek_version == built.keyring.current().version
    assert store.webhook_secret(created.key_id) == created.webhook_secret.encode()

    # An epoch change (needs a pending erasure) destroys every older KEK version.
    subject = built.subjects.ensure("epoch-subject")
    built.rights.erase(subject.id)
    result = built.epochs.run(force=True)
    assert result.ran and result.rewrapped.webhook_secrets == 2
    assert result.to_json()["webhook_secrets_rewrapped"] == 2
    after = _row(built, created.key_id)
    assert after.kek_version == built.keyring.current().version != before.kek_version
    assert bytes(after.wrapped_webhook_secret) != bytes(before.wrapped_webhook_secret)
    assert store.webhook_secret(created.key_id) == created.webhook_secret.encode()
    assert store.webhook_secret(revoked.key_id) == revoked.webhook_secret.encode()
    assert before.kek_version in result.versions_destroyed
    with pytest.raises(KeyringError):  # a backup's copy of the old row is noise now
        built.keyring.unwrap(old, context)
    (entry,) = _audit(built, "keys.epoch")
    assert json.loads(entry.details)["webhook_secrets"] == 2


def test_the_apikey_commands_through_the_facemedia_entrypoint(tmp_path: Path) -> None:
    """Create (JSON once, human with the warning), list (no secrets), revoke, through the
    installed console script in fresh processes; the key works on the same ledger until it is
    revoked."""
    import os

    from worker.settings import load_settings

    facemedia = Path(sys.executable).with_name("facemedia")
    assert facemedia.exists()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FACEMEDIA_")}
    env.update(FACEMEDIA_HOME=str(tmp_path / "var"), COLUMNS="200")

    def fm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(facemedia), "apikey", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = fm("create", "--tenant", "acme", "--scope", "jobs:read", "--json")
    assert made.returncode == 0 and made.stderr == "", made
    (line,) = made.stdout.splitlines()
    doc = json.loads(line)
    assert doc["tenant"] == "acme" and doc["scopes"] == ["jobs:read"]
    human = fm("create", "--tenant", "acme")
    assert human.returncode == 0 and "shown this once" in human.stderr, human
    assert "fmk_" in human.stdout and "whsec_" in human.stdout
    listed = fm("list", "--tenant", "acme", "--json")
    assert listed.returncode == 0
    keys = json.loads(listed.stdout)["keys"]
    assert doc["key_id"] in {k["key_id"] for k in keys} and len(keys) == 2
    assert doc["key"] not in listed.stdout and doc["webhook_secret"] not in listed.stdout

    container = Container(load_settings(home=tmp_path / "var"))
    try:
        principal = container.api_keys.authenticate(doc["key"])
        assert principal is not None and principal.tenant == "acme"
        assert container.api_keys.webhook_secret(doc["key_id"]) == doc["webhook_secret"].encode()
        gone = fm("revoke", doc["key_id"], "--json")
        assert gone.returncode == 0 and json.loads(gone.stdout) == {
            "key_id": doc["key_id"],
            "revoked": True,
            "changed": True,
        }
        assert container.api_keys.authenticate(doc["key"]) is None
        unknown = fm("revoke", "0" * 16, "--json")
        assert unknown.returncode == 2 and json.loads(unknown.stdout)["error"] == "not_found"
    finally:
        container.close()


def test_the_apikey_commands_refuse_bad_values_with_exit_2(embedded: Container) -> None:
    """In process (the entrypoint test above covers the real process): a bad scope, a bad
    tenant, an unknown key id to revoke; revoking twice is not an error."""
    from typer.testing import CliRunner

    from worker.cli import app

    runner = CliRunner()
    for args, code in (
        (["create", "--scope", "root", "--json"], "bad_scope"),
        (["create", "--tenant", "Not A Slug", "--json"], "bad_tenant"),
        (["create", "--rate", "0", "--json"], "bad_limit"),
        (["revoke", "0" * 16, "--json"], "not_found"),
    ):
        ran = runner.invoke(app, ["apikey", *args])
        assert ran.exit_code == 2 and json.loads(ran.stdout)["error"] == code, (args, ran.stdout)
    assert embedded.api_keys.list() == []
    key_id = embedded.api_keys.create("default", ["jobs:read"]).key_id
    for changed in (True, False):
        ran = runner.invoke(app, ["apikey", "revoke", key_id, "--json"])
        assert ran.exit_code == 0 and json.loads(ran.stdout)["changed"] is changed


class _EpochRightAfterWrap:
    """The container's keyring, but the first wrap is followed by a new current KEK version: a
    process whose view of the keyring was a moment old when an epoch change began."""

    def __init__(self, real: Keyring) -> None:
        self.real = real
        self.rotated = False

    def wrap(self, key: bytes, context: Any) -> WrappedKey:
        wrapped = self.real.wrap(key, context)
        if not self.rotated:
            self.rotated = True
            self.real.rotate()
        return wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_secret_wrapped_under_a_version_that_stopped_being_current_is_rewrapped(
    embedded: Container,
) -> None:
    keyring = _EpochRightAfterWrap(embedded.keyring)
    store = ApiKeyStore(embedded.db, cast(Any, keyring))
    created = store.create("acme", ["jobs:read"])
    assert keyring.rotated and embedded.keyring.versions() == ["v1", "v2"]
    assert _row(embedded, created.key_id).kek_version == "v2"  # not left under v1
    assert store.webhook_secret(created.key_id) == created.webhook_secret.encode()
