"""Input quotas (protocol/quota.py): payload caps per channel and token buckets, in memory."""

import json

import pytest

from micromine.protocol.acl import Role
from micromine.protocol.limits import (
    MAX_BLOCK_REGISTRATIONS,
    MAX_BLOCK_REWARDS,
    MAX_BLOCK_TXS,
    MAX_CERTIFICATE_SIGNATURES,
    MAX_MESSAGE_BYTES,
)
from micromine.protocol.quota import (
    MAX_BLOCK_JSON_BYTES,
    MAX_PAYLOAD,
    MQTT_OVERHEAD,
    ROLE_QUOTAS,
    Buckets,
    Quota,
    Rate,
    max_packet_for,
    parse_role_quotas,
)
from micromine.protocol.topics import Channel


def test_every_channel_has_a_payload_cap() -> None:
    assert set(MAX_PAYLOAD) == set(Channel)
    assert MAX_PAYLOAD[Channel.HEARTBEAT] == MAX_MESSAGE_BYTES["heartbeat"]
    assert MAX_PAYLOAD[Channel.CONSENSUS] == MAX_MESSAGE_BYTES["proposal"]


def test_the_json_block_cap_holds_the_largest_json_block() -> None:
    hex64, big = "ab" * 32, 10**15
    document = {
        "chain_id": "x" * 32, "height": big, "hash": hex64, "prev_hash": hex64,
        "timestamp": 2**53, "proposer": hex64, "tx_root": hex64, "state_root": hex64,
        "tx_count": MAX_BLOCK_TXS, "txs": [hex64] * MAX_BLOCK_TXS,
        "verdicts": 8192, "rewards": {f"{i:064x}": big for i in range(MAX_BLOCK_REWARDS)},
        "registrations": [hex64] * MAX_BLOCK_REGISTRATIONS, "commit_round": 2**31,
        "signers": [hex64] * MAX_CERTIFICATE_SIGNATURES,
    }  # fmt: skip
    assert len(json.dumps(document, separators=(",", ":"))) <= MAX_BLOCK_JSON_BYTES


def test_packet_limits_follow_what_a_role_may_publish() -> None:
    assert max_packet_for(Role.LEDGER) == MAX_MESSAGE_BYTES["block"] + MQTT_OVERHEAD
    assert max_packet_for(Role.DEVICE) == MAX_MESSAGE_BYTES["submission"] + MQTT_OVERHEAD
    assert max_packet_for(Role.ANONYMOUS) == MQTT_OVERHEAD


def test_a_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    buckets = Buckets()
    quota = Quota(Rate(10, 5))
    assert [buckets.allow("a", quota, 0, 0) for _ in range(6)] == [True] * 5 + [False]
    assert not buckets.allow("a", quota, 0, 99)  # 0.99 of a token
    assert buckets.allow("a", quota, 0, 100)
    assert buckets.allow("b", quota, 0, 100)  # keys are independent


def test_bytes_are_charged_with_messages() -> None:
    buckets = Buckets()
    quota = Quota(Rate(100, 100), Rate(1000, 1000))
    assert buckets.allow("a", quota, 600, 0)
    assert not buckets.allow("a", quota, 600, 0)  # 400 byte tokens left
    assert buckets.allow("a", quota, 400, 0)
    assert not buckets.allow("a", quota, 2000, 10_000)  # larger than the burst: never


def test_a_clock_stepping_back_refills_nothing() -> None:
    buckets = Buckets()
    quota = Quota(Rate(1, 1))
    assert buckets.allow("a", quota, 0, 10_000)
    assert not buckets.allow("a", quota, 0, 0)
    assert not buckets.allow("a", quota, 0, 10_500)


def test_past_capacity_fresh_keys_share_one_overflow_bucket() -> None:
    buckets = Buckets(capacity=2)
    quota = Quota(Rate(1, 2))
    assert buckets.allow("a", quota, 0, 0) and buckets.allow("b", quota, 0, 0)
    # "a" and "b" are not idle: the fresh keys share the overflow bucket of their group.
    assert [buckets.allow(f"k{i}", quota, 0, 0, group="g") for i in range(3)] == [
        True,
        True,
        False,
    ]
    assert len(buckets) == 2
    # Once "a" has refilled it can be forgotten for a new key.
    assert buckets.allow("c", quota, 0, 5000)
    assert len(buckets) == 2


def test_role_quotas_parse_over_the_defaults() -> None:
    quotas = parse_role_quotas(["device=20/100", "client=5,1024/2048", "ledger=9,0"])
    assert quotas[Role.DEVICE] == Quota(Rate(20, 100), ROLE_QUOTAS[Role.DEVICE].bytes)
    assert quotas[Role.CLIENT] == Quota(Rate(5, 20), Rate(1024, 2048))
    assert quotas[Role.LEDGER].bytes is None
    assert quotas[Role.OPERATOR] == ROLE_QUOTAS[Role.OPERATOR]
    for bad in ("robot=5", "device=fast", "device=0", "device=5/0"):
        with pytest.raises(ValueError):
            parse_role_quotas([bad])
