"""The device key file: created private, reloaded identically, refused when exposed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from micromine.common.keyfile import KeyFileError, load_or_create_key

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def test_created_with_mode_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "device.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == key.seed.hex() + "\n"


def test_reload_gives_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    first = load_or_create_key(path)
    second = load_or_create_key(str(path))
    assert first.seed == second.seed
    assert first.public == second.public


def test_accepts_a_provisioned_file_without_newline_and_in_uppercase(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    seed = bytes(range(32))
    path.write_text(seed.hex().upper())
    path.chmod(0o600)
    assert load_or_create_key(path).seed == seed


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "device.key"
    load_or_create_key(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="group or others") as err:
        load_or_create_key(path)
    assert "chmod 600" in str(err.value)
    assert path.read_text().strip() not in str(err.value)  # never echo the secret


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"00" * 31 + b"\n",  # too short
        b"00" * 33 + b"\n",  # too long
        b"zz" * 32 + b"\n",  # not hex
        b"00 " * 21 + b"0\n",  # whitespace inside
        b"\xff" * 64,  # not ASCII
        b"0" * 10_000,  # huge
    ],
)
def test_refuses_malformed_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="malformed key file"):
        load_or_create_key(path)


def test_refuses_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_or_create_key(path)


def test_existing_parent_directory_permissions_are_left_alone(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir(mode=0o755)
    parent.chmod(0o755)
    load_or_create_key(parent / "device.key")
    assert stat.S_IMODE(parent.stat().st_mode) == 0o755
