from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.fernet import Fernet

from service.crypto import KeyRing, derive_seed_key
from service.errors import SettingsError, UndecryptableValue


def test_seed_key_derivation_matches_pbkdf2() -> None:
    expected = base64.urlsafe_b64encode(hashlib.pbkdf2_hmac("sha256", b"seed-secret", b"salt_", 100_000, 32))
    assert derive_seed_key("seed-secret") == expected


def test_derivation_runs_once_per_secret() -> None:
    KeyRing.from_secrets([], "derive-once-secret")
    misses = derive_seed_key.cache_info().misses
    for _ in range(5):
        KeyRing.from_secrets([], "derive-once-secret")
    assert derive_seed_key.cache_info().misses == misses


def test_primary_key_encrypts_and_seed_key_still_decrypts() -> None:
    primary = Fernet.generate_key().decode()
    ring = KeyRing.from_secrets([primary], "seed-secret")
    seed_ciphertext = Fernet(derive_seed_key("seed-secret")).encrypt(b"shpat_old").decode()
    assert ring.decrypt(seed_ciphertext) == "shpat_old"
    fresh = ring.encrypt("shpat_new")
    assert Fernet(primary.encode()).decrypt(fresh.encode()) == b"shpat_new"
    assert ring.is_current(fresh) and not ring.is_current(seed_ciphertext)
    assert ring.is_current(ring.rotate(seed_ciphertext))


def test_value_no_key_opens_names_the_row_and_the_settings() -> None:
    ciphertext = KeyRing.from_secrets([], "one-secret").encrypt("EAAB-page-token")
    with pytest.raises(UndecryptableValue) as caught:
        KeyRing.from_secrets([], "another-secret").decrypt(ciphertext, key_name="FACEBOOK_ACCESS_TOKEN_42")
    message = caught.value.message
    assert "FACEBOOK_ACCESS_TOKEN_42" in message
    assert "TOKEN_ENCRYPTION_KEYS" in message and "STATE_TOKEN_SECRET" in message
    assert ciphertext not in message and "EAAB" not in message


def test_malformed_encryption_key_names_the_setting() -> None:
    good = Fernet.generate_key().decode()
    with pytest.raises(SettingsError, match="TOKEN_ENCRYPTION_KEYS entry 2"):
        KeyRing.from_secrets([good, "not-a-key"], "secret")
