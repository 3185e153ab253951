"""Real MQTT brokers as separate processes, for integration tests.

Modelled on bitcoin's functional-test framework: every broker is a real OS process on a
loopback port, started and stopped with signals, and tests *wait on conditions* (a port
accepting connections, a message arriving) instead of sleeping for a guessed duration.
Sleeping blindly makes tests both slow on fast machines and flaky on slow CI runners.

Two interchangeable brokers share one interface (``.url``, ``.host``, ``.port``,
``.restart()``, ``.stop()``, context manager): :class:`EmbeddedBroker` (our amqtt
wrapper, ``python -m micromine.broker``) and :class:`MosquittoBroker` (the Debian
``mosquitto`` binary, the production reference).  Running the same scenario on both keeps
the embedded broker honest.

This is a helper module, not a test file: pytest fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from micromine.processes import free_port, port_open, wait_until

__all__ = [
    "BrokerProcess",
    "ConfiguredMosquitto",
    "EmbeddedBroker",
    "MosquittoBroker",
    "free_port",
    "mosquitto_path",
    "port_open",
    "require_mosquitto",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0
"""Seconds a broker gets to bind its ports: generous because a cold CI runner importing
amqtt (pydantic, websockets, transitions) can take several seconds."""
STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL."""


def wait_for_port(host: str, port: int, timeout: float = START_TIMEOUT) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise ``WaitTimeoutError``."""
    wait_until(
        lambda: port_open(host, port),
        timeout,
        interval=0.05,
        message=f"nothing listening on {host}:{port}",
    )


def mosquitto_path() -> str | None:
    """Path of the mosquitto binary, or None.

    Debian installs it in /usr/sbin, which is not on a normal user's PATH, so look there too.
    """
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_mosquitto() -> str:
    """mosquitto's path, or skip the calling test; on CI (``CI`` set) fail instead.

    Silently skipping half the broker matrix on CI would hide exactly the regressions the
    matrix exists to catch; locally, not everyone has the Debian package installed.
    """
    import pytest  # noqa: PLC0415  (keeps this module importable outside pytest)

    path = mosquitto_path()
    if path is None:
        reason = "mosquitto binary not found (Debian/Ubuntu: apt install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; required when CI is set")
        pytest.skip(reason)
    return path


class BrokerProcess:
    """A broker running as a child process; subclasses supply the command line.

    Output (stdout and stderr) goes to ``log_path`` so a failing test can show what the
    broker said; the file is appended to across restarts.
    """

    name = "broker"

    def __init__(
        self,
        port: int | None = None,
        *,
        log_dir: str | Path | None = None,
        host: str = LOOPBACK,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port()
        self._owned_dir: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix=f"mm-{self.name}-")
            log_dir = self._owned_dir.name
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{self.name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port``, the broker address format the micromine CLIs take."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the child process exists and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last process (negative signal number if killed by a signal)."""
        return None if self.proc is None else self.proc.returncode

    def command(self) -> list[str]:
        """The argv that starts this broker."""
        raise NotImplementedError

    def ports(self) -> list[int]:
        """Every port that must accept connections before the broker counts as started."""
        return [self.port]

    def log_text(self) -> str:
        """Everything the broker has written so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until all its ports accept connections.

        Fails fast, with the broker's log, if the process exits during startup (a port
        taken by someone else, a bad config) instead of waiting for the full timeout.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} already running (pid {self.proc.pid})")
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C aimed at pytest must not also hit the broker
            # mid-test; we stop it ourselves in the fixture teardown.
            start_new_session=True,
        )

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited with {self.returncode} during startup:\n{self.log_text()}"
                )
            return all(port_open(self.host, port) for port in self.ports())

        try:
            wait_until(ready, timeout, interval=0.05, message=self.log_text)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL if still alive after ``timeout``; returns the exit status."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL without a grace period, to simulate a broker crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again on the same ports (clients see a broker outage)."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the broker and remove the temporary directory, if we created it."""
        self.stop()
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    def __enter__(self) -> Self:
        """Start the broker; it is stopped when the ``with`` block ends."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker, even when the test body failed."""
        self.close()

    def __repr__(self) -> str:
        """Name, URL and state, which is what a failing test report needs."""
        state = "running" if self.running else f"exited({self.returncode})"
        return f"<{type(self).__name__} {self.url} {state} log={self.log_path}>"


class EmbeddedBroker(BrokerProcess):
    """``python -m micromine.broker`` (amqtt) with TCP and WebSocket listeners."""

    name = "amqtt"

    def __init__(
        self,
        port: int | None = None,
        ws_port: int | None = None,
        *,
        log_dir: str | Path | None = None,
        host: str = LOOPBACK,
        extra_args: tuple[str, ...] = (),
        tls_port: int | None = None,
    ) -> None:
        super().__init__(port, log_dir=log_dir, host=host)
        self.ws_port = ws_port if ws_port is not None else free_port()
        self.extra_args = extra_args  # e.g. ("--genesis", FILE): access control on
        self.tls_port = tls_port  # with ("--tls-cert", ..., "--tls-key", ...) in extra_args

    @property
    def ws_url(self) -> str:
        """``ws://host:ws_port`` of the WebSocket listener (any path is accepted)."""
        return f"ws://{self.host}:{self.ws_port}"

    def command(self) -> list[str]:
        """The same entry point users run, so the tests cover argument parsing too."""
        return [
            sys.executable,
            "-m",
            "micromine.broker",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--ws-port",
            str(self.ws_port),
            *(() if self.tls_port is None else ("--tls-port", str(self.tls_port))),
            *self.extra_args,
        ]

    def ports(self) -> list[int]:
        """Every listener must be up: amqtt binds them one after the other."""
        return [self.port, self.ws_port, *(() if self.tls_port is None else (self.tls_port,))]


class MosquittoBroker(BrokerProcess):
    """The real mosquitto binary with a generated, test-friendly config.

    Settings differ from mosquitto's defaults only where the defaults would make tests
    flaky: queue and inflight limits are lifted so bursts are never dropped, persistence is
    off so a restart starts clean and nothing is written outside the temp dir.
    """

    name = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        *,
        ws_port: int | None = None,
        log_dir: str | Path | None = None,
        host: str = LOOPBACK,
        path: str | None = None,
    ) -> None:
        binary = path or mosquitto_path()
        if binary is None:
            raise FileNotFoundError("mosquitto binary not found (Debian: apt install mosquitto)")
        super().__init__(port, log_dir=log_dir, host=host)
        self.binary = binary
        self.ws_port = ws_port
        self.config_path = self.dir / f"mosquitto-{self.port}.conf"

    def config_text(self) -> str:
        """The mosquitto.conf used for this broker."""
        lines = [
            f"listener {self.port} {self.host}",
            "protocol mqtt",
        ]
        if self.ws_port is not None:
            lines += [f"listener {self.ws_port} {self.host}", "protocol websockets"]
        lines += [
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """Write the config (fresh on every start) and return the mosquitto argv."""
        self.config_path.write_text(self.config_text())
        return [self.binary, "-c", str(self.config_path)]

    def ports(self) -> list[int]:
        """The MQTT port and, if configured, the WebSocket port."""
        return [self.port] if self.ws_port is None else [self.port, self.ws_port]


class ConfiguredMosquitto(BrokerProcess):
    """mosquitto run on a configuration file written by someone else (``micromine broker
    mosquitto-config``), listening on ``port`` and ``extra_ports``."""

    name = "mosquitto"

    def __init__(
        self, config_path: Path, port: int, *, extra_ports: tuple[int, ...] = (), path: str
    ) -> None:
        super().__init__(port, log_dir=config_path.parent / "log")
        self.config_path = config_path
        self.binary = path
        self.extra_ports = extra_ports

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path), "-v"]

    def ports(self) -> list[int]:
        return [self.port, *self.extra_ports]
