"""Broker login tokens: one test per rule of ``protocol/auth.py``, in memory."""

import pytest
from framework.protocol_samples import CHAIN, DEVICE, LEDGER, NOW_MS

from micromine.protocol import cbor
from micromine.protocol.auth import (
    LOGIN_WINDOW_MS,
    LoginRefusal,
    LoginRequest,
    LoginToken,
    Refused,
    ReplayCache,
    check_login,
    compute_login_digest,
    compute_static_password,
    is_static_password_valid,
    login_credentials,
    make_login_token,
)
from micromine.protocol.crypto import sha256, signing_bytes, verify
from micromine.protocol.kinds import Kind

CLIENT = "mmd0123456789abcdef0123"


def login(
    password: str | None = None,
    *,
    username: str | None = None,
    client_id: str = CLIENT,
    now_ms: int = NOW_MS,
    cache: ReplayCache | None = None,
) -> bytes | Refused:
    if password is None:
        password = str(make_login_token(DEVICE, CHAIN, CLIENT, NOW_MS))
    return check_login(
        LoginRequest(DEVICE.public.hex() if username is None else username, password, client_id),
        CHAIN,
        now_ms,
        ReplayCache() if cache is None else cache,
    )


def reason(result: bytes | Refused) -> LoginRefusal | None:
    return result.reason if isinstance(result, Refused) else None


def test_a_fresh_token_logs_in_as_its_key() -> None:
    assert login() == DEVICE.public


def test_token_shape_and_signed_bytes() -> None:
    username, password = login_credentials(DEVICE, CHAIN, CLIENT, NOW_MS)
    assert username == DEVICE.public.hex()
    prefix, stamp, signature = password.split(":")
    assert (prefix, int(stamp), len(signature)) == ("mm1", NOW_MS, 128)
    array = cbor.encode([64, CHAIN, DEVICE.public, CLIENT, NOW_MS])
    assert array[:2] == bytes([0x85, 0x18])  # array(5), uint 64 in its one-byte-argument form
    digest = compute_login_digest(CHAIN, DEVICE.public, CLIENT, NOW_MS)
    assert digest == sha256(array)
    assert verify(DEVICE.public, Kind.LOGIN, CHAIN, digest, bytes.fromhex(signature))
    assert signing_bytes(Kind.LOGIN, CHAIN, digest)[10:12] == bytes([1, 64])


@pytest.mark.parametrize(
    ("username", "password", "client_id", "expected"),
    [
        ("alice", None, CLIENT, LoginRefusal.BAD_USERNAME),
        (DEVICE.public.hex().upper(), None, CLIENT, LoginRefusal.BAD_USERNAME),
        (None, "", CLIENT, LoginRefusal.NO_PASSWORD),
        (None, "mm1:12:ab", CLIENT, LoginRefusal.MALFORMED_TOKEN),
        (None, "mm2:1700000000000:" + "00" * 64, CLIENT, LoginRefusal.MALFORMED_TOKEN),
        (None, "mm1:01:" + "00" * 64, CLIENT, LoginRefusal.MALFORMED_TOKEN),
        (None, None, "", LoginRefusal.BAD_CLIENT_ID),
        (None, None, "x" * 257, LoginRefusal.BAD_CLIENT_ID),
        (None, None, "another-client", LoginRefusal.BAD_SIGNATURE),
    ],
)
def test_each_malformed_login_is_refused_with_its_reason(
    username: str | None, password: str | None, client_id: str, expected: LoginRefusal
) -> None:
    assert reason(login(password, username=username, client_id=client_id)) is expected


def test_another_keys_token_or_another_chain_is_a_bad_signature() -> None:
    other_key = str(make_login_token(LEDGER, CHAIN, CLIENT, NOW_MS))
    other_chain = str(make_login_token(DEVICE, "other-chain", CLIENT, NOW_MS))
    assert reason(login(other_key)) is LoginRefusal.BAD_SIGNATURE
    assert reason(login(other_chain)) is LoginRefusal.BAD_SIGNATURE


def test_window_holds_either_side_and_no_further() -> None:
    assert login(now_ms=NOW_MS + LOGIN_WINDOW_MS) == DEVICE.public
    assert login(now_ms=NOW_MS - LOGIN_WINDOW_MS) == DEVICE.public
    assert reason(login(now_ms=NOW_MS + LOGIN_WINDOW_MS + 1)) is LoginRefusal.TOO_OLD
    assert reason(login(now_ms=NOW_MS - LOGIN_WINDOW_MS - 1)) is LoginRefusal.IN_FUTURE


def test_a_token_is_accepted_once() -> None:
    cache = ReplayCache()
    assert login(cache=cache) == DEVICE.public
    assert reason(login(cache=cache, now_ms=NOW_MS + 1000)) is LoginRefusal.REPLAYED
    fresh = str(make_login_token(DEVICE, CHAIN, CLIENT, NOW_MS + 1))
    assert login(fresh, cache=cache, now_ms=NOW_MS + 1000) == DEVICE.public


def test_a_forged_copy_does_not_poison_the_cache() -> None:
    cache = ReplayCache()
    forged = str(LoginToken(NOW_MS, bytes(64)))
    assert reason(login(forged, cache=cache)) is LoginRefusal.BAD_SIGNATURE
    assert len(cache) == 0
    assert login(cache=cache) == DEVICE.public


def test_cache_forgets_tokens_once_they_are_too_old_anyway() -> None:
    cache = ReplayCache()
    for offset in range(5):
        token = str(make_login_token(DEVICE, CHAIN, CLIENT, NOW_MS + offset))
        assert login(token, cache=cache) == DEVICE.public
    assert len(cache) == 5
    assert reason(login(cache=cache, now_ms=NOW_MS + LOGIN_WINDOW_MS + 3)) is LoginRefusal.TOO_OLD
    assert len(cache) == 2  # the three oldest left the window and the cache


def test_a_full_cache_raises_its_floor_instead_of_forgetting_silently() -> None:
    cache = ReplayCache(capacity=3)
    tokens = [str(make_login_token(DEVICE, CHAIN, CLIENT, NOW_MS + i)) for i in range(5)]
    for token in tokens[:4]:
        assert login(token, cache=cache) == DEVICE.public
    assert len(cache) == 3
    assert cache.floor_ms == NOW_MS  # the oldest was forgotten early ...
    assert (
        reason(login(tokens[0], cache=cache)) is LoginRefusal.REPLAY_CACHE_FULL
    )  # ... not replayable
    assert login(tokens[4], cache=cache) == DEVICE.public


def test_static_password_is_a_signature_anyone_can_check_and_no_token() -> None:
    password = compute_static_password(DEVICE, CHAIN)
    assert password == compute_static_password(DEVICE, CHAIN)
    assert is_static_password_valid(DEVICE.public, CHAIN, password)
    assert not is_static_password_valid(LEDGER.public, CHAIN, password)
    assert not is_static_password_valid(DEVICE.public, "other", password)
    assert not is_static_password_valid(DEVICE.public, CHAIN, password, epoch=1)
    assert compute_static_password(DEVICE, CHAIN, epoch=1) != password
    assert reason(login(password, client_id="")) is LoginRefusal.BAD_CLIENT_ID
    assert reason(login(password)) is LoginRefusal.TOO_OLD
