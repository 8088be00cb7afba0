"""Log lines an operator can read: one per outcome that matters, with its fields, in text or JSON, each
carrying the id of the request it belongs to (DESIGN.md, "Errors and logs").

    event(logger, "shopify.connected", shop="acme.myshopify.com", account="9f0c...")
    text: 2026-01-05 10:00:00,123 INFO salesbot request=4b1d...: shopify.connected shop=acme... account=9f0c...
    json: {"time": "...", "level": "INFO", "logger": "salesbot", "event": "shopify.connected",
           "message": "shopify.connected shop=... account=...", "request_id": "4b1d...", "shop": "...", ...}

Fields are names, ids and codes, never a token, code or secret (callers pass no values). What a client
controls is escaped before a formatter sees it (service/printable.py, installed by `configure`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s"
# A request id we take from X-Request-ID: what proxies and tracing tools send, nothing that could
# forge a log line or carry a value.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("salesbot_request_id", default=None)


def accept_request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a plain token, else a new one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(8)


def event(logger: logging.Logger, name: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
    """One outcome: `name key=value ...` in text, the same keys at the top level in JSON."""
    shown = " ".join(f"{key}={_plain(value)}" for key, value in fields.items())
    logger.log(level, "%s%s", name, f" {shown}" if shown else "", extra={"event": name, "fields": fields})


def _plain(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if text and " " not in text else json.dumps(text)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record logged while it runs (any logger, any depth)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        found = getattr(record, "request_id", None) or request_id.get()
        record.request = f" request={found}" if found else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # which worker, under `serve --workers`
            "message": record.getMessage(),
        }
        found = getattr(record, "request_id", None) or request_id.get()
        if found:
            line["request_id"] = found
        name = getattr(record, "event", None)
        if name is not None:
            line["event"] = name
            for key, value in getattr(record, "fields", {}).items():
                line.setdefault(key, value if isinstance(value, int | float | bool) or value is None else str(value))
        if record.exc_info:
            # The exception's class only: its text can hold a URL with a code, or SQL parameters.
            line["exception"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(line, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def dict_config(level: str, log_format: str) -> dict[str, Any]:
    """logging.config.dictConfig for the service and uvicorn alike; uvicorn applies it in every worker."""
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": log_format,
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"text": {"()": TextFormatter}, "json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},  # ours is in app.py, without query strings
            # At DEBUG, SQLAlchemy logs result rows, i.e. ciphertexts: never let --log-level debug reach it.
            "sqlalchemy": {"level": "WARNING"},
            # "Context impl SQLiteImpl." at every start-up check tells an operator nothing.
            "alembic": {"level": "WARNING"},
        },
    }


def configure(level: str, log_format: str) -> dict[str, Any]:
    """Configure this process's logging; returns the dictConfig, for uvicorn's workers."""
    import logging.config

    from service.printable import escape_logs

    escape_logs()  # a path or a header a client sent never starts a forged line, in either format
    config = dict_config(level, log_format)
    logging.config.dictConfig(config)
    return config


# --- httpx's request lines -------------------------------------------------------------------------
# httpx logs every request's full URL at INFO, and Graph URLs carry client_secret, code, access_token
# and appsecret_proof in their query strings: the filter keeps the method, host and path, drops the query.


class _DropQuery(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(arg: object) -> object:
    # httpx passes request.url (an httpx.URL) as an argument; anything with a query loses it.
    query = getattr(arg, "query", None)
    copy_with = getattr(arg, "copy_with", None)
    if query and callable(copy_with):
        return str(copy_with(query=None)) + "?[query hidden]"
    return arg


_FILTER = _DropQuery()


def redact_http_logs() -> None:
    """Idempotent: one filter on the "httpx" logger, whatever logging configuration comes later."""
    http_logger = logging.getLogger("httpx")
    if _FILTER not in http_logger.filters:
        http_logger.addFilter(_FILTER)
