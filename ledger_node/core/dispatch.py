"""Handing transactions to devices, and taking them back when a device goes quiet.

Who may judge a batch is not the issuer's choice: it is the first 2k devices of the
rendezvous ranking, seeded by the id of the batch's signed Assignment, over the chain's
device registry as of its ``registry_height`` (our tip; protocol/assignment.py,
registry.py), and every ledger node checks it.  So only registered devices ever get
work.  The issuer picks among them:

* a fresh batch goes to k of its entitled devices that are available (live, not
  stalled, not paused, holding fewer batches than their heartbeat's window:
  devices.py), drawn with probability proportional to their reputation
  (devices.weighted_sample, with the core's seeded rng); if fewer than q are available,
  the batch is made again with the next seq (a new id, so a new ranking),
  up to ASSIGN_TRIES times, and otherwise its transactions wait for a later tick;
* a retry batch goes to one entitled device, available, that was not yet asked about
  any of its transactions, drawn the same way, with the same re-issue rule; once every
  device was asked, to one whose verdict on them never arrived (a lost batch or
  verdict must not leave a transaction waiting for its 60 s timeout).

Batch lifecycle, per (batch, device) assignment:

    sent --verdict--> answered
    sent --deadline passes--> missed: the batch's undecided transactions are queued
                              for one more device that has not judged them yet

Late verdicts from a device that missed its deadline still count while the batch is
known.  The choice is a function of the assignment id, the registry, reputations and
the rng, so a seeded simulation replays exactly.
"""

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from micromine.ledger_node.chain.registry import DeviceRegistry
from micromine.ledger_node.core.actions import Action
from micromine.ledger_node.core.devices import DeviceRecord, LiveDevices, weighted_sample
from micromine.ledger_node.core.tally import TxVotes
from micromine.protocol import topics
from micromine.protocol.assignment import compute_batch_root
from micromine.protocol.codec import encode, sign
from micromine.protocol.crypto import KeyPair
from micromine.protocol.genesis import ChainParams
from micromine.protocol.messages import Assignment, WorkBatch
from micromine.protocol.topics import Channel, Publish

BATCH_LINGER_MS = 50  # wait this long for a fuller batch before dispatching a small one
ASSIGN_TRIES = 8  # batch ids (seqs) tried before waiting for more devices


@dataclass(slots=True)
class BatchRecord:
    batch: WorkBatch  # its assignment signed
    tx_ids: tuple[bytes, ...]
    waiting: dict[bytes, int] = field(default_factory=dict)  # device -> deadline_ms
    given: set[bytes] = field(default_factory=set)  # devices given this batch (all entitled)
    answered: set[bytes] = field(default_factory=set)


class Dispatcher:
    """Owns the batches in flight.  Reads (and updates the assignment counters of) the
    core's undecided ``votes``; never decides a transaction."""

    def __init__(
        self,
        *,
        chain_id: str,
        key: KeyPair,
        params: ChainParams,
        devices: LiveDevices,
        registry: DeviceRegistry,
        rng: random.Random,
    ) -> None:
        self.chain_id = chain_id
        self.rng = rng
        self.key = key
        self.params = params
        self.devices = devices
        self.registry = registry
        self.batches: dict[bytes, BatchRecord] = {}
        self.fresh: deque[bytes] = deque()  # pending, never dispatched
        self.retry: deque[bytes] = deque()  # undecided, needing one more device
        self.batches_sent = 0
        self.redispatched = 0
        self.reissued = 0  # batch ids given up on: too few of their entitled devices live
        self._seq = 0

    def take_over(
        self, votes: Mapping[bytes, TxVotes], is_ours: Callable[[bytes, TxVotes], bool]
    ) -> list[bytes]:
        """Queue the undecided transactions that became ours (we never asked a device
        about them): their owner went silent, or did not get them judged (ledger.py
        says which); the ids queued."""
        queued = set(self.fresh) | set(self.retry)
        taken = [
            tx_id
            for tx_id, tx_votes in votes.items()
            if not tx_votes.asked and tx_id not in queued and is_ours(tx_id, tx_votes)
        ]
        self.fresh.extend(taken)
        return taken

    def take_answer(self, record: BatchRecord, device_key: bytes) -> bool:
        """Mark ``device_key`` as having answered; True if it was still within deadline."""
        record.answered.add(device_key)
        was_waiting = record.waiting.pop(device_key, None) is not None
        device = self.devices.records.get(device_key)
        if was_waiting and device is not None:
            device.outstanding = max(0, device.outstanding - 1)
        return was_waiting

    def forget_if_done(self, batch_id: bytes, votes: Mapping[bytes, TxVotes]) -> None:
        record = self.batches[batch_id]
        if not record.waiting or all(tx_id not in votes for tx_id in record.tx_ids):
            for device_key in record.waiting:
                if (device := self.devices.records.get(device_key)) is not None:
                    device.outstanding = max(0, device.outstanding - 1)
            del self.batches[batch_id]

    def expire_deadlines(self, votes: Mapping[bytes, TxVotes], now_ms: int) -> None:
        for batch_id, record in list(self.batches.items()):
            late = [device for device, deadline in record.waiting.items() if deadline < now_ms]
            for device_key in late:
                del record.waiting[device_key]
                self.devices.on_missed_deadline(device_key, now_ms)
                for tx_id in record.tx_ids:
                    if (tx_votes := votes.get(tx_id)) is not None:
                        tx_votes.outstanding -= 1
                        self.retry.append(tx_id)  # its batch goes to another device
            if late:
                self.forget_if_done(batch_id, votes)

    def dispatch(self, votes: Mapping[bytes, TxVotes], now_ms: int, actions: list[Action]) -> None:
        self._dispatch_retries(votes, now_ms, actions)
        self._dispatch_fresh(votes, now_ms, actions)

    def _dispatch_fresh(
        self, votes: Mapping[bytes, TxVotes], now_ms: int, actions: list[Action]
    ) -> None:
        while self.fresh:
            oldest = votes.get(self.fresh[0])
            if oldest is None:  # decided or rejected before dispatch
                self.fresh.popleft()
                continue
            lingering = now_ms - oldest.admitted_ms < BATCH_LINGER_MS
            if lingering and len(self.fresh) < self.params.batch_size:
                return
            available = self._available(now_ms, set())
            if len(available) < self.params.q:
                return  # not enough registered devices to ever reach quorum; keep waiting
            # At most the k-th largest capacity, so that k devices (if live) can take it.
            capacities = sorted((d.capacity for d in available.values()), reverse=True)
            size = min(self.params.batch_size, capacities[min(self.params.k, len(capacities)) - 1])
            tx_ids = self._take(votes, size)
            if not tx_ids:
                continue
            assigned = self._assign(votes, tx_ids, available, self.params.k, now_ms)
            if len(assigned[1]) < self.params.q:
                self.fresh.extendleft(reversed(tx_ids))  # back in front, in order
                return
            self._send(votes, tx_ids, *assigned, actions)

    def _dispatch_retries(
        self, votes: Mapping[bytes, TxVotes], now_ms: int, actions: list[Action]
    ) -> None:
        queued = [tx_id for tx_id in dict.fromkeys(self.retry) if tx_id in votes]
        self.retry.clear()
        while queued:
            group = queued[: self.params.batch_size]
            asked = set().union(*(votes[tx_id].asked for tx_id in group))
            available = self._available(now_ms, asked)
            if not available:
                # Every device was asked: ask again one whose verdict never arrived (the
                # batch or the verdict was lost), under a new assignment it has not seen.
                voted = set().union(*(votes[tx_id].voters() for tx_id in group))
                available = self._available(now_ms, voted)
            if not available:
                self.retry.extend(queued)  # try again on a later tick
                return
            group = group[: max(device.capacity for device in available.values())]
            assigned = self._assign(votes, group, available, 1, now_ms)
            if not assigned[1]:
                self.retry.extend(queued)
                return
            del queued[: len(group)]
            self._send(votes, group, *assigned, actions)
            self.redispatched += 1

    def _available(self, now_ms: int, exclude: set[bytes]) -> dict[bytes, DeviceRecord]:
        """Live devices with room, registered, not banned, and not in ``exclude``."""
        return {
            device.key: device
            for device in self.devices.available(now_ms)
            if device.key in self.registry
            and not self.registry.is_banned(device.key)
            and device.key not in exclude
        }

    def _assign(
        self,
        votes: Mapping[bytes, TxVotes],
        tx_ids: list[bytes],
        available: Mapping[bytes, DeviceRecord],
        wanted: int,
        now_ms: int,
    ) -> tuple[WorkBatch, list[bytes]]:
        """A batch of ``tx_ids`` under an unsigned assignment, and the first ``wanted`` of
        its entitled devices that are ``available`` and can take it.  While fewer than q
        (or than ``wanted``, if less) can, try the next seq: a new id, a new ranking."""
        txs = tuple(votes[tx_id].tx for tx_id in tx_ids)
        deadline = now_ms + self.params.batch_timeout_ms
        height, k = self.registry.height, self.params.k
        root = compute_batch_root(txs)
        needed = min(wanted, self.params.q)
        chosen: list[bytes] = []
        for _ in range(ASSIGN_TRIES):
            self._seq += 1
            assignment = Assignment(
                self.chain_id, self.key.public, self._seq, height, deadline, root
            )
            batch = WorkBatch(assignment, txs)
            candidates = [
                device
                for device in self.registry.entitled(assignment.id, height, k)
                if device in available and available[device].capacity >= len(txs)
            ]
            weights = [available[device].reputation for device in candidates]
            chosen = weighted_sample(candidates, weights, wanted, self.rng)
            if len(chosen) >= needed:
                break
            self.reissued += 1
        return batch, chosen

    def _take(self, votes: Mapping[bytes, TxVotes], size: int) -> list[bytes]:
        taken: list[bytes] = []
        while self.fresh and len(taken) < size:
            tx_id = self.fresh.popleft()
            if tx_id in votes:
                taken.append(tx_id)
        return taken

    def _send(
        self,
        votes: Mapping[bytes, TxVotes],
        tx_ids: list[bytes],
        unsigned: WorkBatch,
        devices: list[bytes],
        actions: list[Action],
    ) -> None:
        batch = WorkBatch(sign(unsigned.assignment, self.key), unsigned.txs)
        record = BatchRecord(batch, tuple(tx_ids))
        self.batches[batch.id] = record
        payload = encode(batch)
        for device_key in devices:
            record.waiting[device_key] = batch.assignment.deadline_ms
            record.given.add(device_key)
            self.devices.records[device_key].outstanding += 1
            for tx_id in tx_ids:
                tx_votes = votes[tx_id]
                tx_votes.asked.add(device_key)
                tx_votes.outstanding += 1
            topic = topics.work(self.chain_id, device_key)
            actions.append(Publish.on(Channel.WORK, topic, payload))
        self.batches_sent += 1
