"""The genesis file: the chain's identity, initial balances, ledger nodes, pre-registered
devices and parameters.

Genesis is JSON on disk (people edit and diff it) and canonical CBOR when hashed: the
first block's ``prev_hash`` is the genesis hash, so every block is tied to one genesis.
Parameters that change what a valid block is (k, q, rewards, fees) live here rather
than in a node's configuration, so that every node applies the same rules.
"""

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from micromine.protocol import cbor
from micromine.protocol.crypto import sha256
from micromine.protocol.errors import DecodeError
from micromine.protocol.fields import check_chain_id
from micromine.protocol.limits import (
    MAX_AMOUNT,
    MAX_BATCH_TXS,
    MAX_BLOCK_TXS,
    MAX_CERTIFICATE_SIGNATURES,
    MAX_FEE,
    MAX_TIMESTAMP_MS,
)

MAX_PARAM_MS = 86_400_000  # the longest interval or timeout a chain may set
ENROLLMENT_POLICIES = ("open", "approved")

MAX_VESTING_BLOCKS = 100_000  # bounds each device's vesting entries (one per block)


class GenesisError(ValueError):
    """A genesis file that cannot be used, with the reason in the message."""


@dataclass(frozen=True, slots=True)
class ChainParams:
    k: int = 3  # devices asked to judge each batch
    # Matching verdicts that decide a transaction.  0: no devices at all, the chain's one
    # ledger node checks every transaction's signature itself at admission (a benchmark
    # baseline and single-node dev mode, not a production mode: Genesis allows it only
    # with a single ledger node, since other validators would trust its word).
    q: int = 2
    batch_size: int = 64  # most transactions in one WorkBatch
    block_interval_ms: int = 1000  # least time between blocks
    block_reward: int = 50  # minted per block, shared by the devices that judged it
    min_fee: int = 0
    max_block_txs: int = 4096
    batch_timeout_ms: int = 3000  # a device that has not answered by then is replaced
    tx_timeout_ms: int = 60_000  # a transaction undecided this long is NO_QUORUM
    device_timeout_ms: int = 6000  # no heartbeat for this long: the device is not live
    max_pending: int = 200_000  # whole mempool
    max_pending_per_sender: int = 1024
    # A verdict justifies a transaction only in a block less than this many heights above
    # the registry its batch was ranked against (verdict.registry_height).
    assignment_window: int = 64
    # 1: every validator re-verifies each transaction's signature in a proposed block.
    # On by default until devices' work is guarded by audits and fraud proofs (issue 4):
    # with open enrollment, devices someone registered can be entitled to a batch and
    # vouch for a forged transaction (docs/CONSENSUS.md, "Device assignment").  0 leaves
    # signatures to the devices alone, which is what takes the work off the ledger.
    recheck_tx_signatures: int = 1
    # A device's reward earned at height h is spendable from the block at h + this; until
    # then a fraud proof against the device burns it (docs/CONSENSUS.md).  0: at once.
    reward_vesting_blocks: int = 64

    def check(self) -> None:
        if self.q != 0 and not 1 <= self.q <= self.k:
            raise GenesisError(f"need 1 <= q <= k, got k={self.k} q={self.q}")
        if self.k > 64:
            raise GenesisError("k above 64 is not supported")
        if not 1 <= self.batch_size <= MAX_BATCH_TXS:
            raise GenesisError(f"batch_size must be 1..{MAX_BATCH_TXS}")
        if not 1 <= self.max_block_txs <= MAX_BLOCK_TXS:
            raise GenesisError(f"max_block_txs must be 1..{MAX_BLOCK_TXS}")
        if not 0 <= self.min_fee <= MAX_FEE:
            raise GenesisError(f"min_fee must be 0..{MAX_FEE}")
        for name in ("block_interval_ms", "batch_timeout_ms", "tx_timeout_ms",
                     "device_timeout_ms", "max_pending", "max_pending_per_sender",
                     "assignment_window"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise GenesisError(f"{name} must be positive")
            # A deadline (now + batch_timeout_ms) must still be a valid *_ms field.
            if name.endswith("_ms") and getattr(self, name) > MAX_PARAM_MS:
                raise GenesisError(f"{name} must be at most {MAX_PARAM_MS} (a day)")
        if not 0 <= self.reward_vesting_blocks <= MAX_VESTING_BLOCKS:
            raise GenesisError(f"reward_vesting_blocks must be 0..{MAX_VESTING_BLOCKS}")
        if self.recheck_tx_signatures not in (0, 1):
            raise GenesisError("recheck_tx_signatures must be 0 or 1")
        if not 0 <= self.block_reward <= MAX_AMOUNT:
            raise GenesisError(f"block_reward must be 0..{MAX_AMOUNT}")


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    timestamp_ms: int
    ledger_nodes: tuple[bytes, ...]
    balances: tuple[tuple[bytes, int], ...]  # sorted by account
    params: ChainParams = field(default_factory=ChainParams)
    devices: tuple[bytes, ...] = ()  # registered at height 0, sorted (optional)
    # Keys that administer the chain (broker ACLs: read everything, submit).  Optional: a
    # genesis without operators hashes exactly as before the field existed.
    operators: tuple[bytes, ...] = ()
    # Who may register a device (docs/CONSENSUS.md, "Device assignment"): "open", any
    # device, at most MAX_BLOCK_REGISTRATIONS per block; "approved", only devices an
    # operator approved on chain.  In the hashed form only when not "open".
    enrollment: str = "open"

    def __post_init__(self) -> None:
        try:
            check_chain_id(self.chain_id)
        except DecodeError as exc:
            raise GenesisError(f"chain_id: {exc.detail}") from None
        # [REJECT] A time a first block can follow: blocks are dated after their parent.
        if type(self.timestamp_ms) is not int or not 0 <= self.timestamp_ms < MAX_TIMESTAMP_MS:
            raise GenesisError(f"timestamp_ms must be an integer in 0..{MAX_TIMESTAMP_MS - 1}")
        if not self.ledger_nodes:
            raise GenesisError("genesis must list at least one ledger node key")
        if len(self.ledger_nodes) > MAX_CERTIFICATE_SIGNATURES:
            raise GenesisError(f"at most {MAX_CERTIFICATE_SIGNATURES} ledger nodes")
        if any(len(key) != 32 for key in self.ledger_nodes):
            raise GenesisError("ledger node keys are 32-byte Ed25519 public keys")
        if len(set(self.ledger_nodes)) != len(self.ledger_nodes):
            raise GenesisError("a ledger node key is listed twice")
        if any(len(key) != 32 for key in self.operators):
            raise GenesisError("operator keys are 32-byte Ed25519 public keys")
        if len(set(self.operators)) != len(self.operators):
            raise GenesisError("an operator key is listed twice")
        if set(self.operators) & set(self.ledger_nodes):
            raise GenesisError("a key cannot be both a ledger node and an operator")
        accounts = [account for account, _ in self.balances]
        if accounts != sorted(set(accounts)):
            raise GenesisError("balances must be unique accounts in sorted order")
        for account, amount in self.balances:
            if len(account) != 32 or type(amount) is not int or not 0 <= amount <= MAX_AMOUNT:
                raise GenesisError(f"bad balance entry for {account.hex()}")
        if any(len(key) != 32 for key in self.devices):
            raise GenesisError("device keys are 32-byte Ed25519 public keys")
        if list(self.devices) != sorted(set(self.devices)):
            raise GenesisError("devices must be unique keys in sorted order")
        self.params.check()
        if self.params.q == 0 and len(self.ledger_nodes) != 1:
            raise GenesisError("q = 0 (no devices: the node checks every signature) needs "
                               "exactly one ledger node")  # fmt: skip
        if self.enrollment not in ENROLLMENT_POLICIES:
            raise GenesisError(f"enrollment must be one of {', '.join(ENROLLMENT_POLICIES)}")
        if self.enrollment == "approved" and not self.operators:
            raise GenesisError("enrollment 'approved' needs at least one operator key")

    def to_wire(self) -> list[Any]:
        params = [[name, value] for name, value in sorted(asdict(self.params).items())]
        wire = [
            "micromine-genesis", self.chain_id, self.timestamp_ms, list(self.ledger_nodes),
            [[a, b] for a, b in self.balances], params, list(self.devices),
        ]  # fmt: skip
        if self.operators:  # appended only when present: older genesis hashes stay valid
            wire.append(["operators", list(self.operators)])
        if self.enrollment != "open":  # the same: the default is not in the hashed form
            wire.append(["enrollment", self.enrollment])
        return wire

    @property
    def hash(self) -> bytes:
        """The first block's prev_hash."""
        return sha256(cbor.encode(self.to_wire()))

    def to_json(self) -> str:
        document = {
            "chain_id": self.chain_id,
            "timestamp_ms": self.timestamp_ms,
            "ledger_nodes": [key.hex() for key in self.ledger_nodes],
            "balances": {account.hex(): amount for account, amount in self.balances},
            "params": asdict(self.params),
            "devices": [key.hex() for key in self.devices],
        }
        if self.operators:
            document["operators"] = [key.hex() for key in self.operators]
        if self.enrollment != "open":
            document["enrollment"] = self.enrollment
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Genesis":
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also: a 5000-digit number, [[[[...
            raise GenesisError(f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise GenesisError("genesis must be a JSON object")
        try:
            params = ChainParams(**_int_fields(document.get("params", {})))
            balances = document.get("balances", {})
            if not isinstance(balances, dict):
                raise GenesisError("balances must be an object of hex key -> amount")
            return cls(
                chain_id=document["chain_id"],
                timestamp_ms=document.get("timestamp_ms", 0),
                ledger_nodes=tuple(bytes.fromhex(k) for k in document["ledger_nodes"]),
                balances=tuple(sorted((bytes.fromhex(k), v) for k, v in balances.items())),
                params=params,
                devices=tuple(sorted(bytes.fromhex(k) for k in document.get("devices", []))),
                operators=tuple(bytes.fromhex(k) for k in document.get("operators", [])),
                enrollment=document.get("enrollment", "open"),
            )
        except KeyError as exc:
            raise GenesisError(f"missing field {exc}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, GenesisError):
                raise
            raise GenesisError(f"bad value: {exc}") from None


def _int_fields(params: Mapping[str, Any]) -> dict[str, int]:
    if not isinstance(params, Mapping):
        raise GenesisError("params must be an object")
    known = set(ChainParams.__dataclass_fields__)
    unknown = set(params) - known
    if unknown:
        raise GenesisError(f"unknown params: {', '.join(sorted(unknown))}")
    if any(type(value) is not int for value in params.values()):
        raise GenesisError("params must be integers")
    return dict(params)
