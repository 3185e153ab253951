"""Run each atheris harness (tests/fuzz/fuzz_*.py) briefly, in a subprocess: atheris
instruments the imports and ends the process itself.  Skipped where atheris does not
install (it has wheels only for CPython 3.11-3.14 on x86_64 Linux).  Long runs:
``make fuzz FUZZ_SECONDS=600`` (tests/fuzz/run.py)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).parent / "fuzz"
HARNESSES = sorted(path.stem.removeprefix("fuzz_") for path in FUZZ_DIR.glob("fuzz_*.py"))
RUNS = 3000  # per harness: about a second each on the CI machine, from the seed corpus
SECONDS = 20  # a bound in case a harness gets slow

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (wheels only for CPython 3.11-3.14 on x86_64 Linux)",
)


def test_every_harness_is_run() -> None:
    assert HARNESSES == ["agent", "decoders", "genesis", "ledger"]


@pytest.mark.parametrize("name", HARNESSES)
def test_harness_runs_without_a_crash(name: str, tmp_path: Path) -> None:
    # A fixed libFuzzer seed: the same inputs on every run.
    argv = [sys.executable, str(FUZZ_DIR / "run.py"), name, f"--runs={RUNS}",
            f"--seconds={SECONDS}", f"--corpus={tmp_path}", "--seed=1"]  # fmt: skip
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=SECONDS + 60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output, output[-4000:]
