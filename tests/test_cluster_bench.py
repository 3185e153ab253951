"""The cluster benchmark's smoke run (``--quick``: one ledger, three agents, two small
load steps, the embedded broker and the baseline without devices), as ``make bench``
runs it: it finishes, commits, and writes the JSON the docs' figures come from."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "cluster_bench.py"
ROLES = {"broker", "ledger", "agent", "loadgen"}
STEP_FIELDS = {
    "offered_tps", "submitted", "submitted_tps", "committed", "committed_tps",
    "p50_latency_s", "p99_latency_s", "efficiency", "roles",
}  # fmt: skip


def test_quick_benchmark_commits_and_writes_its_report(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "cluster.json").read_text())
    assert document["ed25519"]["raw_per_core"] > 0 and document["machine"]["cores"] >= 1
    assert [r["config"]["name"] for r in document["configs"]] == ["embedded", "baseline"]
    for config in document["configs"]:
        assert config["steps"], config["config"]
        for step in config["steps"]:
            assert set(step) >= STEP_FIELDS and set(step["roles"]) == ROLES
            assert step["committed"] > 0 and step["roles"]["ledger"]["cpu_s"] > 0
        assert all(s["roles"]["agent"]["processes"] == 0 for s in config["steps"]) == (
            config["config"]["agents"] == 0
        )
    assert "comm/s" in result.stdout  # the table
