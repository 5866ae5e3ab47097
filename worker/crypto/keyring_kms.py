"""A keyring backed by AWS KMS (or any KMS-compatible endpoint) through an injected boto3 client.

Wrapping is KMS ``Encrypt`` (new subject keys use ``GenerateDataKey``) and unwrapping is KMS
``Decrypt``; the wrap context is passed as the KMS ``EncryptionContext`` so KMS authenticates it
(and records it in CloudTrail: keep it free of personal data). A KEK *version* is the ARN of the
KMS key that produced the wrap.

Rotation, two ways:

* ``rotate(new_key_id)`` switches to another KMS key. The old key stays accepted for unwrapping
  until ``retire(old_arn)``; after a restart, list keys that must still unwrap in
  ``previous_key_ids``.
* ``rotate()`` asks KMS to rotate the backing material of the current key in place
  (``RotateKeyOnDemand``). The ARN - hence the version - does not change; KMS keeps old
  material to decrypt old wraps.

Retiring a version only stops this process from using it.

KEK epochs (cryptographic erasure): KMS's own rotation keeps old material for ever, so
:meth:`KmsKeyring.begin_epoch` switches to *another* KMS key - the next unused one of an
operator-provided list (``epoch_keys``), or one made with ``kms:CreateKey`` in the current key's
region - and :meth:`KmsKeyring.destroy` schedules the old key's deletion with the shortest window
KMS allows (7 days; a key pending deletion already refuses ``Decrypt``). The epoch service records
the current key in the ledger; ``state`` reads it back, so every process wraps under the key the
newest epoch chose and stops accepting keys an epoch destroyed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from .context import canonical_context
from .errors import KeyringError
from .keyring import KEY_SIZE, KekRef, Keyring, WrappedKey
from .secret import SecretKey

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient
else:
    KMSClient = Any

__all__ = ["KMS_DELETION_WINDOW_DAYS", "KmsEpochState", "KmsKeyring"]

KMS_DELETION_WINDOW_DAYS = 7
"""The shortest ``PendingWindowInDays`` KMS accepts for ``ScheduleKeyDeletion``."""

_KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):[0-9]*:key/[A-Za-z0-9-]+$")
_ANY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):")

_T = TypeVar("_T")


@dataclass(frozen=True)
class KmsEpochState:
    """What the ledger says about this keyring's keys: the current key (``None``: the configured
    one) and the keys an epoch destroyed (ARNs, never accepted again)."""

    current: str | None
    destroyed: frozenset[str]


class KmsKeyring(Keyring):
    """KEKs held by KMS; see the module docstring for versions and rotation."""

    def __init__(
        self,
        key_id: str,
        client: KMSClient,
        *,
        previous_key_ids: Sequence[str] = (),
        keyring_id: str = "kms",
        epoch_keys: Sequence[str] = (),
        state: Callable[[], KmsEpochState | None] | None = None,
    ) -> None:
        """``epoch_keys``: the keys an epoch may switch to, in order (empty: ``CreateKey``);
        ``state``: reads the current and destroyed keys from the ledger (see the module doc)."""
        if not key_id:
            raise KeyringError("KmsKeyring needs a KMS key id, ARN or alias")
        self._client = client
        self._keyring_id = keyring_id
        self._lock = threading.RLock()
        self._current = key_id
        self._accepted: list[str] = [k for k in previous_key_ids if k != key_id] + [key_id]
        self._arns: dict[str, str] = {}
        self._epoch_keys = tuple(epoch_keys)
        self._state = state
        self._destroyed: set[str] = set()

    @property
    def keyring_id(self) -> str:
        return self._keyring_id

    @property
    def key_id(self) -> str:
        """The configured id (ARN, key id or alias) of the current KMS key."""
        return self._current

    @property
    def region(self) -> str | None:
        match = _ANY_ARN_RE.match(self._current)
        if match:
            return match.group(1)
        region = self._client.meta.region_name
        return str(region) if region else None

    def current(self) -> KekRef:
        self._sync()
        return KekRef(self._keyring_id, self._arn(self._current))

    def versions(self) -> list[str]:
        self._sync()
        with self._lock:
            return [self._arn(k) for k in self._accepted]

    def wrap(self, key: bytes, context: Mapping[str, str]) -> WrappedKey:
        if len(key) != KEY_SIZE:
            raise KeyringError(f"only {KEY_SIZE}-byte keys can be wrapped")
        self._sync()
        resp = self._call(
            "Encrypt",
            lambda: self._client.encrypt(
                KeyId=self._current,
                Plaintext=bytes(key),
                EncryptionContext=self._context(context),
            ),
        )
        arn = str(resp["KeyId"])
        self._remember(self._current, arn)
        return WrappedKey(KekRef(self._keyring_id, arn), bytes(resp["CiphertextBlob"]))

    def generate_key(self, context: Mapping[str, str]) -> tuple[SecretKey, WrappedKey]:
        """A fresh key from KMS ``GenerateDataKey`` (AES_256) with its wrap."""
        self._sync()
        resp = self._call(
            "GenerateDataKey",
            lambda: self._client.generate_data_key(
                KeyId=self._current,
                KeySpec="AES_256",
                EncryptionContext=self._context(context),
            ),
        )
        plaintext = bytes(resp["Plaintext"])
        if len(plaintext) != KEY_SIZE:
            raise KeyringError("KMS GenerateDataKey returned a key of the wrong size")
        arn = str(resp["KeyId"])
        self._remember(self._current, arn)
        return SecretKey(plaintext), WrappedKey(
            KekRef(self._keyring_id, arn), bytes(resp["CiphertextBlob"])
        )

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        if wrapped.kek.keyring_id != self._keyring_id:
            raise KeyringError(
                f"key was wrapped by keyring {wrapped.kek.keyring_id!r}, "
                f"not by this one ({self._keyring_id!r})"
            )
        version = wrapped.kek.version
        if version not in self.versions():
            raise KeyringError(f"KEK version {version!r} is unknown or retired")
        resp = self._call(
            "Decrypt",
            lambda: self._client.decrypt(
                CiphertextBlob=wrapped.blob,
                EncryptionContext=self._context(context),
                KeyId=version,
            ),
        )
        return bytes(resp["Plaintext"])

    def rotate(self, new_kek: str | None = None) -> KekRef:
        with self._lock:
            if new_kek is None:
                current = self._current
                self._call(
                    "RotateKeyOnDemand", lambda: self._client.rotate_key_on_demand(KeyId=current)
                )
                return self.current()
            arn = self._arn(new_kek)  # checks that the key exists and is visible
            if new_kek not in self._accepted:
                self._accepted.append(new_kek)
            else:
                self._accepted.remove(new_kek)
                self._accepted.append(new_kek)
            self._current = new_kek
            return KekRef(self._keyring_id, arn)

    def retire(self, version: str) -> None:
        with self._lock:
            arn = self._arn(version)
            if arn == self._arn(self._current):
                raise KeyringError("the current KMS key cannot be retired; rotate first")
            self._accepted = [k for k in self._accepted if self._arn(k) != arn]

    # -- KEK epochs --------------------------------------------------------------------------

    @property
    def destruction_delay(self) -> timedelta:
        """KMS deletes a key only after its waiting period: the shortest one, 7 days."""
        return timedelta(days=KMS_DELETION_WINDOW_DAYS)

    def begin_epoch(self) -> KekRef:
        """Switch to a new KMS key: the next unused one of ``epoch_keys``, else a key made with
        ``CreateKey`` in the current key's region. Never KMS's in-place rotation (which keeps
        the old material for ever)."""
        self._sync()
        with self._lock:
            used = {self._arn(k) for k in self._accepted} | set(self._destroyed)
            if self._epoch_keys:
                fresh = [k for k in self._epoch_keys if self._arn(k) not in used]
                if not fresh:
                    raise KeyringError(
                        "no unused KMS key left in kms_epoch_keys: add one, or leave the list "
                        "empty to let the service create keys"
                    )
                return self.rotate(fresh[0])
            region = self.region
            if region is not None and self._client.meta.region_name not in (None, region):
                raise KeyringError("the KMS client's region differs from the current key's")
            resp = self._call(
                "CreateKey",
                lambda: self._client.create_key(
                    Description="facemedia KEK (epoch)",
                    KeyUsage="ENCRYPT_DECRYPT",
                    KeySpec="SYMMETRIC_DEFAULT",
                ),
            )
            arn = str(resp["KeyMetadata"]["Arn"])
            made = _ANY_ARN_RE.match(arn)
            if region is not None and (made is None or made.group(1) != region):
                raise KeyringError("KMS created the epoch key outside the current key's region")
            self._remember(arn, arn)
            return self.rotate(arn)

    def destroy(self, version: str) -> None:
        """Stop accepting the key and schedule its deletion (7 days); idempotent."""
        with self._lock:
            arn = self._arn(version)
            if arn == self._arn(self._current):
                raise KeyringError("the current KMS key cannot be destroyed; rotate first")
            self.retire(arn)
            self._destroyed.add(arn)
        key_id = arn.rsplit("/", 1)[-1]  # the key id: KMS accepts it, or the ARN
        try:
            self._client.schedule_key_deletion(
                KeyId=key_id, PendingWindowInDays=KMS_DELETION_WINDOW_DAYS
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "unknown")
            if code != "KMSInvalidStateException":  # already pending deletion: done before
                raise KeyringError(f"KMS ScheduleKeyDeletion failed: {code}") from exc
        except BotoCoreError as exc:
            raise KeyringError(f"KMS ScheduleKeyDeletion failed: {type(exc).__name__}") from exc

    def _sync(self) -> None:
        """Follow the ledger: switch to the current key it names, drop the keys it destroyed."""
        if self._state is None:
            return
        state = self._state()
        if state is None:
            return
        with self._lock:
            if state.destroyed - self._destroyed:
                self._destroyed |= state.destroyed
            if state.current is not None and state.current != self._current:
                if state.current not in self._accepted:
                    self._accepted.append(state.current)
                self._current = state.current
            if self._destroyed:
                current = self._current
                self._accepted = [
                    k for k in self._accepted if k == current or self._arn(k) not in self._destroyed
                ]

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _context(context: Mapping[str, str]) -> dict[str, str]:
        canonical_context(context)  # validates the types
        return dict(context)

    def _remember(self, key_id: str, arn: str) -> None:
        with self._lock:
            self._arns[key_id] = arn
            self._arns[arn] = arn

    def _arn(self, key_id: str) -> str:
        with self._lock:
            cached = self._arns.get(key_id)
        if cached is not None:
            return cached
        if _KEY_ARN_RE.match(key_id):
            arn = key_id
        else:
            resp = self._call("DescribeKey", lambda: self._client.describe_key(KeyId=key_id))
            arn = str(resp["KeyMetadata"]["Arn"])
        self._remember(key_id, arn)
        return arn

    @staticmethod
    def _call(operation: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "unknown")
            raise KeyringError(f"KMS {operation} failed: {code}") from exc
        except BotoCoreError as exc:
            raise KeyringError(f"KMS {operation} failed: {type(exc).__name__}") from exc

    def __repr__(self) -> str:
        return f"KmsKeyring(keyring_id={self._keyring_id!r}, key_id={self._current!r})"
