"""The device's Ed25519 key on disk: a 32-byte seed as 64 hex characters and a newline.

Text rather than raw bytes so an operator can back it up or provision it with ``echo``.
The key *is* the device's identity and reward account, so the file is created atomically
with mode 0600 (O_CREAT|O_EXCL: two agents started at once can't both write one), and a
key that other users can read is refused instead of silently used: it must be assumed
stolen.  Nothing here ever logs or formats the seed.
"""

from __future__ import annotations

import os
import stat
import string
from pathlib import Path

import structlog

from micromine.protocol.crypto import KeyPair

__all__ = ["KeyFileError", "load_key", "load_or_create_key"]

log = structlog.get_logger("micromine.common.keyfile")

_SEED_HEX_LEN = 64
_MAX_FILE_BYTES = 256  # a valid file is 65 bytes; anything much bigger is not a key file


class KeyFileError(Exception):
    """The key file is unusable; the message says why and what to do (never the secret)."""


def load_or_create_key(path: str | os.PathLike[str]) -> KeyPair:
    """Load the device key from ``path``, creating a fresh one on first run."""
    key_path = Path(path).expanduser()
    if not key_path.exists():
        created = _create(key_path)
        if created is not None:
            return created
    return _load(key_path)


def _create(path: Path) -> KeyPair | None:
    """Write a new key; None if another process created the file first (then load it)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create key directory {path.parent}: {exc.strerror}") from None
    key = KeyPair.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key.seed.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)  # never leave a half-written identity behind
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from None
    log.info("device key created", path=str(path), device=key.public.hex()[:16])
    return key


def _load(path: Path) -> KeyPair:
    try:
        # O_NONBLOCK: a FIFO planted at the key path must not hang the agent at start-up.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)  # of the opened file: no check-then-open race
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise KeyFileError(
                f"key file {path} is accessible by group or others (mode {mode:04o}); "
                f"treat the key as exposed, or if you are sure it is not: chmod 600 {path}"
            )
        data = os.read(fd, _MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return KeyPair(_parse_seed(path, data))


def _parse_seed(path: Path, data: bytes) -> bytes:
    problem = f"malformed key file {path}: expected 64 hex characters (a 32-byte seed)"
    if len(data) > _MAX_FILE_BYTES:
        raise KeyFileError(problem)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(problem) from None
    if len(text) != _SEED_HEX_LEN or not all(c in string.hexdigits for c in text):
        raise KeyFileError(problem)
    return bytes.fromhex(text)


def load_key(path: str | os.PathLike[str]) -> KeyPair:
    """Load an existing key and never create one: ledger and operator keys are provisioned
    (their public keys are in genesis), so a missing file is an error, not a first run."""
    return _load(Path(path).expanduser())
