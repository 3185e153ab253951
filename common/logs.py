"""One logging setup for every micromine process: structlog, to stderr, ISO timestamps.

JSON lines when stderr is not a terminal, because then a supervisor (systemd, a test, the
devnet runner) is reading and wants machine-parsable records; a human at a terminal gets
the console renderer.  stdout stays free for command output.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["LEVELS", "configure_logging"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    # Looked up per logger, not once: pytest (and daemonizing code) swap sys.stderr.
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog globally; ``json=None`` picks JSON unless stderr is a TTY.

    Calling it again replaces the previous configuration (tests and sub-commands do).
    Loggers are not cached, so module-level ``structlog.get_logger()`` objects follow it.
    """
    name = level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    if json is None:
        json = not sys.stderr.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[name]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
