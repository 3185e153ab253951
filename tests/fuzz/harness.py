"""What every atheris harness here shares: seeding the corpus and starting libFuzzer.

A harness is a script ``fuzz_<name>.py`` with ``test_one_input(data)`` and ``seeds()``;
its ``__main__`` calls :func:`main`.  libFuzzer's arguments pass through (a corpus
directory, ``-runs=N``, ``-max_total_time=S``, ...); an empty corpus directory is first
filled with the harness's valid samples, so that mutations start from real messages.
"""

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import atheris


def main(test_one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    corpora = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for corpus in corpora:
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for seed in seeds():
                (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
