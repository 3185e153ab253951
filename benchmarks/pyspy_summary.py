"""Top functions of a py-spy profile, as the text table docs/PERFORMANCE.md shows.

    py-spy record --rate 40 --format raw -o ledger.txt --duration 25 --pid PID
    python benchmarks/pyspy_summary.py ledger.txt [--top 14]

Shares are of *busy* samples: py-spy counts a thread blocked in ``select``/``epoll`` or
waiting on a condition as active, so paho's network thread waiting for data, asyncio's
selector and the main loop waiting on its inbox are dropped first; otherwise an idle
process looks half busy.  Inclusive counts each function once per sample.
"""

import argparse
from collections import Counter
from pathlib import Path

IDLE = (
    "Client._loop (paho/mqtt/client.py:1667)",  # select() on the socket
    "EpollSelector.select",
    "Condition.wait",
    "Inbox.get",
)
FRAMEWORK = (
    "_run_module", "_run_code", "<module>", "main ", "Thread.", "Client._thread_main",
    "Client.loop_forever", "Runner.run", "BaseEventLoop.run", "run (asyncio", "Handle._run",
    "BaseEventLoop._run_once", "run_from_args", "AgentService.run", "LedgerService.run",
    "run_load ", "main_run", "run_ledger", "run_agent",
)  # fmt: skip


def function(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``: one row per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0]})" if where else name


def summarise(path: Path, top: int) -> list[str]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in IDLE):
            continue
        samples = int(count)
        total += samples
        for name in {function(f) for f in frames}:
            inclusive[name] += samples
        own[function(frames[-1])] += samples
    rows = [
        f"busy samples: {total}",
        "",
        "| function | inclusive | self |",
        "| --- | ---: | ---: |",
    ]
    shown = 0
    for name, samples in inclusive.most_common():
        if shown >= top:
            break
        if name.startswith(FRAMEWORK) or "threading.py" in name or "runpy" in name:
            continue
        rows.append(
            f"| `{name}` | {100 * samples / total:.0f} % | {100 * own[name] / total:.0f} % |"
        )
        shown += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    print("\n".join(summarise(args.profile, args.top)))


if __name__ == "__main__":
    main()
