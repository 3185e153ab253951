"""``micromine load --state``: a restarted load generator goes on with its senders' nonces,
and ``micromine genesis --fund-load-senders`` funds exactly the senders it signs for."""

import json
from pathlib import Path

import pytest

from micromine.cli import main
from micromine.common.genesis_file import load_genesis
from micromine.loadgen import (
    BAD_SENDER_BALANCE,
    SENDER_BALANCE,
    LoadSettingError,
    bad_sender_key,
    read_nonces,
    sender_key,
    write_nonces,
)


def test_nonces_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "nonces.json"
    assert read_nonces(path) == {}  # first start
    nonces = {sender_key(0).public: 7, sender_key(1).public: 0}
    write_nonces(path, nonces)
    assert read_nonces(path) == nonces
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "text", ["not json", "[1, 2]", '{"zz": 1}', '{"%s": -1}' % ("00" * 32), '{"00": 1}']
)
def test_a_bad_nonce_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "nonces.json"
    path.write_text(text)
    with pytest.raises(LoadSettingError, match="--state"):
        read_nonces(path)


def test_load_with_a_bad_state_file_exits_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "nonces.json"
    state.write_text("[]")
    code = main(["load", "--broker", "mqtt://127.0.0.1:1", "--state", str(state)])
    assert code == 1
    assert "micromine load: --state" in capsys.readouterr().err


def test_genesis_funds_the_load_senders(tmp_path: Path) -> None:
    out = tmp_path / "genesis.json"
    assert main(["keys", "new", str(tmp_path / "ledger.key")]) == 0
    assert main(["genesis", "--out", str(out), "--ledger-key", str(tmp_path / "ledger.key"),
                 "--fund-load-senders", "3"]) == 0  # fmt: skip
    balances = dict(load_genesis(out).balances)
    assert balances[sender_key(2).public] == SENDER_BALANCE
    assert sender_key(3).public not in balances
    assert balances[bad_sender_key(0).public] == BAD_SENDER_BALANCE
    assert main(["genesis", "--out", str(tmp_path / "g2.json"), "--force",
                 "--ledger-key", str(tmp_path / "ledger.key"),
                 "--fund-load-senders", "-1"]) == 2  # fmt: skip
    json.loads(out.read_text())
