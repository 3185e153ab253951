"""Run amqtt 0.12.1 as micromine's embedded MQTT 3.1.1 broker.

Why an embedded broker at all: a devnet or a classroom demo must work after ``pip install
micromine[broker]`` with no system packages.  Production deployments are expected to use
mosquitto; the integration tests run every scenario against both so the two stay
interchangeable.  amqtt bugs we work around live in :mod:`micromine.broker.amqtt_fixes`.

amqtt 0.12.1 config format (verified against ``amqtt/contexts.py`` and
``amqtt/plugins/manager.py``): a dict validated by ``BrokerConfig.from_dict`` with dacite
in strict mode, so unknown keys are errors and keys use underscores.  Plugins are listed
under ``plugins`` as ``{"dotted.ClassPath": {options}}``; listing them explicitly also stops
amqtt from loading its defaults (packet/event loggers and the ``$SYS`` plugin, which emits a
psutil DeprecationWarning).  With no topic plugin loaded every topic is allowed.  The old
``auth``/``topic-check`` sections are deprecated and would warn.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from amqtt.contexts import ListenerType
from amqtt.errors import BrokerError

from micromine.broker.amqtt_fixes import MicromineBroker, quiet_amqtt_logging
from micromine.broker.config import BrokerConfig
from micromine.common.genesis_file import load_genesis
from micromine.protocol.limits import MAX_ANY_MESSAGE_BYTES
from micromine.protocol.quota import MQTT_OVERHEAD

__all__ = ["amqtt_config", "main_run", "run_broker"]

log = logging.getLogger("micromine.broker")

ANONYMOUS_AUTH_PLUGIN = "amqtt.plugins.authentication.AnonymousAuthPlugin"
ACCESS_PLUGIN = "micromine.broker.access.AccessPlugin"
WS_FRAME_OVERHEAD = 64 * 1024
"""Room above ``max_message_bytes`` for the MQTT fixed header, topic and packet id."""
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_ANY_PACKET = MAX_ANY_MESSAGE_BYTES + MQTT_OVERHEAD


def amqtt_config(cfg: BrokerConfig) -> dict[str, Any]:
    """Translate our :class:`BrokerConfig` into the amqtt 0.12.1 broker config dict.

    The ``"default"`` listener is mandatory in amqtt, and other listeners inherit every
    field they leave at its default value from it: the plain TCP listener is ``default``
    when there is one, else the TLS one (and then the WebSocket listener is TLS too).
    ``max_connections: 0`` = unlimited.  With a genesis the access plugin replaces the
    anonymous one (broker/access.py).
    """
    listeners: dict[str, dict[str, Any]] = {}
    if cfg.port is not None:
        listeners["default"] = _listener(ListenerType.TCP, cfg.host, cfg.port)
    if cfg.tls_port is not None:
        tls = _listener(ListenerType.TCP, cfg.host, cfg.tls_port)
        tls.update(ssl=True, certfile=str(cfg.tls_cert), keyfile=str(cfg.tls_key))
        if cfg.tls_ca is not None:
            tls["cafile"] = str(cfg.tls_ca)
        listeners["default" if cfg.port is None else "tls"] = tls
    if cfg.ws_port is not None:
        listeners["ws"] = _listener(ListenerType.WS, cfg.host, cfg.ws_port)
    plugins: dict[str, dict[str, Any]] = {ANONYMOUS_AUTH_PLUGIN: {"allow_anonymous": True}}
    if cfg.genesis is not None:
        plugins = {
            ACCESS_PLUGIN: {
                "genesis": str(cfg.genesis),
                "allow_anonymous": cfg.allow_anonymous,
                "window_ms": cfg.login_window_ms,
                "publish_rates": list(cfg.publish_rates),
                "enrollment_state": str(cfg.enrollment_state or ""),
                "homeassistant_prefix": cfg.homeassistant_prefix or "",
            }
        }
    return {
        "listeners": listeners,
        # Seconds amqtt adds to a client's keep-alive before its read timeout; the 1.5x
        # grace of the spec is applied by MicromineBroker instead, so no extra slack here.
        "timeout_disconnect_delay": 0,
        "plugins": plugins,
    }


def _listener(kind: ListenerType, host: str, port: int) -> dict[str, Any]:
    return {"type": kind.value, "bind": f"{host}:{port}", "max_connections": 0}


def ws_max_size(cfg: BrokerConfig) -> int | None:
    """WebSocket frame limit: ``max_message_bytes`` plus header room, or None (unlimited)."""
    if cfg.max_message_bytes is None:
        return None
    return cfg.max_message_bytes + WS_FRAME_OVERHEAD


def packet_limit(cfg: BrokerConfig) -> Callable[[str | None], int]:
    """Fix 8's limit on the packets of a logged-in client: the largest publication its
    role may make (with a genesis), else the largest message of any kind."""
    if cfg.genesis is None:
        return lambda _username: MAX_ANY_PACKET
    from micromine.broker.access import packet_limit_for, policy_from_genesis  # noqa: PLC0415

    return partial(packet_limit_for, policy_from_genesis(load_genesis(cfg.genesis)))


def _install_signal_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> bool:
    """Make SIGINT/SIGTERM set ``stop``; False where asyncio cannot (non-main thread, Windows)."""
    try:
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


async def run_broker(
    cfg: BrokerConfig,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
) -> None:
    """Serve MQTT until ``stop`` is set or SIGINT/SIGTERM arrives, then shut down cleanly.

    ``ready`` is set once every listener is bound, so a caller in the same event loop can
    start clients without polling the port.  With ``handle_signals`` the coroutine installs
    SIGINT/SIGTERM handlers for its lifetime (only possible in the main thread).  An
    application that runs the broker next to other services and owns signal handling
    should pass ``handle_signals=False`` and set ``stop`` itself: asyncio keeps one handler
    per signal, and the one we replace cannot be restored afterwards.

    Raises :class:`amqtt.errors.BrokerError` if a listener cannot bind (port in use); any
    listener that did bind is closed first, so a retry on other ports can succeed.
    """
    quiet_amqtt_logging()
    loop = asyncio.get_running_loop()
    stop_event = stop if stop is not None else asyncio.Event()
    signals_installed = handle_signals and _install_signal_handlers(loop, stop_event)
    try:
        broker = MicromineBroker(
            amqtt_config(cfg), ws_max_size=ws_max_size(cfg), packet_limit=packet_limit(cfg)
        )
        try:
            await broker.start()
        except BrokerError:
            await broker.close_listeners()
            raise
        if cfg.genesis is None:
            log.warning(
                "OPEN MODE: no --genesis, so no login and no topic ACL: anyone who reaches "
                "this broker may publish and subscribe anything"
            )
        try:
            log.info("broker listening on %s (websocket: %s)", cfg.url, cfg.ws_url or "off")
            if ready is not None:
                ready.set()
            await stop_event.wait()
        finally:
            # Shielded so a cancelled caller still closes the sockets instead of leaking them.
            await asyncio.shield(broker.shutdown())
    finally:
        if signals_installed:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)


def main_run(cfg: BrokerConfig) -> int:
    """Blocking entry point for ``micromine broker``: 0 after SIGINT/SIGTERM, 1 if it can't bind.

    A signal before the handlers are installed raises KeyboardInterrupt; the callers
    (``micromine broker``, ``python -m micromine.broker``) are ``@until_stopped``, which
    makes that a stop too.

    Prints one line on stderr once listening (so a human sees it came up) and a one-line
    error instead of a traceback when startup fails.  Configures stderr logging at WARNING
    only if the caller (the CLI) has not configured logging already.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    async def _main() -> None:
        ready = asyncio.Event()
        serving = asyncio.create_task(run_broker(cfg, ready=ready))
        ready_wait = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if ready.is_set():
            more = "".join(
                f", {url}" for url in (cfg.tls_url, cfg.ws_url) if url and url != cfg.url
            )
            mode = f"access control for {cfg.genesis}" if cfg.genesis else "OPEN: no access control"
            print(f"micromine broker listening on {cfg.url}{more} ({mode})", file=sys.stderr,
                  flush=True)  # fmt: skip
        await serving

    try:
        asyncio.run(_main())
    except BrokerError as exc:
        print(f"micromine broker: cannot start: {exc.__cause__ or exc}", file=sys.stderr)
        return 1
    return 0
