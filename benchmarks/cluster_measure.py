"""What the cluster benchmark measures besides the cluster: the machine's Ed25519
verification rate, and each process's CPU time and memory from /proc.

The verification rate is the physical limit the efficiency figure divides by: with k
devices judging every transaction, a machine of ``cores`` cores cannot commit more than
``cores * rate_per_core / k`` transactions per second, whatever the software around
the signature checks does.  It is measured in the same run as the cluster (on a loaded
machine it is lower too, which keeps the ratio honest).

Per-process figures come from ``/proc/<pid>/stat`` (utime + stime, in clock ticks) and
``/proc/<pid>/status`` (VmRSS, VmHWM), read at the start and end of each load step.
Linux only; elsewhere the readings are zero and the benchmark says so.
"""

import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nacl.signing

from micromine.processes import ProcessReading, read_process
from micromine.protocol.codec import is_signature_valid, sign
from micromine.protocol.crypto import KeyPair, sha256, verify
from micromine.protocol.kinds import Kind
from micromine.protocol.messages import Transaction

SAMPLES = 512  # distinct keys and signatures, so no cache anywhere helps


# ---- Ed25519 ----------------------------------------------------------------------


def _timed(operation: Callable[[int], object], seconds: float) -> tuple[float, float]:
    """Calls of ``operation(i)`` per CPU second of this process (the core's speed, however
    many other processes share it) and per wall-clock second (what it got), over
    ``seconds`` of CPU time."""
    calls, cpu_started, wall_started = 0, time.process_time(), time.perf_counter()
    while (cpu := time.process_time() - cpu_started) < seconds:
        for i in range(64):
            operation((calls + i) % SAMPLES)
        calls += 64
    return calls / cpu, calls / (time.perf_counter() - wall_started)


def _samples() -> list[Transaction]:
    keys = [KeyPair(sha256(b"bench verify %d" % i)) for i in range(SAMPLES)]
    return [
        sign(Transaction("bench", k.public, sha256(k.public), 10, 1, 0, 2**40, "m"), k)
        for k in keys
    ]


def _raw_rate(seconds: float) -> tuple[float, float]:
    """libsodium through PyNaCl: ``VerifyKey.verify`` on pre-made (message, signature)."""
    signed = [nacl.signing.SigningKey(sha256(b"raw %d" % i)) for i in range(SAMPLES)]
    pairs = [(key.verify_key, key.sign(b"m%d" % i)) for i, key in enumerate(signed)]
    return _timed(lambda i: pairs[i][0].verify(pairs[i][1]), seconds)


def measure_verify_rates(seconds: float) -> dict[str, Any]:
    """Verifications per CPU second of one core (raw libsodium; our protocol's
    ``verify`` with its domain-separated signing bytes; ``is_signature_valid`` of a
    transaction, which also encodes and hashes it, as a device does), and the raw rate
    with every core busy at once, as a check that one process's figure is per core."""
    txs = _samples()
    digests = [(tx.sender, tx.id, tx.signature) for tx in txs]
    raw, raw_wall = _raw_rate(seconds)
    protocol, _ = _timed(
        lambda i: verify(digests[i][0], Kind.TRANSACTION, "bench", digests[i][1], digests[i][2]),
        seconds,
    )
    transaction, _ = _timed(lambda i: is_signature_valid(txs[i]), seconds)
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        parallel = list(pool.map(_raw_rate, [seconds] * cores))
    return {
        "cores": cores,
        "raw_per_core": round(raw),  # per CPU second: the limit efficiency divides by
        "protocol_verify_per_core": round(protocol),
        "tx_signature_valid_per_core": round(transaction),
        # One process per core at once: per CPU second (shared cores or SMT would show
        # here), and what the machine delivered per wall second (its other load shows).
        "raw_per_core_all_busy": round(sum(cpu for cpu, _ in parallel) / cores),
        "raw_all_cores_wall": round(sum(wall for _, wall in parallel)),
        "raw_one_process_wall": round(raw_wall),
    }


def compute_efficiency(committed_tps: float, cores: int, rate_per_core: float, k: int) -> float:
    """The share of the machine's limit for k-fold verification that the system reached."""
    return committed_tps / (cores * rate_per_core / k) if rate_per_core > 0 else 0.0


# ---- processes ----------------------------------------------------------------------


def snapshot(pids: Iterable[int]) -> dict[int, ProcessReading]:
    return {pid: reading for pid in pids if (reading := read_process(pid)) is not None}


def role_usage(
    roles: Mapping[str, list[int]],
    before: Mapping[int, ProcessReading],
    after: Mapping[int, ProcessReading],
) -> dict[str, dict[str, float]]:
    """Per role: CPU seconds between the two snapshots and resident MiB at the end,
    summed over the role's processes, and the largest single process's peak."""
    usage: dict[str, dict[str, float]] = {}
    for role, pids in roles.items():
        present = [pid for pid in pids if pid in before and pid in after]
        usage[role] = {
            "processes": len(present),
            "cpu_s": round(sum(after[p].cpu_s - before[p].cpu_s for p in present), 3),
            "rss_mib": round(sum(after[p].rss_kib for p in present) / 1024, 1),
            "peak_rss_mib_per_process": round(
                max((after[p].hwm_kib for p in present), default=0) / 1024, 1
            ),
        }
    return usage


# ---- the machine --------------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    """What the figures came from: CPU model, cores, memory, Python, load average."""
    model = platform.processor() or platform.machine()
    memory_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
