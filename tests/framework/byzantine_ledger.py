"""A Byzantine ledger node, for tests only (never shipped in the package).  Longer than
400 lines because each lie it tells is built here beside the others, in the order the
table below gives them, so that one file says what the honest rules are tested against.

    python tests/framework/byzantine_ledger.py --broker URL --key FILE --genesis FILE --db FILE

It is the real ledger node -- ``LedgerConfig``, ``run_ledger``, ``LedgerService``,
``LedgerCore`` and its consensus core, all unchanged -- with one substitution, through
the seam every node has (``run_ledger(..., replica=...)``, core.ReplicaFactory): its
``Replica`` is ``ByzantineReplica``, whose ``_apply`` rewrites every consensus message
the honest core wants to broadcast before it leaves.  So the node follows the protocol's timing and
holds a real validator key (everything it signs verifies), but lies in what it signs:

double signing
    every Prevote and Precommit goes out together with a conflicting twin for the same
    height and round (NIL for a block, a random hash for NIL; a twin precommit carries
    a valid COMMIT signature), both on its own consensus topic;
invalid proposals
    when it is the proposer, the honest block is replaced, in turn, by one that breaks
    one rule of ``verify.verify_block`` (see ``LIES``), properly signed; on some turns it
    signs two different proposals for the round (an equivocating proposer, ``TURNS``);
forged verdicts
    some of those blocks carry transactions "justified" by verdicts no device gave;
garbage
    every second or so, malformed or mis-signed bytes on its consensus topic.

Which forgeries the honest rules catch (checked against ``verify_block``):

* caught -- a verdict whose signature does not verify, even under a real device's key
  (``forged_verdicts``); a transfer with an invalid signature backed by such verdicts
  (``stolen_bad_sig_tx``); a transaction without q valid verdicts (``unaccepted_tx``);
  an unsigned theft backed by verdicts validly signed by device keys made up on the
  spot, under an assignment this node signed (``stolen_tx_fresh_devices``).  That last
  one was committed once, before blocks checked device entitlement; it is now refused
  because those devices are not in the chain's device registry, so not entitled to
  judge any batch.
* ``KNOWN_GAP_LIES`` (with ``--exploit-known-gaps``): what a Byzantine *validator* can
  still do under open enrollment.  The node makes up q device keys and publishes their
  signed hellos, so the honest nodes register them like any device; once they are
  registered it grinds the seq of an assignment of its own (a hash per try, one
  signature at the end) until its devices rank among the first 2k, and backs an
  unsigned theft with their verdicts (``stolen_tx_sybil_devices``).  With
  ``recheck_tx_signatures`` = 1 (the default) every honest node refuses that block;
  with 0 it passes, and the sybils' verdicts are fraud proofs that ban them afterwards
  (docs/CONSENSUS.md, "Device assignment").  Never use this flag in a test that
  expects a clean chain.

Each lie is logged (event "byzantine ...") with what ``verify_block`` says about it, so
a test can tell what was attempted from this node's log.

Longer than 400 lines because each lie is built and explained next to the rule that must
catch it.
"""

import argparse
import dataclasses
import functools
import random
import sys
import time
from collections.abc import Sequence

import structlog

from micromine.common.keyfile import KeyFileError, load_key
from micromine.common.logs import configure_logging
from micromine.ledger_node.chain.enrollment import ApprovalRecord
from micromine.ledger_node.chain.state import (
    StateView,
    process_bans,
    process_rewards,
    process_transaction,
    process_vesting,
)
from micromine.ledger_node.chain.transition import (
    InvalidBlockError,
    compute_judged,
    compute_post_state_root,
    compute_rewards,
)
from micromine.ledger_node.config import LedgerConfig, add_ledger_arguments
from micromine.ledger_node.consensus.tendermint import (
    Broadcast,
    ConsensusMessage,
    Output,
    SignedState,
)
from micromine.ledger_node.core.actions import Action
from micromine.ledger_node.core.ledger import LedgerCore
from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.service import run_ledger
from micromine.protocol import topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.block import Block, Reward, compute_body_hash, compute_tx_root
from micromine.protocol.codec import encode, sign, sign_commit
from micromine.protocol.consensus import NIL, Precommit, Prevote, Proposal, SyncRequest
from micromine.protocol.crypto import KeyPair, sha256
from micromine.protocol.device import DeviceHello
from micromine.protocol.kinds import Reason
from micromine.protocol.messages import (
    NO_SIGNATURE,
    Assignment,
    Judgement,
    Transaction,
    Verdict,
)
from micromine.protocol.topics import Channel, Publish

log = structlog.get_logger("micromine.byzantine")

Vote = Prevote | Precommit

# The invalid blocks it can propose; each breaks one rule of verify_block.
LIES = (
    "wrong_state_root",  # the header's state_root is not the post-state's
    "wrong_prev_hash",  # does not extend the tip
    "unaccepted_tx",  # a transaction no device has accepted (no verdicts at all)
    "rewards_to_self",  # the whole reward pool paid to this validator
    "forged_verdicts",  # a transaction "accepted" by real device keys, badly signed
    "stolen_bad_sig_tx",  # someone else's money, unsigned; verdicts as above
    "stolen_tx_fresh_devices",  # unsigned theft, verdicts by unregistered made-up devices
)
# Lies that the validity rules do NOT catch: off unless --exploit-known-gaps.
KNOWN_GAP_LIES = ("stolen_tx_sybil_devices",)  # unsigned theft, registered sybils, ground seq
ADDS_A_TX = (
    "unaccepted_tx", "forged_verdicts", "stolen_bad_sig_tx", "stolen_tx_fresh_devices",
    "stolen_tx_sybil_devices",
)  # fmt: skip
GRIND_TRIES = 100_000  # assignment seqs tried for the sybils to rank first
HONEST = "honest"  # the block the honest core built

# What it proposes on its turns, in order and then again: one block, or two different
# ones for the same round (an equivocating proposer; the first one sent is the one the
# honest nodes count).  Ordered so that a short run sees every kind early.
TURNS: tuple[tuple[str, ...], ...] = (
    ("stolen_tx_fresh_devices",),
    ("wrong_state_root", "rewards_to_self"),
    ("forged_verdicts",),
    (HONEST, "wrong_prev_hash"),
    ("unaccepted_tx",),
    ("stolen_bad_sig_tx",),
    ("wrong_prev_hash",),
    ("rewards_to_self", "unaccepted_tx"),
    ("wrong_state_root",),
)

GARBAGE_EVERY_MS = (400, 1200)  # a random pause in this range between two pieces
STOLEN_AMOUNT = 1_000


class ByzantineReplica(Replica):
    """The ledger's real Replica; only what it broadcasts is rewritten (``_lie``)."""

    def __init__(
        self,
        ledger: LedgerCore,
        reply_to: bytes,
        last_signed: SignedState | None,
        *,
        rng: random.Random,
        exploit_known_gaps: bool,
    ) -> None:
        super().__init__(ledger, reply_to, last_signed)
        self.rng = rng
        self.key: KeyPair = ledger.key
        self.me = ledger.key.public
        self.topic = topics.consensus(self.chain_id, self.me)
        gaps = tuple((lie,) for lie in KNOWN_GAP_LIES) if exploit_known_gaps else ()
        self.turns = (*gaps, *TURNS)
        self.turn = 0  # proposer turns so far
        self.next_garbage_ms = 0
        self.outsider = KeyPair(rng.randbytes(32))  # a key outside the validator set
        # Made-up devices it gets registered (with --exploit-known-gaps only).
        count = ledger.params.q if exploit_known_gaps else 0
        self.sybils = [KeyPair(rng.randbytes(32)) for _ in range(count)]
        self.sybils_announced = False

    # ---- the hook: every output of the honest core passes here ------------------------

    def _apply(self, outputs: Sequence[Output], now_ms: int, actions: list[Action]) -> None:
        rewritten: list[Output] = []
        for output in outputs:
            if isinstance(output, Broadcast):
                rewritten.extend(Broadcast(message) for message in self._lie(output.message))
            else:
                rewritten.append(output)
        # The real _apply encodes, publishes on our topic and re-broadcasts the lies.
        super()._apply(rewritten, now_ms, actions)

    def on_tick(self, now_ms: int, actions: list[Action]) -> None:
        super().on_tick(now_ms, actions)
        if self.sybils and not self.sybils_announced:
            self.sybils_announced = True
            for sybil in self.sybils:  # retained, like any device's hello
                hello = DeviceHello(self.chain_id, sybil.public, "sybil", 64, now_ms)
                topic = topics.device_topic(self.chain_id, sybil.public, Channel.HELLO)
                actions.append(Publish.on(Channel.HELLO, topic, encode(sign(hello, sybil))))
                log.warning("byzantine sybil hello", device=sybil.public.hex()[:16])
        if now_ms >= self.next_garbage_ms:
            self.next_garbage_ms = now_ms + self.rng.randint(*GARBAGE_EVERY_MS)
            actions.append(Publish.on(Channel.CONSENSUS, self.topic, self._garbage()))

    def _lie(self, message: ConsensusMessage) -> list[ConsensusMessage]:
        if isinstance(message, Proposal):
            return self._lie_about_proposal(message)
        twin = self._vote(
            type(message),
            message.height,
            message.round,
            NIL if message.block_hash != NIL else sha256(self.rng.randbytes(16)),
        )
        log.info(
            "byzantine double vote",
            kind=type(message).__name__,
            height=message.height,
            round=message.round,
            first=message.block_hash.hex()[:16],
            second=twin.block_hash.hex()[:16],
        )
        return [message, twin]

    # ---- signing ------------------------------------------------------------------

    def _vote(self, kind: type[Vote], height: int, round: int, block_hash: bytes) -> Vote:
        if kind is Prevote:
            return sign(Prevote(self.chain_id, height, round, block_hash, self.me), self.key)
        commit = (
            NO_SIGNATURE
            if block_hash == NIL
            else sign_commit(round, block_hash, self.chain_id, self.key)
        )
        return sign(Precommit(self.chain_id, height, round, block_hash, self.me, commit), self.key)

    def _propose(self, honest: Proposal, block: Block) -> Proposal:
        """``block`` signed as our fresh proposal for the honest proposal's slot."""
        message = Proposal(self.chain_id, honest.height, honest.round, 0, block, self.me)
        return sign(message, self.key)

    # ---- invalid proposals --------------------------------------------------------

    def _lie_about_proposal(self, honest: Proposal) -> list[ConsensusMessage]:
        lies = self.turns[self.turn % len(self.turns)]
        self.turn += 1
        proposals = []
        for lie in lies:
            if lie == "stolen_tx_sybil_devices" and not self._sybils_registered():
                lie = HONEST  # noqa: PLW2901 - not yet: tell the truth this turn
            if lie == HONEST:
                block, proposal = honest.block, honest
            else:
                block = self._invalid_block(honest.block, lie)
                proposal = self._propose(honest, block)
            log.warning(
                "byzantine proposal",
                lie=lie,
                equivocating=len(lies) > 1,
                height=honest.height,
                round=honest.round,
                block=block.hash.hex()[:16],
                honest_verdict=self._honest_verdict(block),
            )
            proposals.append(proposal)
        return proposals

    def _honest_verdict(self, block: Block) -> str:
        """What an honest node at our state says about ``block`` (verify_block)."""
        try:
            self.verify(block)
        except InvalidBlockError as exc:
            return f"refused: {exc}"
        return "PASSES verify_block"

    def _invalid_block(self, base: Block, lie: str) -> Block:
        """``base`` (the honest block) changed so that it breaks one rule."""
        txs, verdicts, rewards = list(base.txs), list(base.verdicts), base.rewards
        if lie in ADDS_A_TX and len(txs) >= self.ledger.params.max_block_txs:
            # Room for the extra one: drop the last (a sender's highest nonce, so the
            # others still apply; its verdicts stay, which no rule forbids).
            txs.pop()
            rewards = compute_rewards(
                self.ledger.params.block_reward + sum(tx.fee for tx in txs),
                compute_judged(txs, verdicts, self.ledger.params.q, self.ledger.params.k),
            )
        match lie:
            case "wrong_state_root":
                return self._assemble(base, txs, verdicts, rewards, state_root=self._random_hash())
            case "wrong_prev_hash":
                return self._assemble(base, txs, verdicts, rewards, prev_hash=self._random_hash())
            case "unaccepted_tx":
                # Rewards are the base block's: the protocol's split needs q verdicts.
                return self._assemble(base, [*txs, self._unaccepted_tx(base)], verdicts, rewards)
            case "rewards_to_self":
                pool = self.ledger.params.block_reward + sum(tx.fee for tx in txs)
                return self._assemble(base, txs, verdicts, (Reward(self.me, pool),))
            case "forged_verdicts":
                tx = self._own_tx(base)
                return self._assemble(base, [*txs, tx], [*verdicts, *self._badly_signed(tx)])
            case "stolen_bad_sig_tx":
                tx = self._stolen_tx(base)
                return self._assemble(base, [*txs, tx], [*verdicts, *self._badly_signed(tx)])
            case "stolen_tx_fresh_devices":
                tx = self._stolen_tx(base)
                return self._assemble(base, [*txs, tx], [*verdicts, *self._fresh_devices(tx)])
            case "stolen_tx_sybil_devices":
                tx = self._stolen_tx(base)
                return self._assemble(base, [*txs, tx], [*verdicts, *self._sybil_verdicts(tx)])
        raise ValueError(f"unknown lie {lie}")

    def _assemble(
        self,
        base: Block,
        txs: list[Transaction],
        verdicts: list[Verdict],
        rewards: Sequence[Reward] | None = None,
        **header_changes: bytes,
    ) -> Block:
        """A block of ``base``'s height over our tip, consistent in every field (roots,
        body hash, post-state, rewards by the protocol's split unless given) except for
        ``header_changes``: so it breaks only the rule the lie is about."""
        ledger = self.ledger
        header = base.header
        if rewards is None:
            pool = ledger.params.block_reward + sum(tx.fee for tx in txs)
            rewards = compute_rewards(
                pool, compute_judged(txs, verdicts, ledger.params.q, ledger.params.k)
            )
        vesting_blocks = ledger.params.reward_vesting_blocks
        view = StateView(ledger.accounts, ledger.vesting)
        process_vesting(view, header.height, vesting_blocks)
        for tx in txs:
            process_transaction(view, tx, header.timestamp_ms)
        process_rewards(view, rewards, header.height, vesting_blocks)
        # Registrations and bans are kept as the honest block has them.
        registrations, frauds = base.registrations, base.frauds
        banned = [proof.device for proof in frauds]
        process_bans(view, banned)
        state_root = compute_post_state_root(
            view,
            ledger.registry,
            header.height,
            registered=[hello.device for hello in registrations],
            banned=banned,
            approvals=[ApprovalRecord.of(a, header.height) for a in base.approvals],
        )
        changes: dict[str, bytes] = {
            "prev_hash": ledger.tip.hash,
            "tx_root": compute_tx_root(txs),
            "body_hash": compute_body_hash(
                verdicts, rewards, registrations, approvals=base.approvals, frauds=frauds
            ),
            "state_root": state_root,
            "proposer": self.me,
            **header_changes,
        }
        new_header = dataclasses.replace(header, **changes)  # type: ignore[arg-type]
        return Block(
            new_header,
            tuple(txs),
            tuple(verdicts),
            tuple(rewards),
            0,
            (),
            registrations,
            base.approvals,
            frauds,
        )

    # ---- forged transactions and verdicts -----------------------------------------

    def _unaccepted_tx(self, base: Block) -> Transaction:
        """A transaction the devices have not accepted: one still being judged whose
        nonce fits, else one of our own that nobody ever saw."""
        in_block = {tx.sender for tx in base.txs}
        for votes in self.ledger.votes.values():
            tx = votes.tx
            account = self.ledger.accounts.get(tx.sender)
            if tx.sender not in in_block and account is not None and tx.nonce == account.nonce:
                return tx
        return self._own_tx(base)

    def _own_tx(self, base: Block) -> Transaction:
        """A zero transfer from our own (empty) account: valid against the state, signed
        by us, never submitted, so never judged by any device."""
        account = self.ledger.accounts.get(self.me)
        tx = Transaction(
            self.chain_id, self.me, sha256(b"byzantine sink"), 0, 0,
            account.nonce if account else 0, base.header.timestamp_ms + 600_000,
            f"never submitted {self.rng.randrange(10**9)}",
        )  # fmt: skip
        return sign(tx, self.key)

    def _stolen_tx(self, base: Block) -> Transaction:
        """A transfer from someone else's funded account to us, with a made-up signature.
        The victim is an account with nothing pending, so the nonce fits."""
        busy = {tx.sender for tx in base.txs} | {
            e.tx.sender for e in self.ledger.mempool.by_id.values()
        }
        victims = [
            account
            for account, _ in self.ledger.genesis.balances
            if account not in busy and self._balance(account) > STOLEN_AMOUNT
        ]
        victim = victims[-1] if victims else self.ledger.genesis.balances[-1][0]
        nonce = self.ledger.accounts[victim].nonce if victim in self.ledger.accounts else 0
        return Transaction(
            self.chain_id, victim, self.me, STOLEN_AMOUNT, 0, nonce,
            base.header.timestamp_ms + 600_000, "stolen", self.rng.randbytes(64),
        )  # fmt: skip

    def _assignment(self, tx: Transaction, seq: int) -> Assignment:
        """Our own assignment of ``[tx]``: a real validator's, so only the rule each lie
        is about refuses it.  Unsigned until ``_signed``."""
        return Assignment(
            self.chain_id, self.me, seq, self.ledger.tip.height,
            self.ledger.tip.timestamp_ms + 600_000, compute_batch_root([tx]),
        )  # fmt: skip

    def _signed(self, assignment: Assignment) -> Assignment:
        return sign(assignment, self.key)

    def _badly_signed(self, tx: Transaction) -> list[Verdict]:
        """q "valid" verdicts on ``tx`` in the name of real devices (the ones we know; made-up
        keys if we know fewer than q), with signatures they never made.  Caught:
        verify_block checks every verdict's signature."""
        devices = sorted(self.ledger.devices.records)
        devices += [KeyPair(self.rng.randbytes(32)).public for _ in range(self.ledger.params.q)]
        assignment = self._signed(self._assignment(tx, self.rng.randrange(2**40)))
        judgements = (Judgement.of(tx, int(Reason.OK)),)
        return [
            Verdict(self.chain_id, device, assignment, judgements, self.rng.randbytes(64))
            for device in devices[: self.ledger.params.q]
        ]

    def _fresh_devices(self, tx: Transaction) -> list[Verdict]:
        """q "valid" verdicts on ``tx`` properly signed by keys made up just now.  Caught:
        the devices are not registered, so no assignment ranks them entitled."""
        devices = [KeyPair(self.rng.randbytes(32)) for _ in range(self.ledger.params.q)]
        assignment = self._signed(self._assignment(tx, self.rng.randrange(2**40)))
        return self._verdicts_by(devices, assignment, tx)

    def _sybil_verdicts(self, tx: Transaction) -> list[Verdict]:
        """q "valid" verdicts on ``tx`` by our registered sybils, under an assignment of
        ours whose seq was ground until they are all entitled.  Caught only while
        validators re-check transaction signatures (the chain's default)."""
        ledger, height = self.ledger, self.ledger.tip.height
        wanted = {sybil.public for sybil in self.sybils}
        for seq in range(GRIND_TRIES):
            assignment = self._assignment(tx, seq)
            if wanted <= set(ledger.registry.entitled(assignment.id, height, ledger.params.k)):
                return self._verdicts_by(self.sybils, self._signed(assignment), tx)
        return self._fresh_devices(tx)  # too few registered devices to rank first: give up

    def _verdicts_by(
        self, devices: Sequence[KeyPair], assignment: Assignment, tx: Transaction
    ) -> list[Verdict]:
        judgements = (Judgement.of(tx, int(Reason.OK)),)
        return [
            sign(Verdict(self.chain_id, device.public, assignment, judgements), device)
            for device in devices
        ]

    def _sybils_registered(self) -> bool:
        return bool(self.sybils) and all(s.public in self.ledger.registry for s in self.sybils)

    # ---- garbage ------------------------------------------------------------------

    def _garbage(self) -> bytes:
        """One piece of junk for our consensus topic; none of it may count, and none may
        be taken for evidence (the badly signed ones conflict with our real votes)."""
        rng = self.rng
        height, round = self.consensus.height, max(1, self.consensus.round)
        kind = rng.choice(
            ("random_bytes", "mutated", "bad_signature", "bad_commit_signature",
             "outsider", "wrong_kind", "truncated")
        )  # fmt: skip
        payload: bytes
        match kind:
            case "random_bytes":
                payload = rng.randbytes(rng.randrange(1, 300))
            case "mutated" | "truncated":
                recent = [*self._last_sent, *self._sent] or [
                    encode(self._vote(Prevote, height, round, NIL))
                ]
                data = bytearray(rng.choice(recent))
                if kind == "truncated":
                    del data[rng.randrange(len(data)) :]
                else:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                payload = bytes(data)
            case "bad_signature":  # a vote of the current slot with a signature we never made
                vote = self._vote(
                    rng.choice((Prevote, Precommit)), height, round, self._random_hash()
                )
                payload = encode(dataclasses.replace(vote, signature=rng.randbytes(64)))
            case "bad_commit_signature":  # validly signed vote, junk COMMIT signature
                vote = self._vote(Precommit, height, round, self._random_hash())
                payload = encode(
                    sign(dataclasses.replace(vote, commit_signature=rng.randbytes(64)), self.key)
                )
            case "outsider":  # a validly signed vote by a key outside the set, on our topic
                outsider = Prevote(self.chain_id, height, round, NIL, self.outsider.public)
                payload = encode(sign(outsider, self.outsider))
            case _:  # a well-formed message of a kind consensus does not take
                payload = encode(SyncRequest(self.chain_id, 1, 1, rng.randbytes(16)))
        log.info("byzantine garbage", kind=kind, size=len(payload))
        return payload

    def _balance(self, account: bytes) -> int:
        found = self.ledger.accounts.get(account)
        return found.balance if found else 0

    def _random_hash(self) -> bytes:
        return sha256(self.rng.randbytes(16))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="byzantine_ledger", description=__doc__.splitlines()[0])
    add_ledger_arguments(parser)
    parser.add_argument("--seed", type=int, default=None, help="seed of the lies (default: random)")
    parser.add_argument(
        "--exploit-known-gaps",
        action="store_true",
        help=f"also tell lies the honest rules do not catch yet: {', '.join(KNOWN_GAP_LIES)}",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else time.time_ns()
    try:
        config = LedgerConfig.from_args(args)
        key = load_key(config.key_path)
    except (ValueError, KeyFileError) as exc:
        print(f"byzantine_ledger: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_json)
    log.warning("byzantine ledger node", seed=seed, exploit_known_gaps=args.exploit_known_gaps)
    # The node's own seam for its consensus adapter (core.ReplicaFactory).  Anything
    # raised from here on is a crash with its traceback: a test must see it.
    replica = functools.partial(
        ByzantineReplica, rng=random.Random(seed), exploit_known_gaps=args.exploit_known_gaps
    )
    return run_ledger(config, key, replica=replica)


if __name__ == "__main__":
    raise SystemExit(main())
