"""The cluster benchmark's outputs: the table on stdout and the curves as PNG.

Both read only the JSON document cluster_bench.py writes, so a stored
``benchmarks/results/cluster.json`` can be redrawn with ``python
benchmarks/cluster_report.py FILE``.  matplotlib is optional (the ``bench`` extra):
without it no PNG is drawn and the caller says so.
"""

import json
import sys
from pathlib import Path
from typing import Any

ROLES = ("broker", "ledger", "agent", "loadgen")
HEADER = (
    "config", "offered", "subm/s", "comm/s", "p50 s", "p99 s",
    *(f"{role[:6]} ms/tx" for role in ROLES), *(f"{role[:6]} MiB" for role in ROLES), "eff",
)  # fmt: skip


def table_rows(document: dict[str, Any]) -> list[list[str]]:
    rows = []
    for result in document["configs"]:
        for step in result["steps"]:
            roles = step["roles"]

            def cpu(role: str, roles: dict[str, Any] = roles) -> str:
                value = roles[role]["cpu_ms_per_tx"] if roles[role]["processes"] else None
                return "-" if value is None else f"{value:.3f}"

            rows.append([
                result["config"]["name"], f"{step['offered_tps']:g}",
                f"{step['submitted_tps']:.0f}", f"{step['committed_tps']:.0f}",
                f"{step['p50_latency_s']:.2f}", f"{step['p99_latency_s']:.2f}",
                *(cpu(role) for role in ROLES),
                *(f"{roles[role]['rss_mib']:.0f}" if roles[role]["processes"] else "-"
                  for role in ROLES),
                f"{step['efficiency']:.3f}",
            ])  # fmt: skip
    return rows


def format_table(document: dict[str, Any]) -> str:
    """A fixed-width table: one row per configuration and load step."""
    rows = [list(HEADER), *table_rows(document)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]  # fmt: skip
    rates = document["ed25519"]
    machine = document["machine"]
    lines.append(
        f"Ed25519 verifications/s per core: {rates['raw_per_core']} raw (libsodium), "
        f"{rates['protocol_verify_per_core']} via protocol.crypto.verify (per CPU second); "
        f"all {rates['cores']} cores at once: {rates['raw_per_core_all_busy']} per core, "
        f"{rates['raw_all_cores_wall']} per wall second in all.  "
        f"Machine: {machine['cpu']}, {machine['cores']} cores, load average "
        f"{machine['load_average_at_start']} at start."
    )
    return "\n".join(lines)


def offered_rates(document: dict[str, Any]) -> list[float]:
    return sorted({s["offered_tps"] for r in document["configs"] for s in r["steps"]})


def _throughput(axes: Any, document: dict[str, Any]) -> None:
    for result in document["configs"]:
        steps, name = result["steps"], result["config"]["name"]
        offered = [s["offered_tps"] for s in steps]
        axes.plot(offered, [s["committed_tps"] for s in steps], "o-", label=f"{name}: committed")
        axes.plot(offered, [s["submitted_tps"] for s in steps], "x:", alpha=0.5,
                  label=f"{name}: submitted")  # fmt: skip
    rates = offered_rates(document)
    axes.plot(rates, rates, color="grey", linewidth=0.5, label="offered")
    axes.set(ylabel="tx/s", title="Throughput")


def _latency(axes: Any, document: dict[str, Any]) -> None:
    for result in document["configs"]:
        steps, name = result["steps"], result["config"]["name"]
        offered = [s["offered_tps"] for s in steps]
        line = axes.plot(offered, [s["p50_latency_s"] for s in steps], "o-", label=f"{name}: p50")
        axes.plot(offered, [s["p99_latency_s"] for s in steps], "s--",
                  color=line[0].get_color(), label=f"{name}: p99")  # fmt: skip
    axes.set(ylabel="submit to COMMITTED receipt (s)", title="Latency")


def draw_curves(document: dict[str, Any], out: Path) -> list[str]:
    """cluster_throughput.png and cluster_latency.png against offered load, every
    configuration on the same axes; the names written, or [] without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return []
    machine = f"{document['machine']['cpu']}, {document['machine']['cores']} cores"
    written = []
    for name, draw in (("cluster_throughput.png", _throughput), ("cluster_latency.png", _latency)):
        figure, axes = plt.subplots(figsize=(7, 4.5))
        draw(axes, document)
        axes.set_xscale("log", base=2)
        axes.set_xticks(offered_rates(document), [f"{x:g}" for x in offered_rates(document)])
        axes.set(xlabel="offered load (tx/s)", title=f"{axes.get_title()} ({machine})")
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        written.append(name)
    return written


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/cluster.json")
    stored = json.loads(path.read_text())
    print(format_table(stored))
    print("drew", draw_curves(stored, path.parent) or "nothing (no matplotlib)")
