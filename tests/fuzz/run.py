"""Run the atheris harnesses (``fuzz_*.py`` beside this file), each in its own process.

    python tests/fuzz/run.py [--seconds S] [--runs N] [--corpus DIR] [NAME ...]

Each harness runs until S seconds or N inputs, whichever comes first, on the corpus
``DIR/<name>`` (kept between runs, so long runs build on each other); a crash writes its
input to ``DIR/crash-<name>-*`` and makes the exit status non-zero.  ``make fuzz`` and
tests/test_fuzz_atheris.py call this.
"""

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = sorted(path.stem.removeprefix("fuzz_") for path in HERE.glob("fuzz_*.py"))


def command(name: str, corpus: Path, seconds: int, runs: int, seed: int) -> list[str]:
    return [
        sys.executable, str(HERE / f"fuzz_{name}.py"), str(corpus / name),
        f"-max_total_time={seconds}", f"-runs={runs}", f"-seed={seed}", "-timeout=60",
        "-rss_limit_mb=4096", "-max_len=65536", f"-artifact_prefix={corpus}/crash-{name}-",
        "-print_final_stats=1",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"harnesses to run (default all: {', '.join(HARNESSES)})")  # fmt: skip
    parser.add_argument("--seconds", type=int, default=60, help="per harness")
    parser.add_argument("--runs", type=int, default=-1, help="inputs per harness (-1: no limit)")
    parser.add_argument("--corpus", type=Path, default=Path("build/fuzz"))
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's seed (0: random)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(HARNESSES)
    if unknown:
        parser.error(f"no harness {', '.join(sorted(unknown))}; there are {', '.join(HARNESSES)}")
    if importlib.util.find_spec("atheris") is None:
        print("atheris is not installed (wheels only for CPython 3.11-3.14 on x86_64 Linux); "
              "nothing to run", file=sys.stderr)  # fmt: skip
        return 0
    failed = []
    for name in args.names or HARNESSES:
        print(f"== fuzz {name}: {args.seconds} s, {args.runs} runs", flush=True)
        argv = command(name, args.corpus, args.seconds, args.runs, args.seed)
        if subprocess.run(argv, check=False).returncode:
            failed.append(name)
    if failed:
        print(f"crashed: {', '.join(failed)} (inputs in {args.corpus}/crash-*)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
