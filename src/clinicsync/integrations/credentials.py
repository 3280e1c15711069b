"""Encryption of credential secrets at rest, and key rotation.

Secrets are a JSON object of named fields (``{"api_key": ...}``) encrypted with Fernet.
Keys come from CLINICSYNC_SECRET_KEY (comma-separated, newest first; each a Fernet key or
any passphrase, which is stretched to one) or, when that is unset, from a key file created
with mode 0600 under var_dir. MultiFernet decrypts with any listed key and encrypts with
the first, which is what lets rotation proceed without downtime.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.config import Settings
from clinicsync.db.engine import session_scope
from clinicsync.errors import ClinicSyncError
from clinicsync.integrations.models import ApiCredential

KEY_FILE_NAME = "secret.key"
MASK = "••••"


class SecretKeyError(ClinicSyncError):
    status_code = 500
    code = "secret_key_error"


@functools.lru_cache(maxsize=32)
def _fernet_key(material: str) -> bytes:
    raw = material.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except (binascii.Error, ValueError):
        pass
    # A passphrase: stretched so any string of the operator's choosing works as a key.
    digest = hashlib.pbkdf2_hmac("sha256", raw, b"clinicsync-credentials", 200_000)
    return base64.urlsafe_b64encode(digest)


@dataclass(frozen=True)
class KeySource:
    keys: tuple[bytes, ...]
    key_file: Path | None


def key_file_path(settings: Settings) -> Path:
    return Path(settings.var_dir) / KEY_FILE_NAME


def _write_key_file(path: Path, keys: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(b"\n".join(keys) + b"\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def load_keys(settings: Settings) -> KeySource:
    if settings.secret_key:
        parts = [part for part in settings.secret_key.split(",") if part.strip()]
        return KeySource(tuple(_fernet_key(part) for part in parts), None)
    path = key_file_path(settings)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(Fernet.generate_key() + b"\n")
    keys = [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
    if not keys:
        raise SecretKeyError(f"the key file {path} is empty")
    return KeySource(tuple(keys), path)


class SecretCipher:
    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise SecretKeyError("no encryption key configured")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, secrets: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode()).decode()

    def decrypt(self, token: str) -> dict[str, str]:
        try:
            data = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise SecretKeyError(
                "a stored credential cannot be decrypted with the configured keys; "
                "was CLINICSYNC_SECRET_KEY or the key file changed?"
            ) from None
        return {str(key): str(value) for key, value in data.items()}

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode()).decode()


_ciphers: dict[tuple[bytes, ...], SecretCipher] = {}


def cipher_for(settings: Settings) -> SecretCipher:
    keys = load_keys(settings).keys
    cipher = _ciphers.get(keys)
    if cipher is None:
        cipher = _ciphers[keys] = SecretCipher(keys)
    return cipher


def mask(value: str) -> str:
    """Only the last 4 characters, and none of a value too short to hide the rest."""
    return MASK + value[-4:] if len(value) >= 8 else MASK


def hints(secrets: dict[str, str]) -> dict[str, str]:
    return {name: mask(value) for name, value in secrets.items()}


async def reencrypt_all(session: AsyncSession, cipher: SecretCipher) -> int:
    rows = (await session.scalars(select(ApiCredential).with_for_update())).all()
    for row in rows:
        row.secret_ciphertext = cipher.rotate(row.secret_ciphertext)
    await session.flush()
    return len(rows)


async def rotate_key(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Re-encrypt every secret under a new primary key; returns how many were re-encrypted.

    With a key file: a new key is generated and put first, every secret re-encrypted in
    one transaction, and only then are the old keys dropped from the file. With
    CLINICSYNC_SECRET_KEY: put the new key first in the list, run this, then remove the
    old ones.
    """
    source = load_keys(settings)
    if source.key_file is None:
        async with session_scope(sessionmaker) as session:
            count = await reencrypt_all(session, SecretCipher(source.keys))
        return count
    new_key = Fernet.generate_key()
    _write_key_file(source.key_file, [new_key, *source.keys])
    async with session_scope(sessionmaker) as session:
        count = await reencrypt_all(session, SecretCipher((new_key, *source.keys)))
    _write_key_file(source.key_file, [new_key])
    _ciphers.clear()
    return count
