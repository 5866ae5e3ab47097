"""Research releases: eligibility, k-anonymity, pseudonyms, encryption, grants, signatures,
revocation, pull/verify/resume, the CLI, and the fan-out through a real celery worker.

Samples are generated here (scikit-image's astronaut with the face masked, in colour variants),
encrypted through the vault as class ``research``, with ResearchSample rows: the sampling code is
not needed to test releases.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from worker.ids import new_id
from worker.ledger.models import Release, ResearchSample, StoredObject
from worker.ledger.subjects import Consent
from worker.research.release import ReleaseError, ReleaseRequest
from worker.research.release.kanon import QUASI, anonymize
from worker.research.release.pull import pull as _pull
from worker.research.release.pull import trust, verify

QUASI_POOL = [
    {"age_band": "30-39", "region": "Zhejiang", "device_family": "ios", "capture_month": "2026-11"},
    {"age_band": "30-39", "region": "Jiangsu", "device_family": "ios", "capture_month": "2026-10"},
    {
        "age_band": "20-29",
        "region": "Beijing",
        "device_family": "android",
        "capture_month": "2026-11",
    },
    {
        "age_band": "20-29",
        "region": "Hebei",
        "device_family": "android",
        "capture_month": "2026-12",
    },
]


@dataclass(frozen=True)
class Population:
    """Who is in the ledger: ledger subject ids by role."""

    ok: list[str]
    minor_no_guardian: str
    minor_guardian: str
    withdrawn: str
    no_consent: str


def add_sample(
    container: Any,
    subject_ref: Any,
    image: bytes,
    quasi: dict[str, Any],
    op: str = "mask",
    media_kind: str = "image",
) -> str:
    """One research sample of a subject: encrypted object + rows."""
    sample_id = new_id()
    key = f"research/{sample_id}"
    t = datetime.now(UTC)
    object_id = new_id()
    with container.db.session() as s:
        s.add(
            StoredObject(
                id=object_id,
                key=key,
                object_class="research",
                subject_id=subject_ref.id,
                created_at=t,
            )
        )
    container.vault.put(key, "research", None, subject_ref.key_id, image)
    with container.db.session() as s:
        s.add(
            ResearchSample(
                id=sample_id,
                object_id=object_id,
                subject_id=subject_ref.id,
                media_kind=media_kind,
                operator=op,
                params={},
                faces=1,
                gate={"passed": True, "residual_faces": 0, "reason": "ok", "frames_checked": 1},
                quasi=quasi,
                created_at=t,
            )
        )
    return sample_id


def populate(container: Any, images: list[bytes], n_ok: int = 14, tag: str = "p") -> Population:
    """``n_ok`` consenting subjects (one sample each, quasi from the pool), plus one of each
    kind that must never reach a release (and one minor with guardian consent, who may)."""
    ok = []
    for i in range(n_ok):
        ref = container.subjects.ensure(f"{tag}-ok-{i}", Consent(research=True))
        add_sample(container, ref, images[i % len(images)], QUASI_POOL[i % len(QUASI_POOL)])
        ok.append(ref.id)
    q = QUASI_POOL[0]
    mng = container.subjects.ensure(f"{tag}-minor-ng", Consent(research=True, is_minor=True))
    add_sample(container, mng, images[0], q)
    mg = container.subjects.ensure(
        f"{tag}-minor-g", Consent(research=True, is_minor=True, guardian=True)
    )
    add_sample(container, mg, images[1], q)
    wd = container.subjects.ensure(f"{tag}-withdrawn", Consent(research=True))
    add_sample(container, wd, images[2], q)
    container.rights.withdraw_consent(wd.id)
    nc = container.subjects.ensure(f"{tag}-noconsent", Consent(research=False))
    add_sample(container, nc, images[3], q)
    return Population(ok, mng.id, mg.id, wd.id, nc.id)


def pull(store: Any, release_id: str, priv: bytes, out: Path, **kw: Any) -> Any:
    """The researcher's pull, with the service's signing key pinned first (``research trust``;
    here read from the store, standing in for the owner handing it over out of band)."""
    if "signer" not in kw:
        trust(store.get(f"releases/{release_id}/signer.pub").read())
    return _pull(store, release_id, priv, out, **kw)


def pseudonym_key(container: Any, release_id: str) -> Any:
    svc = container.releases
    return svc._keys(svc._load(release_id)).pseudonym


def researcher(tmp_path: Path, name: str) -> tuple[bytes, bytes]:
    from worker.research.release.keys import write_keypair

    d = tmp_path / name
    d.mkdir()
    write_keypair(d / "researcher.key", d / "researcher.pub.pem")
    return (d / "researcher.key").read_bytes(), (d / "researcher.pub.pem").read_bytes()


def read_manifest(out: Path) -> list[dict[str, Any]]:
    from worker.research.release.artifacts import read_manifest as rm

    return rm((out / "manifest.parquet").read_bytes())


@pytest.fixture
def built(embedded: Any, sample_images: list[bytes], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A published release (k=3) of the embedded population, granted to one researcher and
    pulled into ``out``."""
    pop = populate(embedded, sample_images)
    result = embedded.releases.create(ReleaseRequest(name="r1", k=3))
    priv, pub = researcher(tmp_path, "alice")
    embedded.releases.grant(result.release_id, pub)
    out = tmp_path / "pulled"
    pulled = pull(embedded.store, result.release_id, priv, out)
    yield {"pop": pop, "result": result, "priv": priv, "pub": pub, "out": out, "pulled": pulled}


def test_samples_from_the_sampler_are_released(make_settings: Any, tmp_path: Path) -> None:
    """End to end with the real sampling path: jobs with research consent and attributes →
    de-identified, gated samples → a release whose manifest carries their generalized values."""
    import cv2
    import numpy as np
    from skimage import data

    from worker.bootstrap import Container, set_container

    # the astronaut mirrored: the default profile passes the gate on it (the sampling tests
    # found the unmirrored photo a gate false positive beside the mask's edge)
    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[:, ::-1])
    )
    assert ok
    astronaut_jpeg = bytes(buf)

    c = Container(make_settings(research={"sample_rate": 1.0}))
    set_container(c)
    try:
        attrs = {"age": "34", "region": "Zhejiang", "device": "iPhone14,2"}
        for i in range(4):
            job = c.client.submit(
                astronaut_jpeg,
                "detect",
                subject_id=f"sampled-{i}",
                consent=Consent(research=True),
                attributes=attrs,
            )
            assert c.service.status(job)["status"] == "succeeded"
        res = c.releases.create(ReleaseRequest(name="sampled", k=3))
        assert res.samples == 4 and res.suppressed == 0
        priv, pub = researcher(tmp_path, "gina")
        c.releases.grant("sampled", pub)
        pull(c.store, res.release_id, priv, tmp_path / "s")
        media = [r for r in read_manifest(tmp_path / "s") if r["kind"] == "media"]
        month = datetime.now(UTC).strftime("%Y-%m")
        assert {
            (r["age_band"], r["region"], r["device_family"], r["capture_month"]) for r in media
        } == {("30-39", "Zhejiang", "ios", month)}
    finally:
        c.close()
        set_container(None)


# ----- k-anonymity ---------------------------------------------------------------------------


def test_kanon_generalizes_then_suppresses() -> None:
    rows = [QUASI_POOL[0]] * 4 + [QUASI_POOL[1]] * 3 + [{**QUASI_POOL[2], "region": "Tibet"}]
    a = anonymize(rows, k=3, max_suppression=0.2)
    # the outlier is suppressed rather than generalizing everyone
    assert a.suppressed == (7,) and a.k_achieved == 3
    assert all(Counter(tuple(g[q] for q in QUASI) for g in a.kept.values()).values())
    sizes = Counter(tuple(g[q] for q in QUASI) for g in a.kept.values())
    assert min(sizes.values()) >= 3
    # with no suppression budget it generalizes until every row fits
    b = anonymize(rows, k=3, max_suppression=0.0)
    assert b.suppressed == () and b.k_achieved >= 3
    # k larger than everything: all suppressed
    c = anonymize(rows, k=9)
    assert not c.kept and len(c.suppressed) == 8


# ----- the embedded path ---------------------------------------------------------------------


def test_release_is_k_anonymous_and_excludes_the_ineligible(
    embedded: Any, built: dict[str, Any]
) -> None:
    res, out, pop = built["result"], built["out"], built["pop"]
    assert res.status == "published" and res.samples == 15  # 14 ok + the minor with guardian
    manifest = read_manifest(out)
    media = [r for r in manifest if r["kind"] == "media"]
    assert len(media) == res.samples
    classes = Counter(tuple(r[q] for q in QUASI) for r in media)
    assert min(classes.values()) >= 3  # k = 3 holds in the manifest
    assert res.k_achieved == min(classes.values())
    key = pseudonym_key(embedded, res.release_id)
    svc = embedded.releases
    subjects = {r["subject"] for r in media}
    assert {svc.subject_pseudonym(key, s) for s in pop.ok} <= subjects
    assert svc.subject_pseudonym(key, pop.minor_guardian) in subjects
    for never in (pop.minor_no_guardian, pop.withdrawn, pop.no_consent):
        assert svc.subject_pseudonym(key, never) not in subjects
    # the datasheet answers from the data
    sheet = (out / "datasheet.md").read_text()
    for heading in (
        "Motivation",
        "Composition",
        "Collection process",
        "Consent",
        "de-identification",
        "Uses",
        "Distribution",
        "Retention",
        "Contact",
    ):
        assert heading.lower() in sheet.lower()
    assert f"the smallest equivalence class holds {res.k_achieved} samples" in sheet
    assert "the release holds 1 sample of minors with that consent" in sheet
    assert "1 sample of minors without it was left out" in sheet
    assert "data:image/jpeg;base64," in (out / "privacy_report.html").read_text()
    # audited
    from sqlalchemy import select

    from worker.ledger.models import AuditEntry

    with embedded.db.session() as s:
        events = set(s.scalars(select(AuditEntry.event)))
    assert {"release.created", "release.published", "release.granted"} <= events


def test_release_holds_no_ledger_ids(embedded: Any, built: dict[str, Any]) -> None:
    """Nothing in the pulled release (or the store's release objects) names a ledger subject,
    sample, object or key id: only this release's pseudonyms."""
    from sqlalchemy import select

    from worker.ledger.models import Subject

    with embedded.db.session() as s:
        ids = set(s.scalars(select(ResearchSample.id))) | set(s.scalars(select(Subject.id)))
        ids |= set(s.scalars(select(Subject.key_id))) | set(s.scalars(select(StoredObject.id)))
    blobs = [p.read_bytes() for p in built["out"].iterdir() if p.is_file()]
    for shard in built["out"].glob("shard-*.tar"):
        with tarfile.open(shard) as tar:
            blobs += [tar.extractfile(m).read() for m in tar if m.isfile()]  # type: ignore[union-attr]
    release_id = built["result"].release_id
    blobs += [embedded.store.get(k).read() for k in embedded.store.keys(f"releases/{release_id}/")]
    for blob in blobs:
        for ident in ids:
            assert ident.encode() not in blob
    for row in read_manifest(built["out"]):  # compressed on disk: check the values too
        assert not {str(v) for v in row.values()} & ids


def test_suppressed_count_is_reported(embedded: Any, sample_images: list[bytes]) -> None:
    for i in range(6):
        ref = embedded.subjects.ensure(f"sup-{i}", Consent(research=True))
        add_sample(embedded, ref, sample_images[i], QUASI_POOL[0])
    odd = embedded.subjects.ensure("sup-odd", Consent(research=True))
    add_sample(
        embedded,
        odd,
        sample_images[7],
        {
            "age_band": "70-79",
            "region": "Xinjiang",
            "device_family": "windows",
            "capture_month": "2025-02",
        },
    )
    res = embedded.releases.create(ReleaseRequest(name="sup", k=5, max_suppression=0.2))
    assert (res.samples, res.suppressed, res.k_achieved) == (6, 1, 6)
    with embedded.db.session() as s:
        row = s.get(Release, res.release_id)
        assert (row.sample_count, row.suppressed) == (6, 1)


def test_operator_filter(embedded: Any, sample_images: list[bytes], tmp_path: Path) -> None:
    for i in range(4):
        ref = embedded.subjects.ensure(f"op-{i}", Consent(research=True))
        add_sample(embedded, ref, sample_images[i], QUASI_POOL[0], op="blur" if i < 2 else "mask")
    res = embedded.releases.create(ReleaseRequest(name="blurred", k=2, operator="blur"))
    assert res.samples == 2
    priv, pub = researcher(tmp_path, "erin")
    embedded.releases.grant("blurred", pub)
    pull(embedded.store, res.release_id, priv, tmp_path / "b")
    ops = {r["operator"] for r in read_manifest(tmp_path / "b") if r["kind"] == "media"}
    assert ops == {"blur"}


def test_no_eligible_samples_is_a_stable_error(embedded: Any, sample_images: list[bytes]) -> None:
    ref = embedded.subjects.ensure("lonely", Consent(research=False))
    add_sample(embedded, ref, sample_images[0], QUASI_POOL[0])
    with pytest.raises(ReleaseError) as info:
        embedded.releases.create(ReleaseRequest(name="empty"))
    assert info.value.code == "no_eligible_samples"
    with pytest.raises(ReleaseError) as info:
        embedded.releases.create(ReleaseRequest(name="empty", operator="blur"))
    assert info.value.code == "no_eligible_samples"


def test_pseudonyms_differ_across_releases(
    embedded: Any, built: dict[str, Any], tmp_path: Path
) -> None:
    r2 = embedded.releases.create(ReleaseRequest(name="r2", k=3))
    embedded.releases.grant(r2.release_id, built["pub"])
    out2 = tmp_path / "pulled2"
    pull(embedded.store, r2.release_id, built["priv"], out2)
    m1, m2 = read_manifest(built["out"]), read_manifest(out2)
    s1 = {r["subject"] for r in m1 if r["kind"] == "media"}
    s2 = {r["subject"] for r in m2 if r["kind"] == "media"}
    ids1 = {r["sample"] for r in m1 if r["kind"] == "media"}
    ids2 = {r["sample"] for r in m2 if r["kind"] == "media"}
    assert len(s1) == len(s2) == 15 and not s1 & s2 and not ids1 & ids2
    # the same subject, two pseudonyms
    sid = built["pop"].ok[0]
    svc = embedded.releases
    p1 = svc.subject_pseudonym(pseudonym_key(embedded, built["result"].release_id), sid)
    p2 = svc.subject_pseudonym(pseudonym_key(embedded, r2.release_id), sid)
    assert p1 in s1 and p2 in s2 and p1 != p2


def test_webdataset_reads_pulled_shards(built: dict[str, Any]) -> None:
    import webdataset as wds

    out = built["out"]
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    seen = 0
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        assert sample["jpg"][:2] == b"\xff\xd8"
        record = json.loads(sample["json"])
        assert record["sample"] == sample["__key__"] and set(record["quasi"]) == set(QUASI)
        assert record["gate"]["passed"] is True
        seen += 1
    assert seen == built["result"].samples


def test_video_samples_are_mp4_members(embedded: Any, tmp_path: Path) -> None:
    import av
    import numpy as np
    import webdataset as wds

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 30, np.uint8), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    clip = buf.getvalue()
    for i in range(3):
        ref = embedded.subjects.ensure(f"vid-{i}", Consent(research=True))
        add_sample(embedded, ref, clip, QUASI_POOL[1], media_kind="video")
    res = embedded.releases.create(ReleaseRequest(name="videos", k=3))
    priv, pub = researcher(tmp_path, "dave")
    embedded.releases.grant("videos", pub)
    out = tmp_path / "v"
    pull(embedded.store, res.release_id, priv, out)
    got = list(wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False))
    assert len(got) == 3 and all(x["mp4"] == clip for x in got)
    assert all(json.loads(x["json"])["media_kind"] == "video" for x in got)


def test_store_holds_no_plaintext_and_no_grant_cannot_decrypt(
    embedded: Any, built: dict[str, Any], tmp_path: Path
) -> None:
    release_id = built["result"].release_id
    store = embedded.store
    for key in store.keys(f"releases/{release_id}/files/"):
        raw = store.get(key).read()
        assert raw[:5] == b"FMENC" and b"\xff\xd8\xff" not in raw[:400] and b"ustar" not in raw
    mallory, _ = researcher(tmp_path, "mallory")
    with pytest.raises(ReleaseError) as info:
        pull(store, release_id, mallory, tmp_path / "m")
    assert info.value.code == "no_grant" and "grant" in str(info.value)
    assert not list((tmp_path / "m").glob("shard-*"))
    # a grant copied under mallory's fingerprint does not open with her key either
    from cryptography.hazmat.primitives import serialization

    from worker.research.release.keys import fingerprint, load_private_key

    fp_alice = fingerprint(load_private_key(built["priv"]).public_key())
    fp_m = fingerprint(load_private_key(mallory).public_key())
    grant = store.get(f"releases/{release_id}/grants/{fp_alice}.json").read()
    store.put(f"releases/{release_id}/grants/{fp_m}.json", io.BytesIO(grant))
    with pytest.raises(ReleaseError) as info:
        pull(store, release_id, mallory, tmp_path / "m2")
    assert info.value.code == "grant_invalid"
    del serialization


def test_verify_fails_on_a_flipped_byte_naming_the_file(built: dict[str, Any]) -> None:
    out = built["out"]
    assert verify(out).files == len(json.loads((out / "index.json").read_text())["files"])
    for name in ("shard-000000.tar", "datasheet.md"):
        path = out / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(ReleaseError) as info:
            verify(out)
        assert info.value.code == "checksum_mismatch" and info.value.path == name
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    verify(out)


def test_another_signer_fails(embedded: Any, built: dict[str, Any], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from worker.research.release.keys import signer_pem

    out = built["out"]
    other = Ed25519PrivateKey.generate()
    # a re-signed index with a forged signer.pub: the pinned (first-use) signer rejects it
    index = (out / "index.json").read_bytes()
    (out / "index.sig").write_bytes(other.sign(index))
    with pytest.raises(ReleaseError) as info:
        verify(out)
    assert info.value.code == "bad_signature"
    with pytest.raises(ReleaseError) as info:
        verify(out, signer=signer_pem(other.public_key()))
    assert info.value.code == "bad_signature"
    # in the store: an attacker replaces the index, its signature and signer.pub
    release_id = built["result"].release_id
    prefix = f"releases/{release_id}"
    embedded.store.put(f"{prefix}/signer.pub", io.BytesIO(signer_pem(other.public_key())))
    embedded.store.put(f"{prefix}/index.sig", io.BytesIO(other.sign(index)))
    pinned = embedded.releases.signing.public_pem()
    with pytest.raises(ReleaseError) as info:
        pull(embedded.store, release_id, built["priv"], tmp_path / "fresh", signer=pinned)
    assert info.value.code == "bad_signature"


def test_revocation_removes_the_sample_at_next_pull_and_resume_skips(
    embedded: Any, built: dict[str, Any]
) -> None:
    out, priv = built["out"], built["priv"]
    release_id = built["result"].release_id
    first = built["pulled"]
    assert first.downloaded == first.files and first.removed_samples == 0
    # resume: nothing re-downloaded; a missing file is fetched again, a left-over .part removed
    again = pull(embedded.store, release_id, priv, out)
    assert (again.downloaded, again.skipped) == (0, first.files)
    (out / "datasheet.md").unlink()
    (out / "shard-000000.tar.part").write_bytes(b"partial")
    third = pull(embedded.store, release_id, priv, out)
    assert (third.downloaded, third.skipped) == (1, first.files - 1)
    assert not list(out.glob("*.part"))
    # a subject withdraws while the store's purge is deferred (a broker's task not run yet):
    # the signed revocation list names their pseudonym with a higher sequence number, and the
    # pull removes the sample locally, deriving it from the signed list and manifest
    svc = embedded.releases
    svc.purge_later = lambda rid: None
    victim = built["pop"].ok[0]
    embedded.rights.withdraw_consent(victim)
    pseud = svc.subject_pseudonym(pseudonym_key(embedded, release_id), victim)
    rev = json.loads(embedded.store.get(f"releases/{release_id}/revocations.json").read())
    assert rev["subjects"] == [pseud] and rev["sequence"] == first.revocation_sequence + 1
    assert svc.pending_purge(release_id)
    fourth = pull(embedded.store, release_id, priv, out)
    assert fourth.removed_samples == 1 and fourth.samples == first.samples - 1
    assert fourth.downloaded == 0

    def subjects_in_shards() -> set[str]:
        found = set()
        for shard in out.glob("shard-*.tar"):
            with tarfile.open(shard) as tar:
                for info in tar:
                    if info.name.endswith(".json"):
                        fh = tar.extractfile(info)
                        assert fh is not None
                        found.add(json.loads(fh.read())["subject"])
        return found

    assert pseud not in subjects_in_shards()
    assert not (out / "revoked.json").exists()  # no unsigned local state
    assert verify(out).removed_samples == 1
    fifth = pull(embedded.store, release_id, priv, out)
    assert fifth.downloaded == 0 and fifth.removed_samples == 0
    # the purge runs (here: the operator's refresh): the store's release is rebuilt without
    # the sample, and the next pull fetches the rebuilt shard and documents
    svc.purge_later = None
    rows = svc.refresh_revocations()
    assert rows == [{"release_id": release_id, "revoked": 1, "purged_samples": 1}]
    assert not svc.pending_purge(release_id)
    sixth = pull(embedded.store, release_id, priv, out)
    # the 3 documents; the rebuilt shard is byte for byte the locally rewritten one
    assert sixth.downloaded == 3 and sixth.samples == first.samples - 1
    media = [r for r in read_manifest(out) if r["kind"] == "media"]
    assert len(media) == first.samples - 1 and pseud not in {r["subject"] for r in media}
    assert pseud not in subjects_in_shards()
    assert (
        "Since publication, 1 sample of revoked subjects was removed"
        in (out / "datasheet.md").read_text()
    )
    done = verify(out)
    assert done.removed_samples == 0 and done.samples == first.samples - 1


def test_erasure_reaches_published_releases(embedded: Any, built: dict[str, Any]) -> None:
    release_id = built["result"].release_id
    victim = built["pop"].ok[1]
    embedded.rights.erase(victim)
    pseud = embedded.releases.subject_pseudonym(pseudonym_key(embedded, release_id), victim)
    rev = json.loads(embedded.store.get(f"releases/{release_id}/revocations.json").read())
    assert rev["subjects"] == [pseud]
    pulled = pull(embedded.store, release_id, built["priv"], built["out"])
    assert pulled.samples == built["pulled"].samples - 1
    assert pseud not in {r["subject"] for r in read_manifest(built["out"])}
    assert embedded.releases.result(release_id).samples == built["pulled"].samples - 1


def test_revoking_a_release_deletes_it(
    embedded: Any, built: dict[str, Any], tmp_path: Path
) -> None:
    release_id = built["result"].release_id
    got = embedded.releases.revoke(release_id)
    assert got["deleted"] > 0 and not list(embedded.store.keys(f"releases/{release_id}/"))
    with pytest.raises(ReleaseError) as info:
        pull(
            embedded.store,
            release_id,
            built["priv"],
            tmp_path / "late",
            signer=embedded.releases.signing.public_pem(),
        )
    assert info.value.code == "not_found"
    assert embedded.releases.result(release_id).status == "revoked"
    assert embedded.releases.refresh_revocations() == []  # nothing left to re-sign
    with pytest.raises(ReleaseError) as info:
        embedded.releases.grant(release_id, built["pub"])
    assert info.value.code == "not_published"


def test_release_keys_survive_kek_rotation(
    embedded: Any, built: dict[str, Any], tmp_path: Path
) -> None:
    from worker.cli import app
    from worker.research.release.signing import SigningKeys

    old = embedded.keyring.current().version
    pem = embedded.releases.signing.public_pem()
    res = CliRunner().invoke(app, ["keys", "rotate", "--json"])  # the operator's one command
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["releases_rewrapped"] == 1
    embedded.keyring.retire(old)
    assert SigningKeys(embedded.db, embedded.keyring).public_pem() == pem
    priv, pub = researcher(tmp_path, "frank")
    embedded.releases.grant(built["result"].release_id, pub)  # unwraps under the new KEK
    assert pull(embedded.store, built["result"].release_id, priv, tmp_path / "f").samples == 15


def test_a_redelivered_shard_task_rewrites_nothing(embedded: Any, built: dict[str, Any]) -> None:
    release_id = built["result"].release_id
    key = f"releases/{release_id}/files/shard-000000.tar"
    before = embedded.store.get(key).read()
    assert embedded.releases.build_shard(release_id, 0) is False
    assert embedded.store.get(key).read() == before
    assert verify(built["out"]).files > 0


def test_cli_commands_json(embedded: Any, sample_images: list[bytes], tmp_path: Path) -> None:
    from worker.cli import app

    populate(embedded, sample_images, n_ok=8, tag="cli")
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> dict[str, Any]:
        res = runner.invoke(app, list(args))
        assert res.exit_code == code, res.output
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        return out

    rel = run("research", "release", "--name", "cli-1", "--k", "2", "--json")
    assert set(rel) >= {"release_id", "samples", "k_achieved", "suppressed", "shards"}
    assert rel["samples"] == 9 and rel["k_achieved"] >= 2 and rel["shards"] == 1
    err = run("research", "release", "--name", "cli-2", "--operator", "blur", "--json", code=1)
    assert err["error"] == "no_eligible_samples"
    assert err["funnel"]["stored_samples"] == 0 and "sampling" in err["funnel"]
    # every research command takes a name or an id; the funnel is in the status too
    status = run("research", "status", "cli-1", "--json")
    assert status["release_id"] == rel["release_id"] and status["funnel"]["released"] == 9
    assert status["funnel"]["excluded"]["minor_without_guardian"] == 1
    listed = runner.invoke(app, ["research", "list"], env={"COLUMNS": "80"})
    assert listed.exit_code == 0 and rel["release_id"] in listed.stdout, listed.stdout
    keys = run("research", "keygen", "--out", str(tmp_path / "k"), "--json")
    assert "pub" in Path(keys["public_key"]).name
    assert Path(keys["private_key"]).stat().st_mode & 0o777 == 0o600
    g = run("research", "grant", rel["release_id"], keys["public_key"], "--json")
    assert g["fingerprint"] == keys["fingerprint"]
    signer = tmp_path / "signer.pub"
    run("research", "signing-key", "--out", str(signer), "--json")
    p = run(
        "research",
        "pull",
        "cli-1",  # by name: resolved among the indexes signed by the pinned signer
        "--key",
        keys["private_key"],
        "--out",
        str(tmp_path / "o"),
        "--signer",
        str(signer),
        "--json",
    )
    assert p["samples"] == 9 and p["downloaded"] == p["files"]
    v = run("research", "verify", str(tmp_path / "o"), "--signer", str(signer), "--json")
    assert v["ok"] is True
    # without a pin nothing is trusted; pinned once, later calls need no --signer
    refused = run("research", "verify", str(tmp_path / "o"), "--json", code=2)
    assert refused["error"] == "untrusted_signer" and "research trust" in refused["message"]
    pinned = run("research", "trust", str(signer), "--json")
    assert pinned["new"] is True and pinned["fingerprint"]
    assert run("research", "verify", str(tmp_path / "o"), "--json")["ok"] is True
    # the table form (rich progress bar on stderr) resumes: everything already there
    plain = runner.invoke(
        app,
        [
            "research",
            "pull",
            rel["release_id"],
            "--key",
            keys["private_key"],
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert plain.exit_code == 0 and "skipped" in plain.stdout, plain.output
    r = run("research", "revocations", "refresh", "--json")
    assert r["releases"][0]["revoked"] == 0
    shard = tmp_path / "o" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = run("research", "verify", str(tmp_path / "o"), "--json", code=1)
    assert bad["error"] == "checksum_mismatch" and bad["path"] == "shard-000000.tar"


# ----- S3 + PostgreSQL, and the fan-out through a real worker ---------------------------------


def test_release_on_s3_and_postgres(
    make_settings: Any,
    pg_url: str,
    s3_endpoint: str,
    s3_bucket: str,
    sample_images: list[bytes],
    tmp_path: Path,
) -> None:
    import boto3

    from tests.conftest import REGION
    from worker.bootstrap import Container

    container = Container(
        make_settings(
            database_url=pg_url,
            store_url=f"s3://{s3_bucket}/p",
            s3_endpoint_url=s3_endpoint,
            s3_region=REGION,
            store_region=REGION,
            research={"shard_samples": 4},
        )
    )
    try:
        pop = populate(container, sample_images, n_ok=10, tag="s3")
        res = container.releases.create(ReleaseRequest(name="s3-rel", k=2))
        assert res.status == "published" and res.shards == 3 and res.samples == 11
        priv, pub = researcher(tmp_path, "bob")
        container.releases.grant("s3-rel", pub)
        out = tmp_path / "s3pull"
        got = pull(container.store, res.release_id, priv, out)
        assert got.samples == 11 and len(list(out.glob("shard-*.tar"))) == 3
        verify(out)
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
        rel_keys = [k for k in keys if k.startswith(f"p/releases/{res.release_id}/")]
        assert not [k for k in rel_keys if "/parts/" in k]  # build parts removed
        with container.db.session() as s:
            from sqlalchemy import select

            rows = set(
                s.scalars(
                    select(StoredObject.key).where(
                        StoredObject.object_class == "release", StoredObject.deleted_at.is_(None)
                    )
                )
            )
        assert {k.removeprefix("p/") for k in rel_keys} == rows  # every object has a row
        container.rights.withdraw_consent(pop.ok[1])
        again = pull(container.store, res.release_id, priv, out)
        assert again.samples == 10 and again.removed_samples == 0  # the store was rebuilt
        assert verify(out).samples == 10
    finally:
        container.close()


@pytest.mark.services
def test_revocation_sequence_only_grows_under_concurrent_re_signing(
    make_settings: Any, pg_url: str, sample_images: list[bytes]
) -> None:
    """Two processes' worth of services (two engines on one PostgreSQL ledger, one store)
    re-sign the same release's list at the same time: every sequence number is taken once,
    and the stored list is the newest."""
    import threading

    from sqlalchemy import select

    from worker.bootstrap import Container
    from worker.ledger.models import AuditEntry

    a = Container(make_settings(database_url=pg_url))
    b = Container(make_settings(database_url=pg_url))
    try:
        populate(a, sample_images, n_ok=4, tag="seq")
        res = a.releases.create(ReleaseRequest(name="seq", k=2))
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def sign(c: Any) -> None:
            try:
                start.wait()
                for _ in range(5):
                    c.releases._write_revocations(res.release_id, force=True)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=sign, args=(c,)) for c in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        with a.db.session() as s:
            row = s.get(Release, res.release_id)
            assert row is not None and row.revocation_seq == 11
            seqs = [
                json.loads(e.details)["sequence"]
                for e in s.scalars(
                    select(AuditEntry).where(AuditEntry.event == "release.revocations")
                )
            ]
        assert sorted(seqs) == list(range(1, 12))
        doc = json.loads(a.store.get(f"releases/{res.release_id}/revocations.json").read())
        assert doc["sequence"] == 11
    finally:
        a.close()
        b.close()


@pytest.mark.slow
@pytest.mark.services
def test_release_fans_out_on_a_real_worker(
    make_settings: Any,
    broker_deployment: Any,
    sample_images: list[bytes],
    tmp_path: Path,
) -> None:
    from tests.workers import celery_worker, wait_for
    from worker.bootstrap import Container

    settings = broker_deployment("p") | {"research__shard_samples": 4}
    container = Container(
        make_settings(
            **{k: v for k, v in settings.items() if k != "research__shard_samples"},
            research={"shard_samples": 4},
        )
    )
    try:
        pop = populate(container, sample_images, n_ok=10, tag="w")
        with celery_worker(settings, tmp_path / "w.log", queues="research", concurrency=2):
            res = container.releases.create(ReleaseRequest(name="fan", k=2))
            # planned here, built by the worker (a fast worker may already be finishing)
            assert res.status in ("building", "finishing", "published") and res.shards == 3

            def published() -> bool:
                return bool(container.releases.result(res.release_id).status == "published")

            assert wait_for(published, 90), (tmp_path / "w.log").read_text()[-3000:]
            final = container.releases.result(res.release_id)
            assert final.samples == 11 and final.shards == 3
            log = (tmp_path / "w.log").read_text()
            assert log.count("facemedia.research.build_shard") >= 3
            assert "facemedia.research.finish_release" in log
            priv, pub = researcher(tmp_path, "carol")
            container.releases.grant(res.release_id, pub)
            got = pull(container.store, res.release_id, priv, tmp_path / "fan")
            assert got.samples == 11
            # with a broker a withdrawal re-signs the list at once and sends the purge to the
            # worker (the release's finish task), which rebuilds the stored release
            container.rights.withdraw_consent(pop.ok[0])
            rev = json.loads(
                container.store.get(f"releases/{res.release_id}/revocations.json").read()
            )
            assert len(rev["subjects"]) == 1 and rev["sequence"] == 2

            def purged() -> bool:
                return not container.releases.pending_purge(res.release_id)

            assert wait_for(purged, 90), (tmp_path / "w.log").read_text()[-3000:]
        again = pull(container.store, res.release_id, priv, tmp_path / "fan")
        assert again.samples == 10 and again.removed_samples == 0
        assert container.releases.result(res.release_id).samples == 10
    finally:
        container.close()


def test_beat_retries_a_lost_purge(embedded: Any, built: dict[str, Any]) -> None:
    """A purge whose task never ran (lost, or out of retries) is done by beat's task."""
    from worker.tasks.releases import purge_revoked

    release_id = built["result"].release_id
    svc = embedded.releases
    svc.purge_later = lambda rid: None  # the broker's purge task is lost
    embedded.rights.withdraw_consent(built["pop"].ok[0])
    assert svc.pending_purge(release_id)
    svc.purge_later = None
    done = purge_revoked.apply().get()
    assert [(d["release_id"], d["removed"]) for d in done] == [(release_id, 1)]
    assert not svc.pending_purge(release_id)
    assert purge_revoked.apply().get() == []  # nothing pending: nothing done
