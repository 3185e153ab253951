"""A ledger node without its network or clock: storage, intake and core, wired as one.

    LedgerNode.open(store, genesis, key, rng, now_ms)   the core resumed from the store
    node.subscriptions()             -> ((filter, qos), ...)   what to subscribe to
    node.start(now_ms)               -> [Action]
    node.handle(topic, payload, now) -> [Action]   the intake's checks, then the core
    node.tick(now_ms)                -> [Action]
    node.execute(actions)            -> [Publish]  storage carried out, in order; what
                                                    is left to send, in order

The process (service.py: MQTT, wall clock, logs) and the seeded simulator (sim/: an
in-memory broker, a virtual clock, a disk that can lose power) both run this class, so
the simulator tests the node that ships: how it resumes from its database, which
messages it hears, what it stores before it speaks.  ``execute`` must be given each
event's actions in order and before the next event: a PersistSigned before the Publish
it covers, a StorePending before the PENDING receipt.  An adapter may stop part-way (a
crash); whatever it carried out stays carried out.

Byzantine behaviour (tests and the simulator only) comes in through ``replica``, the
factory of the consensus adapter that LedgerCore builds (replica.py).
"""

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from micromine.ledger_node.consensus.tendermint import PersistSigned
from micromine.ledger_node.core.actions import (
    Action,
    CommitBlock,
    ForgetPending,
    ImproveCertificate,
    ServeSync,
    StorePending,
)
from micromine.ledger_node.core.commit import RECENT_COMMITTED
from micromine.ledger_node.core.intake import Intake
from micromine.ledger_node.core.ledger import DEFAULT_COMMIT_AUDIT_RATE, LedgerCore, ReplicaFactory
from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.storage import LedgerStore
from micromine.protocol import topics
from micromine.protocol.consensus import SyncRequest
from micromine.protocol.crypto import KeyPair
from micromine.protocol.genesis import Genesis
from micromine.protocol.topics import Channel, Publish


@dataclass(slots=True)
class LedgerNode:
    """One validator's store, intake and core.  Not thread-safe: one event loop owns it."""

    store: LedgerStore
    core: LedgerCore
    intake: Intake
    errors: int = 0  # events whose handler raised (counted, never fatal: see handle)
    last_error: BaseException | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        store: LedgerStore,
        genesis: Genesis,
        key: KeyPair,
        *,
        rng: random.Random,
        now_ms: int,
        audit_rate: float,
        commit_audit_rate: float = DEFAULT_COMMIT_AUDIT_RATE,
        replica: ReplicaFactory = Replica,
    ) -> "LedgerNode":
        """Resume from ``store``: the committed state, the admitted transactions and what
        this validator last signed."""
        core = LedgerCore(
            genesis=genesis,
            key=key,
            rng=rng,
            accounts=store.accounts(),
            tip=store.tip(genesis),
            pending=store.pending(),
            registered=store.registry(),
            banned=store.bans(),
            vesting=store.vesting(),
            last_signed=store.last_signed(),
            now_ms=now_ms,
            approvals=store.approvals(),
            audit_rate=audit_rate,
            commit_audit_rate=commit_audit_rate,
            replica=replica,
        )
        core.recent_committed.update(store.recent_committed(RECENT_COMMITTED))
        return cls(store, core, Intake(genesis.chain_id))

    def subscriptions(self) -> tuple[tuple[str, int], ...]:
        chain = self.core.chain_id
        return (
            (topics.submit(chain), Channel.SUBMIT.qos),
            (topics.all_verdicts(chain), Channel.VERDICTS.qos),
            (topics.all_devices(chain), Channel.HELLO.qos),
            (topics.all_consensus(chain), Channel.CONSENSUS.qos),
            (topics.sync_request(chain), Channel.SYNC_REQUEST.qos),
            (topics.sync_reply(chain, self.core.replica.reply_to), Channel.SYNC_REPLY.qos),
            (topics.all_approvals(chain), Channel.APPROVALS.qos),
            (topics.frauds(chain), Channel.FRAUDS.qos),
        )

    def start(self, now_ms: int) -> list[Action]:
        return self.core.start(now_ms)

    def handle(self, topic: str, payload: bytes, now_ms: int) -> list[Action]:
        """One message from the broker.  An exception out of the core is counted and kept
        (``last_error``), never raised: a message that trips a bug must not be a way to
        stop every node at once."""
        dropped = self.intake.check(topic, payload, now_ms)
        if dropped is not None:
            return [dropped]
        try:
            return self.core.on_message(topic, payload, now_ms)
        except Exception as exc:
            self.errors += 1
            self.last_error = exc
            return []

    def tick(self, now_ms: int) -> list[Action]:
        return self.core.on_tick(now_ms)

    def execute(self, actions: Iterable[Action]) -> list[Publish]:
        """Carry out the storage actions in order; return the publications, in order."""
        out: list[Publish] = []
        store = self.store
        for action in actions:
            match action:
                case Publish():
                    out.append(action)
                case StorePending(entries):
                    store.store_pending(entries)
                case ForgetPending(tx_ids):
                    store.forget_pending(tx_ids)
                case CommitBlock(block, changes):
                    store.commit_block(block, changes)
                case PersistSigned(state):
                    store.save_signed(state)
                case ServeSync(request):
                    out.extend(self.serve_sync(request))
                case ImproveCertificate(block):
                    store.improve_certificate(block)
        return out

    def serve_sync(self, request: SyncRequest) -> list[Publish]:
        topic = topics.sync_reply(self.core.chain_id, request.reply_to)
        last = min(request.to_height, self.core.tip.height)
        return [
            Publish.on(Channel.SYNC_REPLY, topic, payload)
            for payload in self.store.blocks_bytes(request.from_height, last)
        ]
