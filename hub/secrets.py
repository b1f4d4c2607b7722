"""Credential formats and how their secrets are kept.

    API key        prl_<key id>_<secret><checksum>      stored as HMAC-SHA256(pepper, secret)
    refresh token  prt_<token id>_<secret><checksum>    stored as HMAC-SHA256(pepper, secret)
    invite code    pri_<invite id>_<secret><checksum>   stored as HMAC-SHA256(pepper, secret)
    recovery key   prk_<secret><checksum>               stored as an argon2id hash
    webhook secret whsec_<base64 of 24 bytes>           stored encrypted (`Sealer`): the hub signs with it

The id part is public and indexed, so a presented credential is found with one lookup and then
checked in constant time. The checksum (CRC-32 of the rest) lets secret scanners recognise a real
key and lets the hub reject a mistyped one without touching the database.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_LENGTH: Final = 43  # 32 random bytes in base62
CHECKSUM_LENGTH: Final = 6

API_KEY_KIND: Final = "prl"
REFRESH_KIND: Final = "prt"
INVITE_KIND: Final = "pri"
RECOVERY_KIND: Final = "prk"


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def _checksum(text: str) -> str:
    return _base62(binascii.crc32(text.encode()), CHECKSUM_LENGTH)


def _random_secret() -> str:
    return _base62(int.from_bytes(os.urandom(32), "big"), SECRET_LENGTH)


def issue(kind: str, record_id: str) -> tuple[str, str]:
    """A new `(credential, secret)` for the record `record_id` (`key_…`, `rft_…`, `inv_…`)."""
    secret = _random_secret()
    body = f"{kind}_{record_id.split('_', 1)[1]}_{secret}"
    return body + _checksum(body), secret


def parse(kind: str, id_prefix: str, credential: str) -> tuple[str, str] | None:
    """`(record_id, secret)` of a well-formed credential of `kind`, else None."""
    parts = credential.split("_")
    if len(parts) != 3 or parts[0] != kind or len(parts[2]) != SECRET_LENGTH + CHECKSUM_LENGTH:
        return None
    body, checksum = credential[:-CHECKSUM_LENGTH], credential[-CHECKSUM_LENGTH:]
    if not hmac.compare_digest(_checksum(body), checksum):
        return None
    return f"{id_prefix}_{parts[1]}", parts[2][:SECRET_LENGTH]


def new_recovery_key() -> str:
    body = f"{RECOVERY_KIND}_{_random_secret()}"
    return body + _checksum(body)


def looks_like(kind: str, credential: str) -> bool:
    return credential.startswith(kind + "_")


@dataclass(frozen=True)
class ServerKeys:
    """The hub's own secrets: the pepper for keyed hashes and the JWT signing keys (newest first).

    Kept in a file outside the database (mode 0600), so a copy of the database alone cannot be
    used to check guessed keys or to mint tokens. Every node of one deployment shares the file.
    """

    pepper: bytes
    signing_keys: tuple[tuple[str, Ed25519PrivateKey], ...]

    def keyed_hash(self, secret: str) -> str:
        return hmac.new(self.pepper, secret.encode(), hashlib.sha256).hexdigest()

    def matches(self, secret: str, stored_hash: str) -> bool:
        return hmac.compare_digest(self.keyed_hash(secret), stored_hash)

    def sealer(self, purpose: str) -> "Sealer":
        """Encryption for secrets the hub must use again (a webhook's signing secret), keyed by the pepper."""
        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=f"parley {purpose}".encode()).derive(self.pepper)
        return Sealer(AESGCM(key))

    @classmethod
    def load_or_create(cls, path: Path) -> "ServerKeys":
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            raw = Ed25519PrivateKey.generate().private_bytes_raw()
            document = {
                "pepper": base64.b64encode(os.urandom(32)).decode(),
                "signing_keys": [{"kid": _key_id(raw), "ed25519": base64.b64encode(raw).decode()}],
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump(document, file, indent=2)
        document = json.loads(path.read_text())
        keys = tuple(
            (entry["kid"], Ed25519PrivateKey.from_private_bytes(base64.b64decode(entry["ed25519"])))
            for entry in document["signing_keys"]
        )
        return cls(pepper=base64.b64decode(document["pepper"]), signing_keys=keys)


class Sealer:
    """AES-256-GCM, `v1.<base64url(nonce + ciphertext)>`; `context` (the owning record's id) is bound in as
    associated data, so a sealed value copied to another record does not open."""

    def __init__(self, aead: AESGCM) -> None:
        self._aead = aead

    def seal(self, secret: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return "v1." + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str:
        """Raises:
            cryptography.exceptions.InvalidTag: not sealed by this key for this context.
        """
        raw = base64.urlsafe_b64decode(sealed.removeprefix("v1."))
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()


def _key_id(raw_private: bytes) -> str:
    public = Ed25519PrivateKey.from_private_bytes(raw_private).public_key().public_bytes_raw()
    return hashlib.sha256(public).hexdigest()[:16]


class RecoveryKeyHasher:
    """argon2id, blocking: call from a worker thread."""

    def __init__(self, memory_kib: int, time_cost: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)

    def hash(self, recovery_key: str) -> str:
        return self._hasher.hash(recovery_key)

    def verify(self, stored_hash: str, recovery_key: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, recovery_key)
        except (VerificationError, InvalidHashError):
            return False

