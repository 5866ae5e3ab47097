"""KmsKeyring against moto's KMS over HTTP (no in-process patch); boto3 streams to SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

import boto3
import pytest
from botocore.config import Config

from worker.crypto import (
    DecryptError,
    Envelope,
    InMemorySubjectKeyStore,
    KeyringError,
    KeyShreddedError,
    KmsKeyring,
    SubjectKeys,
)

REGION = "cn-north-1"
CTX = {"object_key": "originals/job-7", "object_class": "original", "job_id": "job-7"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def client(service: str, endpoint: str) -> Any:
    make: Any = boto3.client
    return make(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def kms(endpoint: str) -> Any:
    return client("kms", endpoint)


def new_key(kms: Any) -> str:
    return str(kms.create_key(Description="facemedia test KEK")["KeyMetadata"]["Arn"])


def test_kms_wrap_unwrap_with_context(kms: Any) -> None:
    arn = new_key(kms)
    assert arn.startswith("arn:aws-cn:kms:cn-north-1:")
    keyring = KmsKeyring(arn, kms)
    assert keyring.region == "cn-north-1"
    assert keyring.keyring_id == "kms"
    wrapped = keyring.wrap(b"\x07" * 32, {"subject": "sk_1"})
    assert wrapped.kek.version == arn
    assert b"\x07" * 32 not in wrapped.blob
    assert keyring.unwrap(wrapped, {"subject": "sk_1"}) == b"\x07" * 32
    with pytest.raises(KeyringError, match="Decrypt"):
        keyring.unwrap(wrapped, {"subject": "sk_2"})
    with pytest.raises(KeyringError):
        keyring.unwrap(wrapped, {})
    key, generated = keyring.generate_key({"subject": "sk_3"})
    assert len(key) == 32
    assert keyring.unwrap(generated, {"subject": "sk_3"}) == key.raw()


def test_kms_key_by_alias_and_by_id_resolves_to_arn(kms: Any) -> None:
    arn = new_key(kms)
    key_id = arn.rsplit("/", 1)[1]
    kms.create_alias(AliasName="alias/facemedia-test-" + key_id[:8], TargetKeyId=key_id)
    for ref in (key_id, "alias/facemedia-test-" + key_id[:8]):
        keyring = KmsKeyring(ref, kms)
        assert keyring.current().version == arn
        assert keyring.region == REGION  # from the client
        wrapped = keyring.wrap(b"\x01" * 32, {"a": "b"})
        assert wrapped.kek.version == arn
        assert keyring.unwrap(wrapped, {"a": "b"}) == b"\x01" * 32


def test_kms_rotate_to_a_new_key_and_retire_the_old(kms: Any) -> None:
    old_arn, new_arn = new_key(kms), new_key(kms)
    keyring = KmsKeyring(old_arn, kms)
    old = keyring.wrap(b"\x05" * 32, {"s": "1"})
    ref = keyring.rotate(new_arn)
    assert ref.version == new_arn
    assert keyring.versions() == [old_arn, new_arn]
    new = keyring.wrap(b"\x05" * 32, {"s": "1"})
    assert new.kek.version == new_arn
    assert keyring.unwrap(old, {"s": "1"}) == b"\x05" * 32  # old wraps still unwrap
    with pytest.raises(KeyringError):
        keyring.retire(new_arn)  # current
    keyring.retire(old_arn)
    assert keyring.versions() == [new_arn]
    with pytest.raises(KeyringError, match="retired"):
        keyring.unwrap(old, {"s": "1"})
    # a restarted process that lists the old key still accepts it
    restarted = KmsKeyring(new_arn, kms, previous_key_ids=[old_arn])
    assert restarted.unwrap(old, {"s": "1"}) == b"\x05" * 32
    # in-place rotation of the backing key keeps the version
    assert keyring.rotate() == ref
    assert keyring.unwrap(new, {"s": "1"}) == b"\x05" * 32


def test_kms_failures_become_keyring_errors(kms: Any, endpoint: str) -> None:
    missing = "arn:aws-cn:kms:cn-north-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    with pytest.raises(KeyringError, match="NotFound"):
        KmsKeyring(missing, kms).wrap(b"\x00" * 32, {})
    with pytest.raises(KeyringError):
        KmsKeyring("alias/does-not-exist", kms).current()
    arn = new_key(kms)
    other = KmsKeyring(new_key(kms), kms)
    wrapped = other.wrap(b"\x00" * 32, {})
    with pytest.raises(KeyringError, match="keyring"):  # wrapped by another keyring id
        KmsKeyring(arn, kms, keyring_id="kms-eu").unwrap(wrapped, {})
    with pytest.raises(KeyringError, match="unknown or retired"):  # key not configured here
        KmsKeyring(arn, kms).unwrap(wrapped, {})
    down = client("kms", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(KeyringError, match="KMS Encrypt failed"):
        KmsKeyring(arn, down).wrap(b"\x00" * 32, {})


def test_envelope_over_kms_rotation_and_shredding(kms: Any) -> None:
    keys = SubjectKeys(KmsKeyring(new_key(kms), kms), InMemorySubjectKeyStore())
    env = Envelope(keys, segment_size=1024)
    subject = keys.create()
    other = keys.create()
    pt = os.urandom(5000)
    ct = env.seal(subject, CTX, pt)
    assert Envelope.header_of(ct).kek_version.startswith("arn:aws-cn:kms:")
    old_arn = keys.keyring.current().version

    assert keys.rotate_kek(new_key(kms)) == 2
    keys.retire_kek(old_arn)
    assert env.open(CTX, ct) == pt  # written before rotation, opened after retirement

    keys.destroy(subject)
    with pytest.raises(KeyShreddedError):
        env.open(CTX, ct)
    assert env.open(CTX, env.seal(other, CTX, b"x")) == b"x"


def test_boto3_upload_fileobj_and_streaming_get(s3_endpoint: str, kms: Any) -> None:
    """The reader form feeds boto3's multipart upload (to SeaweedFS); a StreamingBody feeds
    decryption."""
    s3 = client("s3", s3_endpoint)
    bucket = "fm-crypto-" + os.urandom(4).hex()
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    keys = SubjectKeys(KmsKeyring(new_key(kms), kms), InMemorySubjectKeyStore())
    env = Envelope(keys)
    subject = keys.create()
    size = 12 * 1024 * 1024 + 12345  # above the 8 MiB multipart threshold
    plaintext = os.urandom(1 << 20) * 12 + os.urandom(12345)
    assert len(plaintext) == size

    from boto3.s3.transfer import TransferConfig

    sealed = env.encrypt_stream(subject, CTX, cast(BinaryIO, io.BytesIO(plaintext)))
    s3.upload_fileobj(
        sealed,
        bucket,
        "originals/job-7",
        Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=5 << 20),
    )
    head = s3.head_object(Bucket=bucket, Key="originals/job-7")
    assert head["ContentLength"] > size
    body = s3.get_object(Bucket=bucket, Key="originals/job-7")["Body"]
    reader = env.decrypt_stream(CTX, body)
    digest = hashlib.sha256()
    while chunk := reader.read(1 << 20):
        digest.update(chunk)
    assert digest.digest() == hashlib.sha256(plaintext).digest()

    # the same object copied to another key fails to open under that key's context
    s3.copy_object(
        Bucket=bucket,
        Key="outputs/job-8/x",
        CopySource={"Bucket": bucket, "Key": "originals/job-7"},
    )
    moved = s3.get_object(Bucket=bucket, Key="outputs/job-8/x")["Body"]
    with pytest.raises(DecryptError):
        env.decrypt_stream({**CTX, "object_key": "outputs/job-8/x"}, moved)
