"""Broker login without stored secrets: a short-lived token signed with the client's key.

A client connects with

    username = its Ed25519 public key, 64 lowercase hex digits
    password = "mm1:" <timestamp_ms, decimal> ":" <signature, 128 lowercase hex digits>

where the signature is the key's Ed25519 signature over
``signing_bytes(LOGIN = 64, chain_id, digest)`` and

    digest = SHA-256(canonical CBOR of [64, chain_id, public key, client_id, timestamp_ms])

(the array has the shape of a message whose signature is left out, as every id in
PROTOCOL.md section 5; LOGIN is a signature kind only, never a message).  The token binds
the key, the chain, the MQTT client id of this connection and the time, so it is useless
on another chain, for another client id, or minutes later.

Rules a broker applies, in this order (``check_login``), one reason per rule:

    username is 64 lowercase hex digits ............... BAD_USERNAME
    password is present and has the shape above ....... NO_PASSWORD / MALFORMED_TOKEN
    client id is 1..MAX_CLIENT_ID_BYTES UTF-8 bytes .... BAD_CLIENT_ID
    now - window <= timestamp_ms ...................... TOO_OLD
    timestamp_ms <= now + window ...................... IN_FUTURE  (clock skew either way)
    timestamp_ms above the replay cache's floor ....... REPLAY_CACHE_FULL
    token not accepted before ......................... REPLAYED
    signature verifies ................................ BAD_SIGNATURE

Only a token whose signature verified enters the replay cache, so a forged copy cannot
make the genuine token look replayed.  The cache forgets a token once its timestamp has
left the window (it would be TOO_OLD by then anyway); if it is full it forgets its oldest
tokens early and raises its floor to their timestamp, refusing anything not newer, so
memory stays bounded and a forgotten token can still never be accepted twice.

Time and the cache are arguments: nothing here reads a clock.
"""

import heapq
import re
from dataclasses import dataclass, field
from enum import Enum

from micromine.protocol import cbor
from micromine.protocol.crypto import KeyPair, sha256, verify
from micromine.protocol.kinds import Kind
from micromine.protocol.limits import MAX_TIMESTAMP_MS, PUBLIC_KEY_LEN, SIGNATURE_LEN

TOKEN_PREFIX = "mm1"
LOGIN_WINDOW_MS = 300_000
"""Default tolerance either side of the broker's clock: five minutes, as Kerberos."""
MAX_CLIENT_ID_BYTES = 256
REPLAY_CACHE_SIZE = 100_000

_KEY_HEX = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"mm1:(0|[1-9][0-9]{0,15}):([0-9a-f]{128})")


class LoginRefusal(Enum):
    """Why a login was refused; the value is the name that goes into logs and counters."""

    ANONYMOUS_DISABLED = "anonymous_disabled"  # no username, and the broker runs --no-anonymous
    BAD_USERNAME = "bad_username"
    NO_PASSWORD = "no_password"
    MALFORMED_TOKEN = "malformed_token"
    BAD_CLIENT_ID = "bad_client_id"
    TOO_OLD = "too_old"
    IN_FUTURE = "in_future"
    REPLAY_CACHE_FULL = "replay_cache_full"
    REPLAYED = "replayed"
    BAD_SIGNATURE = "bad_signature"
    WILL_NOT_ALLOWED = "will_not_allowed"  # the Last Will names a topic the client may not publish
    CLIENT_ID_TAKEN = "client_id_taken"  # a connected client of another key has this client id


@dataclass(frozen=True, slots=True)
class Refused:
    reason: LoginRefusal
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LoginToken:
    """A parsed password: the signed time and the signature."""

    timestamp_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp_ms <= MAX_TIMESTAMP_MS:
            raise ValueError("timestamp_ms out of range")
        if len(self.signature) != SIGNATURE_LEN:
            raise ValueError("a signature is 64 bytes")

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}:{self.timestamp_ms}:{self.signature.hex()}"

    @classmethod
    def parse(cls, password: str) -> "LoginToken | None":
        match = _TOKEN.fullmatch(password)
        if match is None or int(match[1]) > MAX_TIMESTAMP_MS:
            return None
        return cls(int(match[1]), bytes.fromhex(match[2]))


def compute_login_digest(chain_id: str, key: bytes, client_id: str, timestamp_ms: int) -> bytes:
    """SHA-256 of the canonical CBOR array the token signs (see the module docstring)."""
    return sha256(cbor.encode([int(Kind.LOGIN), chain_id, key, client_id, timestamp_ms]))


def make_login_token(key: KeyPair, chain_id: str, client_id: str, timestamp_ms: int) -> LoginToken:
    digest = compute_login_digest(chain_id, key.public, client_id, timestamp_ms)
    return LoginToken(timestamp_ms, key.sign(Kind.LOGIN, chain_id, digest))


def login_credentials(key: KeyPair, chain_id: str, client_id: str, now_ms: int) -> tuple[str, str]:
    """The (username, password) pair for one CONNECT."""
    return key.public.hex(), str(make_login_token(key, chain_id, client_id, now_ms))


def compute_static_password(key: KeyPair, chain_id: str, epoch: int = 0) -> str:
    """The fixed password for brokers that can only compare stored hashes (Mosquitto).

    It is the login token for the empty client id at time ``epoch`` (0 unless the
    operator rotated the passwords): the key holder can compute it again at any time,
    and anyone can check that it is the key's signature.  A broker that checks tokens
    refuses it (no client id, far outside the window), and no token is ever a static
    password.  Unlike a token it does not expire: see docs/DEPLOY.md.
    """
    return str(make_login_token(key, chain_id, "", epoch))


def is_static_password_valid(key: bytes, chain_id: str, password: str, epoch: int = 0) -> bool:
    """True when ``password`` is ``key``'s static password (checked before enrolling it)."""
    token = LoginToken.parse(password)
    if token is None or token.timestamp_ms != epoch:
        return False
    digest = compute_login_digest(chain_id, key, "", epoch)
    return verify(key, Kind.LOGIN, chain_id, digest, token.signature)


def is_take_over_allowed(holder: bytes | None, newcomer: bytes | None) -> bool:
    """May ``newcomer`` (a key, None: anonymous) connect with the client id of a connected
    client logged in as ``holder``?  MQTT says the newcomer takes the session over; only a
    client of the same key may, or anyone can cut a device off by reusing its client id."""
    return holder is None or holder == newcomer


@dataclass(slots=True)
class ReplayCache:
    """Digests of accepted tokens, until their timestamps leave the window.  Bounded."""

    capacity: int = REPLAY_CACHE_SIZE
    floor_ms: int = -1  # tokens at or below this time are refused: they may have been forgotten
    _seen: set[bytes] = field(default_factory=set)
    _by_time: list[tuple[int, bytes]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._seen

    def forget_before(self, oldest_ms: int) -> None:
        """Drop tokens older than ``oldest_ms`` (the window's lower edge)."""
        while self._by_time and self._by_time[0][0] < oldest_ms:
            _, digest = heapq.heappop(self._by_time)
            self._seen.discard(digest)

    def add(self, digest: bytes, timestamp_ms: int) -> None:
        while len(self._seen) >= self.capacity and self._by_time:
            evicted_ms, evicted = heapq.heappop(self._by_time)
            self._seen.discard(evicted)
            self.floor_ms = max(self.floor_ms, evicted_ms)
        self._seen.add(digest)
        heapq.heappush(self._by_time, (timestamp_ms, digest))


def parse_key_hex(username: str) -> bytes | None:
    """The public key a username names, or None if it is not 64 lowercase hex digits."""
    if not _KEY_HEX.fullmatch(username):
        return None
    key = bytes.fromhex(username)
    return key if len(key) == PUBLIC_KEY_LEN else None


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """What a CONNECT packet says about who is connecting."""

    username: str
    password: str | None
    client_id: str


def check_login(
    request: LoginRequest,
    chain_id: str,
    now_ms: int,
    cache: ReplayCache,
    *,
    window_ms: int = LOGIN_WINDOW_MS,
) -> bytes | Refused:
    """The key a CONNECT authenticates, or why it is refused.  Adds an accepted token to
    ``cache``; a refusal leaves the cache as it was (apart from forgetting expired tokens).
    """
    username, password, client_id = request.username, request.password, request.client_id
    cache.forget_before(now_ms - window_ms)
    # [REJECT] The username is a public key in lowercase hex
    key = parse_key_hex(username)
    if key is None:
        return Refused(LoginRefusal.BAD_USERNAME, username[:80])
    # [REJECT] There is a password, and it has the token's shape
    if not password:
        return Refused(LoginRefusal.NO_PASSWORD)
    token = LoginToken.parse(password)
    if token is None:
        return Refused(LoginRefusal.MALFORMED_TOKEN, f"{len(password)} characters")
    # [REJECT] The client id is one a token can name
    if not client_id or len(client_id.encode("utf-8", "surrogatepass")) > MAX_CLIENT_ID_BYTES:
        return Refused(LoginRefusal.BAD_CLIENT_ID, f"{len(client_id)} characters")
    # [REJECT] The token was made within the window, by the broker's clock, either side
    skew_ms = token.timestamp_ms - now_ms
    if skew_ms < -window_ms:
        return Refused(LoginRefusal.TOO_OLD, f"{-skew_ms} ms old, window {window_ms} ms")
    if skew_ms > window_ms:
        return Refused(LoginRefusal.IN_FUTURE, f"{skew_ms} ms ahead, window {window_ms} ms")
    # [REJECT] The token is newer than anything the full cache had to forget
    if token.timestamp_ms <= cache.floor_ms:
        return Refused(LoginRefusal.REPLAY_CACHE_FULL, f"floor {cache.floor_ms}")
    # [REJECT] The token was not accepted before
    digest = compute_login_digest(chain_id, key, client_id, token.timestamp_ms)
    if digest in cache:
        return Refused(LoginRefusal.REPLAYED)
    # [REJECT] The signature is the key's, for this chain, client id and time
    if not verify(key, Kind.LOGIN, chain_id, digest, token.signature):
        return Refused(LoginRefusal.BAD_SIGNATURE)
    cache.add(digest, token.timestamp_ms)
    return key
