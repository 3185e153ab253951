"""docs/DEPLOY.md section 7, "A cluster by hand", run as it is written.

The commands between ``<!-- cluster-by-hand:begin -->`` and ``<!-- cluster-by-hand:end -->``
run as real processes, with only the block's own ``DATA`` and ``PORT`` replaced (a
temporary directory, a free loopback port): a line ending in ``&`` is a background
process, any other runs to completion, except the last, the block watcher, which runs
until stopped.  When the watcher has printed certified blocks with transactions and
every ledger's database holds them, every process gets SIGTERM, as ``kill $(jobs -p)``
and Ctrl-C would give them; each must exit 0, the four stored chains must be identical,
and no process may be left.
"""

import json
import re
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from framework.tagged_processes import kill_tagged, new_tag, tagged, tagged_environment

from micromine.chains import compare_chains
from micromine.processes import free_port, wait_until

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[1] / "docs" / "DEPLOY.md"
BEGIN, END = "<!-- cluster-by-hand:begin -->", "<!-- cluster-by-hand:end -->"
REPLACED = ("DATA", "PORT")  # the variables the block sets at its top and the test replaces
LEDGERS = 4
MIN_HEIGHT = 3
_ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=")
_WATCHED = re.compile(r"height\s+(\d+)\s.*\stxs\s+(\d+)\s")


@dataclass(frozen=True, slots=True)
class Block:
    """The documented commands, in order, continuation lines joined."""

    assignments: list[tuple[str, str]]  # (name, the whole line)
    commands: list[str]


def read_block(text: str) -> Block:
    """The ```sh block between the markers, exactly; comments and blank lines dropped."""
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "the markers, once each"
    inner = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert inner.startswith("```sh\n") and inner.endswith("\n```"), "one ```sh block"
    lines: list[str] = []
    pending = ""
    for raw in inner.removeprefix("```sh\n").removesuffix("\n```").splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            lines.append(line)
    assert not pending, "a continuation line ends the block"
    assignments = [(m[1], line) for line in lines if (m := _ASSIGNMENT.match(line))]
    commands = lines[len(assignments) :]
    assert all(not _ASSIGNMENT.match(c) for c in commands), "assignments come first"
    return Block(assignments, commands)


def environment(block: Block, replaced: dict[str, str], tag: str) -> dict[str, str]:
    """The block's variables, each assignment evaluated by bash as the reader's shell
    would (so later ones may use earlier ones), except those the test replaces."""
    names = [name for name, _ in block.assignments]
    assert set(replaced) <= set(names), f"the block must set {sorted(replaced)} at its top"
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "micromine").exists(), "micromine must be installed beside python"
    env = tagged_environment(tag)
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    for name, line in block.assignments:
        if name in replaced:
            env[name] = replaced[name]
            continue
        value = subprocess.run(
            ["bash", "-c", f'{line}\nprintf %s "${name}"'],
            env=env, capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        env[name] = value
    return env


def heights(data: Path) -> list[int]:
    """Each ledger's stored height, read-only while the nodes run (as `devices list` does)."""
    found = []
    for index in range(1, LEDGERS + 1):
        try:
            with sqlite3.connect(f"file:{data / f'ledger-{index}.sqlite'}?mode=ro", uri=True) as db:
                found.append(int(db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]))
        except sqlite3.Error:  # not created yet
            found.append(0)
    return found


def watched(output: Path) -> list[tuple[int, int, str]]:
    """(height, transactions, line) of each block the watcher printed."""
    rows = []
    for line in output.read_text().splitlines():
        if match := _WATCHED.search(line):
            rows.append((int(match[1]), int(match[2]), line))
    return rows


def logs(data: Path, watch_out: Path) -> str:
    """Every log's tail, for a failure message."""
    parts = []
    for log in [*sorted(data.glob("*.log")), watch_out]:
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            parts.append(f"--- {log.name}\n{tail}")
    return "\n".join(parts)


def test_the_documented_cluster_commits_agrees_and_stops_cleanly(tmp_path: Path) -> None:
    block = read_block(DEPLOY.read_text())
    *setup_and_daemons, watch_command = block.commands
    assert watch_command.startswith("micromine blocks watch "), "the block ends with the watcher"
    assert not watch_command.endswith("&")
    data = tmp_path / "cluster"
    tag = new_tag()
    env = environment(block, {"DATA": str(data), "PORT": str(free_port())}, tag)
    watch_out = tmp_path / "watch.out"
    processes: dict[str, subprocess.Popen[bytes]] = {}
    out: IO[bytes]
    try:
        for command in setup_and_daemons:
            if command.endswith("&"):
                name = command.split()[1]  # micromine ROLE ...
                processes[f"{name}-{len(processes)}"] = subprocess.Popen(
                    ["bash", "-c", "exec " + command.removesuffix("&").rstrip()],
                    env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            else:
                done = subprocess.run(
                    ["bash", "-c", command], env=env, cwd=tmp_path,
                    capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
                assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        with watch_out.open("wb") as out:
            processes["watch"] = subprocess.Popen(
                ["bash", "-c", "exec " + watch_command],
                env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        roles = sorted(name.rsplit("-", 1)[0] for name in processes)
        assert roles.count("ledger") == LEDGERS and {"broker", "agent", "load"} <= set(roles)

        def committed_everywhere() -> bool:
            blocks = watched(watch_out)
            return (
                any(txs > 0 for _, txs, _ in blocks)
                and max(h for h, _, _ in blocks) >= MIN_HEIGHT
                and min(heights(data)) >= MIN_HEIGHT
            )

        wait_until(
            committed_everywhere,
            120,
            interval=0.2,
            message=lambda: (
                f"blocks with transactions on every ledger {heights(data)}\n"
                + logs(data, watch_out)
            ),
        )
        assert all("verified: round" in line for _, _, line in watched(watch_out))

        for process in processes.values():  # kill $(jobs -p), and Ctrl-C for the watcher
            process.send_signal(signal.SIGTERM)
        codes = {name: process.wait(timeout=60) for name, process in processes.items()}
        assert set(codes.values()) == {0}, f"{codes}\n{logs(data, watch_out)}"
    finally:
        kill_tagged(tag)
    assert not tagged(tag), "a process of the cluster is left"

    chains = compare_chains({f"ledger-{i}": data / f"ledger-{i}.sqlite" for i in range(1, 5)})
    assert chains.identical, chains.describe()
    assert min(chains.heights.values()) >= MIN_HEIGHT, chains.describe()
    assert chains.min_signers >= 3, chains.describe()  # 2f + 1 of the 4 validators
    report = json.loads((data / "load.json").read_text())
    assert report["interrupted"] is True and report["committed"] > 0, report
    assert report["valid_rejected"] == 0, report["rejections"]
    assert "blocks watch: " in watch_out.read_text()
