"""Structured logging: every event has a name and fields, rendered as JSON in production."""

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog


class _CurrentStderr:
    """Writes to whatever sys.stderr is when a line is logged, so that a command can send
    its logs elsewhere for a while (logs_to_file), loggers already in use included."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_structlog(*, json: bool, level: str) -> None:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # stderr: commands such as flywheel_user print their answer alone on stdout.
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=True,
    )


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator:
    """Send the process's logs (structlog's, the standard library's, warnings) to a file
    while the block runs, for a command whose console shows a table of its own. Yields
    the console's stderr, for what should still reach it (a progress bar)."""
    console = sys.stderr
    root = logging.getLogger()
    with open(path, "a", buffering=1) as stream:
        handlers = [(h, h.stream) for h in root.handlers if isinstance(h, logging.StreamHandler)]
        for handler, _ in handlers:
            handler.setStream(stream)
        try:
            with contextlib.redirect_stderr(stream):
                yield console
        finally:
            for handler, original in handlers:
                handler.setStream(original)


class ClientErrorsWithoutTraceback(logging.Filter):
    """Drops the traceback Django attaches to a refused request's log line (PermissionDenied,
    Http404): a 4xx is the client's doing, not a bug to debug; the line itself stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if 400 <= getattr(record, "status_code", 500) < 500:
            record.exc_info = None
            record.exc_text = None
        return True
