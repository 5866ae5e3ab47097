"""Issue 13, part 3: revocation reaches what is stored, not only what is pulled.

Each test performs the attack from the outside: the ``facemedia`` CLI (typer's runner, the
process's container), files in the pulled directory, and the store itself (the local store's
directory walked on disk; every version of a versioned S3 bucket on a SeaweedFS server, listed with
boto3). The release keys an attacker holds come from grants, opened with the researcher's own
private key, exactly as ``pull`` does.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.research.conftest import sample_images  # noqa: F401  (a fixture)
from tests.research.test_release import (
    populate,
    pseudonym_key,
    read_manifest,
)

# ----- helpers ------------------------------------------------------------------------------


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The researcher's config home (pinned signers, newest revocation list seen)."""
    home = tmp_path / "xdg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def cli(*args: str, code: int = 0) -> dict[str, Any]:
    """Run ``facemedia ARGS --json`` in this process (its container) and parse the JSON."""
    from worker.cli import app

    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == code, res.output
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


@dataclass(frozen=True)
class Setup:
    """A published release, one researcher (alice) granted and pulled before any revocation."""

    container: Any
    release_id: str
    alice_key: Path
    alice_out: Path
    signer: Path
    tmp: Path


def publish(container: Any, images: list[bytes], tmp: Path, tag: str) -> Setup:
    """Populate, release (k=2), grant alice, pin the signer and pull through the CLI."""
    populate(container, images, n_ok=6, tag=tag)
    rel = cli("research", "release", "--name", f"rel-{tag}", "--k", "2")
    keys = cli("research", "keygen", "--out", str(tmp / f"alice-{tag}"))
    cli("research", "grant", rel["release_id"], keys["public_key"])
    signer = tmp / f"signer-{tag}.pub"
    cli("research", "signing-key", "--out", str(signer))
    cli("research", "trust", str(signer))
    out = tmp / f"alice-{tag}-data"
    got = cli(
        "research", "pull", rel["release_id"], "--key", keys["private_key"], "--out", str(out)
    )
    assert got["samples"] == rel["samples"] >= 4
    return Setup(container, rel["release_id"], Path(keys["private_key"]), out, signer, tmp)


@dataclass(frozen=True)
class Victim:
    """What identifies the revoked subject's sample in any plaintext."""

    upstream: str
    pseudonym: str
    samples: frozenset[str]
    media: tuple[bytes, ...]
    thumbnails: tuple[str, ...]


def victim_of(setup: Setup, upstream: str) -> Victim:
    """The subject's release pseudonym, sample ids, media bytes (from alice's pulled shards)
    and contact-sheet thumbnails: the oracle the scans look for. (``populate`` gives subjects
    ``ok-0``, ``ok-3``, ``ok-4`` and ``ok-5`` images no other released sample shares.)"""
    from worker.research.release.shards import _thumbnail

    c = setup.container
    ref = c.subjects.find(upstream)
    pseud = c.releases.subject_pseudonym(pseudonym_key(c, setup.release_id), ref.id)
    rows = [r for r in read_manifest(setup.alice_out) if r["subject"] == pseud]
    assert rows, "the victim must be in the release"
    media, thumbs = [], []
    for row in rows:
        if row["kind"] != "media":
            continue
        with tarfile.open(setup.alice_out / row["shard"]) as tar:
            fh = tar.extractfile(row["member"])
            assert fh is not None
            data = fh.read()
        media.append(data)
        thumb = _thumbnail(data)
        if thumb is not None:
            thumbs.append(thumb)
    return Victim(
        upstream, pseud, frozenset(r["sample"] for r in rows), tuple(media), tuple(thumbs)
    )


def release_keys(
    store_get: Callable[[str], bytes], release_id: str, key_files: list[Path]
) -> list[Any]:
    """The release data keys the researchers' grants open (as each researcher would)."""
    from worker.research.release.keys import fingerprint, load_private_key, open_grant

    out = []
    for path in key_files:
        priv = load_private_key(path.read_bytes())
        fp = fingerprint(priv.public_key())
        grant = json.loads(store_get(f"releases/{release_id}/grants/{fp}.json"))
        out.append(open_grant(release_id, grant, priv))
    return out


def holds_victim(plain: bytes, victim: Victim) -> bool:
    """Does a decrypted object hold anything of the victim's samples?"""
    if any(m in plain for m in victim.media):
        return True
    if any(s.encode() in plain for s in victim.samples):
        return True
    if any(t.encode() in plain for t in victim.thumbnails):
        return True
    if plain[:4] == b"PAR1":  # the manifest is compressed: look at its values
        from worker.research.release.artifacts import read_manifest as rm

        for row in rm(plain):
            if row.get("sample") in victim.samples or row.get("subject") == victim.pseudonym:
                return True
    return False


def scan(
    objects: list[tuple[str, bytes]], release_id: str, keys: list[Any], contexts: list[str]
) -> tuple[int, list[bytes]]:
    """Try every key on every stored object (version), under the object's own key and every
    other release object key as context; (objects opened, their plaintexts)."""
    from worker.objects.release_cipher import ReleaseCipher

    opened = 0
    found: list[bytes] = []
    for where, data in objects:
        if data[:5] != b"FMENC":
            continue
        for key in keys:
            cipher = ReleaseCipher(release_id, key)
            for ctx in dict.fromkeys([where, *contexts]):
                try:
                    plain = cipher.open(ctx, data)
                except Exception:
                    continue
                opened += 1
                found.append(plain)
                break
    return opened, found


def local_objects(root: Path, release_id: str) -> list[tuple[str, bytes]]:
    """Every file of the release in the local store's directory (temp files included)."""
    base = root / "releases" / release_id
    return [
        (p.relative_to(root).as_posix(), p.read_bytes())
        for p in sorted(base.rglob("*"))
        if p.is_file()
    ]


def all_contexts(setup: Setup, objects: list[tuple[str, bytes]]) -> list[str]:
    """Every object key an attacker could name: the store's, and the files of alice's old
    index (kept from before the revocation) at every generation seen."""
    from worker.objects.layout import file_key

    old = json.loads((setup.alice_out / "index.json").read_text())
    names = [f["name"] for f in old["files"]]
    gens = {0, 1, 2, 3}
    keys = [file_key(setup.release_id, n, g) for n in names for g in gens]
    return sorted(set(keys) | {k for k, _ in objects})


# ----- the stored ciphertext is gone ----------------------------------------------------------


@pytest.fixture
def local_setup(embedded: Any, sample_images: list[bytes], tmp_path: Path, xdg: Path) -> Setup:  # noqa: F811
    return publish(embedded, sample_images, tmp_path, "loc")


def test_no_grant_opens_a_revoked_sample_from_any_object_in_the_local_store(
    local_setup: Setup,
) -> None:
    s = local_setup
    store = s.container.store
    root = store.root
    victim = victim_of(s, "loc-ok-0")
    # alice keeps her old grant's key and her old index: before the withdrawal her key opens
    # the victim's sample from the store (the scan is able to find it)
    alice_keys = release_keys(lambda k: store.get(k).read(), s.release_id, [s.alice_key])
    before = local_objects(root, s.release_id)
    opened, plains = scan(before, s.release_id, alice_keys, all_contexts(s, before))
    assert opened >= 4 and any(holds_victim(p, victim) for p in plains)

    cli("consent", "withdraw", "loc-ok-0")

    # bob is granted after the withdrawal
    bob = cli("research", "keygen", "--out", str(s.tmp / "bob"))
    cli("research", "grant", s.release_id, bob["public_key"])
    keys = alice_keys + release_keys(
        lambda k: store.get(k).read(), s.release_id, [Path(bob["private_key"])]
    )
    after = local_objects(root, s.release_id)
    opened, plains = scan(after, s.release_id, keys, all_contexts(s, after))
    assert opened >= 4  # shards, manifest, datasheet, report, state: the keys still work
    assert not [p for p in plains if holds_victim(p, victim)]
    # and nothing anywhere else under the store root holds the victim's media bytes in clear
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(m in data for m in victim.media)
    # bob's pull: the sample is in no artifact, and the contact sheet and datasheet shrank
    out = s.tmp / "bob-data"
    got = cli("research", "pull", s.release_id, "--key", bob["private_key"], "--out", str(out))
    before_media = [r for r in read_manifest(s.alice_out) if r["kind"] == "media"]
    assert got["samples"] == len(before_media) - len(victim.media)
    rows = read_manifest(out)
    assert not [r for r in rows if r["subject"] == victim.pseudonym]
    report = (out / "privacy_report.html").read_text()
    assert not any(t in report for t in victim.thumbnails)
    assert f"{got['samples']} de-identified samples" in (out / "datasheet.md").read_text()
    assert cli("research", "verify", str(out))["ok"] is True


@pytest.mark.services
def test_no_grant_opens_a_revoked_sample_from_any_version_in_a_versioned_bucket(
    make_settings: Any,
    s3_endpoint: str,
    s3_bucket: str,
    sample_images: list[bytes],  # noqa: F811
    tmp_path: Path,
    xdg: Path,
) -> None:
    import boto3

    from tests.conftest import REGION
    from worker.bootstrap import Container, set_container

    container = Container(
        make_settings(
            store_url=f"s3://{s3_bucket}/p",
            s3_endpoint_url=s3_endpoint,
            s3_region=REGION,
            store_region=REGION,
        )
    )
    set_container(container)
    try:
        s = publish(container, sample_images, tmp_path, "s3")
        victim = victim_of(s, "s3-ok-4")
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)

        def versions() -> list[tuple[str, bytes]]:
            out = []
            pages = s3.get_paginator("list_object_versions").paginate(
                Bucket=s3_bucket, Prefix=f"p/releases/{s.release_id}/"
            )
            for page in pages:
                for v in page.get("Versions", []):
                    body = s3.get_object(Bucket=s3_bucket, Key=v["Key"], VersionId=v["VersionId"])[
                        "Body"
                    ].read()
                    out.append((v["Key"].removeprefix("p/"), body))
            return out

        def get(key: str) -> bytes:
            return bytes(s3.get_object(Bucket=s3_bucket, Key=f"p/{key}")["Body"].read())

        alice_keys = release_keys(get, s.release_id, [s.alice_key])
        before = versions()
        opened, plains = scan(before, s.release_id, alice_keys, all_contexts(s, before))
        assert any(holds_victim(p, victim) for p in plains)

        cli("erase", "s3-ok-4", "--yes")

        bob = cli("research", "keygen", "--out", str(tmp_path / "bob"))
        cli("research", "grant", s.release_id, bob["public_key"])
        keys = alice_keys + release_keys(get, s.release_id, [Path(bob["private_key"])])
        after = versions()
        opened, plains = scan(after, s.release_id, keys, all_contexts(s, after))
        assert opened >= 4
        assert not [p for p in plains if holds_victim(p, victim)]
        # an old version of every rebuilt key is gone, not only hidden behind a marker
        listed = s3.list_object_versions(Bucket=s3_bucket, Prefix=f"p/releases/{s.release_id}/")
        old_shard = f"p/releases/{s.release_id}/files/shard-000000.tar"
        assert not [v for v in listed.get("Versions", []) if v["Key"] == old_shard]
        assert not [m for m in listed.get("DeleteMarkers", []) if m["Key"] == old_shard]
    finally:
        container.close()
        set_container(None)


# ----- revocation lists only move forward -----------------------------------------------------


def test_a_rolled_back_revocation_list_is_refused_by_pull_and_verify(local_setup: Setup) -> None:
    s = local_setup
    store = s.container.store
    prefix = f"releases/{s.release_id}"
    old_json = store.get(f"{prefix}/revocations.json").read()
    old_sig = store.get(f"{prefix}/revocations.sig").read()
    assert json.loads(old_json)["sequence"] == 1
    cli("consent", "withdraw", "loc-ok-2")
    pull = ["research", "pull", s.release_id, "--key", str(s.alice_key), "--out", str(s.alice_out)]
    assert cli(*pull)["revocation_sequence"] == 2
    # the attacker (bucket write access) puts the older, validly signed list back
    store.put(f"{prefix}/revocations.json", io.BytesIO(old_json))
    store.put(f"{prefix}/revocations.sig", io.BytesIO(old_sig))
    err = cli(*pull, code=1)
    assert err["error"] == "rollback"
    # ... or into the pulled directory
    (s.alice_out / "revocations.json").write_bytes(old_json)
    (s.alice_out / "revocations.sig").write_bytes(old_sig)
    assert cli("research", "verify", str(s.alice_out), code=1)["error"] == "rollback"


# ----- names from a manifest or index never leave --out ---------------------------------------


def _resign(setup: Setup, index: dict[str, Any]) -> None:
    """Store ``index`` signed with the service's real key (a compromised signer)."""
    from worker.research.release.keys import canonical_json

    body = canonical_json(index)
    store = setup.container.store
    prefix = f"releases/{setup.release_id}"
    store.put(f"{prefix}/index.json", io.BytesIO(body))
    store.put(f"{prefix}/index.sig", io.BytesIO(setup.container.releases.signing.sign(body)))


def test_a_forged_manifest_naming_dotdot_writes_nothing_outside_out(local_setup: Setup) -> None:
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from worker.objects.layout import file_key
    from worker.objects.release_cipher import ReleaseCipher

    s = local_setup
    store = s.container.store
    rid = s.release_id
    (key,) = release_keys(lambda k: store.get(k).read(), rid, [s.alice_key])
    cipher = ReleaseCipher(rid, key)
    index = json.loads(store.get(f"releases/{rid}/index.json").read())
    mentry = next(f for f in index["files"] if f["name"] == "manifest.parquet")
    mkey = file_key(rid, "manifest.parquet", mentry["generation"])
    rows = read_manifest(s.alice_out)
    for row in rows:
        if row["kind"] != "shard":
            row["shard"] = "../x.tar"
    forged = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), forged)
    data = forged.getvalue()
    outside = s.tmp / "x.tar"

    def attempt(out: Path) -> dict[str, Any]:
        err = cli("research", "pull", rid, "--key", str(s.alice_key), "--out", str(out), code=1)
        assert not outside.exists()
        assert not [p for p in out.iterdir() if p.name.endswith((".part", ".tmp"))]
        return err

    # 1. a grantee with bucket write access swaps the manifest: the signed index refuses it
    stored = cipher.seal(mkey, data)
    store.put(mkey, io.BytesIO(stored))
    assert attempt(s.tmp / "p1")["error"] == "checksum_mismatch"
    # 2. the index itself is re-signed over the forged manifest (a compromised signer)
    mentry |= {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "stored_sha256": hashlib.sha256(stored).hexdigest(),
        "stored_size": len(stored),
    }
    index["manifest_sha256"] = mentry["sha256"]
    _resign(s, index)
    assert attempt(s.tmp / "p2")["error"] == "malformed_release"
    # 3. the signed index names ../x.tar itself
    index["files"].append({**index["files"][0], "name": "../x.tar"})
    _resign(s, index)
    assert attempt(s.tmp / "p3")["error"] == "malformed_release"


# ----- trust: a pinned signer, never the directory's own signer.pub --------------------------


def test_verify_without_a_pin_refuses(local_setup: Setup, tmp_path: Path) -> None:
    from worker.cli import app

    fresh = tmp_path / "fresh-xdg"
    fresh.mkdir()
    res = CliRunner().invoke(
        app, ["research", "verify", str(local_setup.alice_out)], env={"XDG_CONFIG_HOME": str(fresh)}
    )
    assert res.exit_code == 2  # refused: no pinned signer is configured
    assert "untrusted_signer" in res.output and "facemedia research trust" in res.output
    res = CliRunner().invoke(
        app,
        [
            "research",
            "pull",
            local_setup.release_id,
            "--key",
            str(local_setup.alice_key),
            "--out",
            str(tmp_path / "nopin"),
            "--json",
        ],
        env={"XDG_CONFIG_HOME": str(fresh)},
    )
    # no pinned signer is a configuration the researcher must fix: refused, exit 2
    assert res.exit_code == 2 and json.loads(res.stdout)["error"] == "untrusted_signer"
    assert not (tmp_path / "nopin").exists()


def test_verify_ignores_a_swapped_signer_pub_in_the_directory(local_setup: Setup) -> None:
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from worker.research.release.keys import canonical_json, signer_pem

    out = local_setup.alice_out
    mallory = Ed25519PrivateKey.generate()
    # swapping signer.pub alone changes nothing: verify does not read it
    (out / "signer.pub").write_bytes(signer_pem(mallory.public_key()))
    assert cli("research", "verify", str(out))["ok"] is True
    # a doctored datasheet, an index re-signed by mallory, her key as DIR/signer.pub
    sheet = (out / "datasheet.md").read_bytes() + b"\nAll subjects consented to everything.\n"
    (out / "datasheet.md").write_bytes(sheet)
    index = json.loads((out / "index.json").read_text())
    for f in index["files"]:
        if f["name"] == "datasheet.md":
            f["sha256"] = hashlib.sha256(sheet).hexdigest()
    body = canonical_json(index)
    (out / "index.json").write_bytes(body)
    (out / "index.sig").write_bytes(mallory.sign(body))
    err = cli("research", "verify", str(out), code=1)
    assert err["error"] == "bad_signature"


# ----- verify derives what was removed from signed data only ----------------------------------


def _drop_sample(shard: Path, sample: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(shard) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for info in src:
            if info.name.split(".", 1)[0] != sample:
                fh = src.extractfile(info)
                assert fh is not None
                dst.addfile(info, fh)
    shard.write_bytes(buf.getvalue())


def test_deleting_a_non_revoked_sample_fails_verify(local_setup: Setup) -> None:
    s = local_setup
    out = s.alice_out
    svc = s.container.releases
    # a withdrawal whose store purge is still queued (a broker's task not run yet): the pull
    # removes the sample locally, from the signed list and manifest
    svc.purge_later = lambda rid: None
    victim = victim_of(s, "loc-ok-3")
    cli("consent", "withdraw", "loc-ok-3")
    pulled = cli("research", "pull", s.release_id, "--key", str(s.alice_key), "--out", str(out))
    assert pulled["removed_samples"] == 1
    assert cli("research", "verify", str(out))["removed_samples"] == 1
    media = [
        r for r in read_manifest(out) if r["kind"] == "media" and r["subject"] != victim.pseudonym
    ]
    other = media[0]
    _drop_sample(out / other["shard"], other["sample"])
    # the unsigned local record older versions trusted claims it was revoked: ignored
    (out / "revoked.json").write_text(
        json.dumps({"shards": {other["shard"]: [other["sample"], *victim.samples]}})
    )
    err = cli("research", "verify", str(out), code=1)
    assert err["error"] == "checksum_mismatch" and err["path"] == other["shard"]


# ----- a failed pull leaves no partial file ---------------------------------------------------


def test_a_failed_pull_leaves_no_part_files(local_setup: Setup) -> None:
    from worker.objects.layout import file_key

    s = local_setup
    store = s.container.store
    index = json.loads(store.get(f"releases/{s.release_id}/index.json").read())
    shard = next(f for f in index["files"] if f["kind"] == "shard")
    key = file_key(s.release_id, shard["name"], shard["generation"])
    data = bytearray(store.get(key).read())
    data[len(data) // 2] ^= 0x01
    store.put(key, io.BytesIO(bytes(data)))
    out = s.tmp / "broken"
    out.mkdir(mode=0o700)
    (out / f"{shard['name']}.part").write_bytes(b"left over by an older pull")
    err = cli(
        "research", "pull", s.release_id, "--key", str(s.alice_key), "--out", str(out), code=1
    )
    assert err["error"] in ("decrypt_failed", "checksum_mismatch")
    left = [p.name for p in out.iterdir() if p.name.endswith((".part", ".tmp"))]
    assert left == []
    assert not (out / shard["name"]).exists()


def test_pulled_files_are_private_and_a_planted_symlink_is_not_followed(
    local_setup: Setup,
) -> None:
    s = local_setup
    assert s.alice_out.stat().st_mode & 0o777 == 0o700
    for p in s.alice_out.iterdir():
        assert p.stat().st_mode & 0o777 == 0o600, p.name
    target = s.tmp / "elsewhere.txt"
    target.write_text("untouched")
    out = s.tmp / "planted"
    out.mkdir(mode=0o700)
    os.symlink(target, out / "datasheet.md")
    # refused before anything is written there: exit 2
    cli("research", "pull", s.release_id, "--key", str(s.alice_key), "--out", str(out), code=2)
    assert target.read_text() == "untouched"
