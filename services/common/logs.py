"""Structured JSON logs with structlog; request ids travel in contextvars.

Never log secrets or message contents at info level: the redaction processor
drops well-known sensitive keys whatever the caller passes.
"""

from __future__ import annotations

import logging
import sys

import structlog

SENSITIVE_KEYS = frozenset(
    {"password", "new_password", "current_password", "token", "access_token", "refresh_token",
     "device_token", "internal_token", "authorization", "message", "text", "user_message",
     "assistant_message", "secret"}
)


def _redact(_logger: object, _name: str, event: dict) -> dict:
    for key in SENSITIVE_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure_logging(level: str = "INFO", *, json: bool = True, service: str = "") -> None:
    """Idempotent; call once from main() (tests may call it again)."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper(), force=True)
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str = "avatario") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
