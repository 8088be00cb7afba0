"""The key ring that encrypts every stored token, and the column type that uses it.

The ring is a MultiFernet: the keys in TOKEN_ENCRYPTION_KEYS first (the first one encrypts), then
the key the seed derived from STATE_TOKEN_SECRET, so a database the seed wrote stays readable and
can be rotated onto a real key. The ring is built once at start-up and attached to the engine; the
column type never reads the environment.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from service.errors import SettingsError, UndecryptableValue

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from service.settings import Settings

# The seed's derivation, kept bit for bit so its ciphertexts still open.
SEED_SALT = b"salt_"
SEED_ITERATIONS = 100_000

RING_SETTINGS = "TOKEN_ENCRYPTION_KEYS and STATE_TOKEN_SECRET"
FINGERPRINT_DIGITS = 16


@functools.lru_cache(maxsize=16)
def derive_seed_key(state_token_secret: str) -> bytes:
    # 100,000 PBKDF2 rounds cost ~50 ms: cached so it runs once per process and secret, not per call.
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=SEED_SALT, iterations=SEED_ITERATIONS)
    return base64.urlsafe_b64encode(kdf.derive(state_token_secret.encode()))


def generate_key() -> str:
    return Fernet.generate_key().decode()


class KeyRing:
    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise SettingsError(f"The encryption key ring is empty: set {RING_SETTINGS}.")
        self._fernets = [Fernet(key) for key in keys]
        self._primary = self._fernets[0]
        self._ring = MultiFernet(self._fernets)
        # The event log's token fingerprints: an HMAC under a key of their own, derived from the primary key.
        primary = keys[0].encode() if isinstance(keys[0], str) else keys[0]
        self._fingerprint_key = hmac.new(primary, b"salesbot token fingerprint", hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        return cls.from_secrets([str(key) for key in settings.token_encryption_keys], str(settings.state_token_secret))

    @classmethod
    def from_secrets(cls, encryption_keys: Sequence[str], state_token_secret: str | None) -> KeyRing:
        keys: list[bytes | str] = []
        for position, key in enumerate(encryption_keys, start=1):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise SettingsError(
                    f"TOKEN_ENCRYPTION_KEYS entry {position} is not a Fernet key (32 url-safe base64-encoded "
                    "bytes); make one with `salesbot keys generate`."
                ) from None
            keys.append(key)
        if state_token_secret:
            keys.append(derive_seed_key(state_token_secret))
        return cls(keys)

    @property
    def size(self) -> int:
        return len(self._fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._primary.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str, *, key_name: str | None = None) -> str:
        # Each key in turn, as MultiFernet.decrypt does, without its wrapper's cost: this runs on
        # every cache miss, and nearly every value opens with the first key.
        token = ciphertext.encode()
        for fernet in self._fernets:
            try:
                return fernet.decrypt(token).decode()
            except InvalidToken:
                continue
            except UnicodeError:
                break
        raise undecryptable(key_name)

    def fingerprint(self, plaintext: str) -> str:
        """A keyed digest of a token (16 hex digits): the same token gives the same one while the primary
        key stays, so support can tell "same token or a new one" without it. Nothing opens it."""
        return hmac.new(self._fingerprint_key, plaintext.encode(), hashlib.sha256).hexdigest()[:FINGERPRINT_DIGITS]

    def is_current(self, ciphertext: str) -> bool:
        """True when the primary key opens it, i.e. a rotation has nothing to do for this value."""
        try:
            self._primary.decrypt(ciphertext.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, ciphertext: str, *, key_name: str | None = None) -> str:
        try:
            return self._ring.rotate(ciphertext.encode()).decode()
        except InvalidToken:
            raise undecryptable(key_name) from None


def undecryptable(key_name: str | None) -> UndecryptableValue:
    subject = f"The stored value of {key_name!r}" if key_name else "A stored value"
    return UndecryptableValue(
        f"{subject} cannot be decrypted by any key in the ring: check {RING_SETTINGS} "
        "(the key that encrypted it must still be listed, or the seed's STATE_TOKEN_SECRET unchanged)."
    )


# --- the column type -----------------------------------------------------------------------------

_RING_ATTRIBUTE = "salesbot_keyring"


def attach_keyring(engine: AsyncEngine | Engine, ring: KeyRing) -> None:
    # Bind/result processors receive only the dialect, and every engine has its own dialect object:
    # hanging the ring there gives each engine (and each test) its own keys without a global.
    setattr(getattr(engine, "sync_engine", engine).dialect, _RING_ATTRIBUTE, ring)


def keyring_of(dialect: Dialect) -> KeyRing:
    ring = getattr(dialect, _RING_ATTRIBUTE, None)
    if ring is None:
        raise SettingsError("This database engine has no encryption key ring attached (see service.db.create_engine).")
    return ring


class EncryptedText(TypeDecorator[str]):
    """Text that is Fernet ciphertext on disk and plaintext in Python."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring_of(dialect).encrypt(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring_of(dialect).decrypt(value)
