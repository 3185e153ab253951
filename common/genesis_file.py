"""The genesis file on disk: JSON that people edit and diff (its format and hash are the
protocol's, ``micromine.protocol.genesis``); reading it is the only I/O involved."""

from pathlib import Path

from micromine.protocol.genesis import Genesis, GenesisError

__all__ = ["load_genesis"]


def load_genesis(path: Path) -> Genesis:
    """The genesis in ``path``; GenesisError names the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GenesisError(f"cannot read genesis {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise GenesisError(f"genesis {path} is not UTF-8 text: {exc.reason}") from None
    try:
        return Genesis.from_json(text)
    except GenesisError as exc:
        raise GenesisError(f"genesis {path}: {exc}") from None
