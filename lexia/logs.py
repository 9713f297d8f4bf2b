"""JSON log lines on stderr; the request id is added where one is known."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

current_request_id: ContextVar[str | None] = ContextVar("lexia_request_id", default=None)


# Database drivers put row values in their messages (a unique violation's DETAIL names the key,
# a check violation prints the failing row): their messages never reach a log line.
_WITHHELD_MODULES = ("sqlalchemy", "psycopg", "asyncpg")
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _chain(exc: BaseException) -> Iterator[tuple[BaseException, str | None]]:
    """The exception and its causes/contexts, outermost last (as Python prints them)."""
    seen: set[int] = set()
    links: list[tuple[BaseException, str | None]] = []
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        links.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "The above exception was the direct cause of the following exception:"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "During handling of the above exception, another exception occurred:"
        else:
            current = None
    return reversed(links)


def safe_message(exc: BaseException) -> str:
    """The exception's message, or a placeholder with its SQLSTATE for database driver errors."""
    if type(exc).__module__.startswith(_WITHHELD_MODULES):
        orig = getattr(exc, "orig", exc)
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        return f"(message withheld: it may quote row values; sqlstate {state or 'unknown'})"
    return str(exc)


def safe_traceback(exc_info: ExcInfo) -> str:
    """A traceback like Python's, with database drivers' messages withheld."""
    lines: list[str] = []
    for exc, link in _chain(exc_info[1]):
        if link is not None:
            lines += ["", link, ""]
        lines.append("Traceback (most recent call last):")
        lines += [line.rstrip("\n") for line in traceback.format_tb(exc.__traceback__)]
        lines.append(f"{type(exc).__module__}.{type(exc).__qualname__}: {safe_message(exc)}")
    return "\n".join(lines)


class RedactDatabaseErrors(logging.Filter):
    """Pre-renders a record's traceback safely, whatever formatter the handler uses (Dramatiq's, uvicorn's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set `exc_text` (formatters use it as is) from the safe traceback."""
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = safe_traceback(record.exc_info)
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Add the filter to every handler of a logger (Dramatiq's and uvicorn's own handlers)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactDatabaseErrors) for f in handler.filters):
            handler.addFilter(RedactDatabaseErrors())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = current_request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)

    def formatException(self, ei: object) -> str:
        """The traceback with database drivers' messages withheld."""
        return safe_traceback(ei)  # type: ignore[arg-type]


class Outage:
    """One log line when a dependency starts failing and one when it works again, with a count.

    A PostgreSQL or Redis outage makes every periodic pass, heartbeat and flush fail; logging each
    failure turns a ten-second outage into thousands of lines. Components report each failure
    and each success here instead.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """True between the first failure and the next success."""
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        """Count a failure; log it only if it starts an outage."""
        self._failures += 1
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning("%s failing (%s); retrying quietly until it recovers", self._what, type(exc).__name__)

    def ok(self) -> None:
        """A success: log the end of an outage, with how long it lasted and how many failures it caused."""
        if self._since is not None:
            self._log.warning(
                "%s recovered after %.1f s (%d failures)", self._what, time.monotonic() - self._since, self._failures
            )
            self._since = None
            self._failures = 0


class Throttle:
    """At most one log line per `every` seconds for a recurring event, saying how many it stands for.

    For events without a recovery to report (a request answered 503 while PostgreSQL is down):
    the first occurrence is logged at once, later ones at most once per `every` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def __call__(self, event: str) -> int:
        """Count an occurrence; how many occurrences to report now (0: stay quiet)."""
        now = time.monotonic()
        count = self._pending.get(event, 0) + 1
        last = self._last.get(event)
        if last is not None and now - last < self._every:
            self._pending[event] = count
            return 0
        self._last[event] = now
        self._pending[event] = 0
        return count


def log_loop_exception(loop: Any, context: dict[str, Any]) -> None:
    """The event loop's handler for errors nobody awaited: asyncio's default prints the exception's
    repr, whose message may hold a database driver's text (row values); this logs it safely."""
    exc = context.get("exception")
    what = str(context.get("message") or "Unhandled error in an asyncio task")
    if isinstance(exc, BaseException):
        logging.getLogger("lexia").error("%s: %s\n%s", what, type(exc).__name__,
                                         safe_traceback((type(exc), exc, exc.__traceback__)))
    else:
        logging.getLogger("lexia").error("%s", what)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is now (test runners swap it), and reports its own failures
    in one line: logging's default report prints the exception being handled, row values included."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        """Emit to the current stderr."""
        self.stream = sys.stderr
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """One line naming the failure, never the exception chain of the moment."""
        failure = sys.exc_info()[1]
        with contextlib.suppress(Exception):
            print(f"lexia: a log line could not be written ({type(failure).__name__})", file=sys.__stderr__)


def configure_logging(level: str = "INFO") -> None:
    """Install the JSON handler on the `lexia` logger once."""
    logger = logging.getLogger("lexia")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_lexia", False) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        handler._lexia = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    # httpx logs every request at INFO with its full URL: webhook and audio URLs may carry tokens,
    # and each delivery is already logged by lexia.webhooks without one.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
