"""A Prometheus endpoint for the agent: the status document as text exposition 0.0.4.

Off by default (``metrics_port``).  :func:`render_metrics` is pure; :class:`MetricsServer`
is a stdlib ``ThreadingHTTPServer`` in a daemon thread that serves the latest rendering
at ``/metrics`` and 404 elsewhere.  It never calls into the agent: the service hands it
a fresh rendering with each status update, so a slow or hostile scraper can delay
nothing but itself, and a malformed request is http.server's problem (a 400), never
an exception in the agent.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CONTENT_TYPE", "MetricsServer", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "micromine_agent_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return repr(value) if isinstance(value, float) else str(value)


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {_PREFIX}{name} {help_text}", f"# TYPE {_PREFIX}{name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        series = f"{_PREFIX}{name}{{{label_text}}}" if label_text else f"{_PREFIX}{name}"
        lines.append(f"{series} {_number(value)}")
    return lines


def render_metrics(status: dict[str, Any]) -> str:
    """Counters end in ``_total``; unknown gauges (no summary yet) are left out."""
    rewards = status.get("rewards") or {}
    link = status.get("link") or {}
    lines: list[str] = []

    def counter(name: str, help_text: str, value: float) -> None:
        lines.extend(_family(f"{name}_total", "counter", help_text, [({}, value)]))

    def gauge(name: str, help_text: str, value: float | None) -> None:
        if value is not None:
            lines.extend(_family(name, "gauge", help_text, [({}, value)]))

    info = {k: str(status.get(k, "")) for k in ("device", "chain", "agent_version")}
    lines.extend(_family("info", "gauge", "The agent's identity.", [(info, 1)]))
    lines.extend(_family(
        "state", "gauge", "1 for the agent's current state.",
        [({"state": s}, s == status.get("state"))
         for s in ("working", "paused", "offline", "connecting")],
    ))  # fmt: skip
    gauge("connected", "1 while connected to the broker.", bool(status.get("connected")))
    gauge("uptime_seconds", "Seconds since the agent started.", status.get("uptime_s"))
    gauge("budget_used_percent", "Share of the CPU budget used.", status.get("budget_used_pct"))
    counter("batches", "Work batches judged and answered.", status.get("batches", 0))
    lines.extend(_family(
        "judgements_total", "counter", "Transactions judged, by verdict.",
        [({"verdict": "valid"}, status.get("valid", 0)),
         ({"verdict": "invalid"}, status.get("invalid", 0))],
    ))  # fmt: skip
    counter("late_batches", "Batches answered after their deadline.", status.get("late_batches", 0))
    gauge("verdicts_last_hour", "Transactions judged in the last hour.",
          status.get("verdicts_last_hour", 0))  # fmt: skip
    drops = status.get("dropped") or {}
    lines.extend(_family(
        "dropped_total", "counter", "Messages dropped unanswered, by reason.",
        [({"reason": str(reason)}, n) for reason, n in sorted(drops.items())],
    ))  # fmt: skip
    counter("rewards_earned", "Rewards seen in account summaries since start.",
            rewards.get("earned") or 0)  # fmt: skip
    gauge("balance", "Spendable balance at the latest account summary.", rewards.get("balance"))
    gauge("unvested", "Rewards not yet vested at the latest summary.", rewards.get("unvested"))
    gauge("agreement_ratio", "Judgements matching decided outcomes (the ledger's count).",
          status.get("agreement"))  # fmt: skip
    for name in ("connects", "disconnects", "connect_failures", "publish_failed", "dropped_inbox"):
        counter(f"link_{name}", f"MQTT link {name.replace('_', ' ')}.", link.get(name, 0))
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves the latest text at ``/metrics`` from a daemon thread; ``close()`` stops it."""

    def __init__(self, host: str, port: int) -> None:
        self._text = b"# no status yet\n"
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = owner.text()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would drown the agent's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def update(self, text: str) -> None:
        with self._lock:
            self._text = text.encode()

    def text(self) -> bytes:
        with self._lock:
            return self._text

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
