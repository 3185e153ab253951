"""The simulator's command line (see sim/__init__.py for what a run is).

python -m micromine.ledger_node.sim --seeds 100000 [--start 0] [--nodes 4]
    [--byzantine] [--scenario NAME] [--jobs 2]     many runs; exit 1 on any failure
python -m micromine.ledger_node.sim --seed 1234 --byzantine -v
                                                   replay one run with its trace
"""

import argparse
import contextlib
import importlib
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from micromine.ledger_node.core.replica import Replica
from micromine.ledger_node.sim.faults import scenarios
from micromine.ledger_node.sim.world import SimConfig, SimResult, run_seed

# ---- the command line ------------------------------------------------------------------


def load_replica(spec: str) -> type[Replica]:
    """``module:Class`` -> the class (it must subclass Replica)."""
    module_name, _, qualname = spec.partition(":")
    found: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, Replica)):
        raise ValueError(f"{spec} is not a Replica subclass")
    return found


def _run_chunk(job: tuple[Sequence[int], SimConfig]) -> tuple[int, Counter[str], list[SimResult]]:
    seeds, config = job
    scenarios_run: Counter[str] = Counter()
    failures = []
    for seed in seeds:
        result = run_seed(seed, config)
        scenarios_run[result.scenario] += 1
        if not result.ok:
            failures.append(result)
    return len(seeds), scenarios_run, failures


def _chunks(start: int, count: int, size: int) -> Iterator[range]:
    for first in range(start, start + count, size):
        yield range(first, min(first + size, start + count))


def _print_one(result: SimResult, verbose: bool) -> None:
    if verbose:
        print(f"seed {result.seed}: {result.plan}")
        for line in result.trace:
            print(f"  {line}")
        print(f"  counters: {result.counters}")
    status = "ok" if result.ok else "FAILED"
    print(
        f"seed {result.seed} {result.scenario}: {status}; heights {list(result.heights)}; "
        f"{result.sim_ms} simulated ms"
    )
    if not result.ok:
        print(result.report())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m micromine.ledger_node.sim",
        description="Run seeded consensus simulations and check their invariants.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, help="run just this seed (with -v: its trace)")
    which.add_argument("--seeds", type=int, default=1_000, help="how many seeds (default 1000)")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--nodes", type=int, default=4, help="validators (n = 3f + 1)")
    parser.add_argument("--byzantine", action="store_true", help="add Byzantine scenarios")
    parser.add_argument("--scenario", choices=scenarios(True), help="run only this scenario")
    parser.add_argument(
        "--replica", help="module:Class of the honest nodes' Replica (a test's subclass)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--progress-every", type=int, default=1_000, metavar="N")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the run's trace")
    args = parser.parse_args(argv)
    if args.nodes < 4:
        parser.error("--nodes must be at least 4 (n = 3f + 1 with f >= 1)")
    config = SimConfig(
        nodes=args.nodes,
        byzantine=args.byzantine or args.scenario in scenarios(True)[len(scenarios(False)) :],
        scenario=args.scenario,
        replica=load_replica(args.replica) if args.replica else Replica,
    )
    if args.seed is not None:
        result = run_seed(args.seed, config, trace=args.verbose)
        _print_one(result, args.verbose)
        return 0 if result.ok else 1

    started = time.perf_counter()
    done, next_report = 0, args.progress_every
    scenarios_run: Counter[str] = Counter()
    failures: list[SimResult] = []
    jobs = [(chunk, config) for chunk in _chunks(args.start, args.seeds, 20)]
    with contextlib.ExitStack() as stack:  # the pool's exit terminates its workers
        pool = stack.enter_context(multiprocessing.Pool(args.jobs)) if args.jobs > 1 else None
        results = pool.imap_unordered(_run_chunk, jobs) if pool else map(_run_chunk, jobs)
        for count, ran, failed in results:
            done += count
            scenarios_run.update(ran)
            for result in failed:
                failures.append(result)
                print(result.report(), flush=True)
            if done >= next_report or done == args.seeds:
                next_report += args.progress_every
                rate = done / (time.perf_counter() - started)
                print(
                    f"[{done}/{args.seeds}] {rate:.1f} seeds/s, {len(failures)} failed",
                    flush=True,
                )
    elapsed = time.perf_counter() - started
    mix = ", ".join(f"{name} {count}" for name, count in sorted(scenarios_run.items()))
    print(
        f"{done} seeds ({args.start}..{args.start + done - 1}) in {elapsed:.1f}s "
        f"({done / elapsed:.1f} seeds/s, {args.jobs} jobs): {len(failures)} failed; {mix}"
    )
    for result in sorted(failures, key=lambda r: r.seed):
        print(f"FAILED seed {result.seed}: {result.violations[0]}\n  replay: {result.replay}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
