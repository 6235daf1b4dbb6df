"""Why a test cluster did not start: one clear error carrying the nodes' own log lines.

Theory of operation
-------------------
While ``open_cluster`` starts datastores and nodes and waits for the links,
``capture_logs()`` keeps the last ``LOG_LINES`` records of the
``trinomite`` loggers in a bounded buffer (lowering that logger to INFO
for the duration if it was quieter, so the buffer holds the nodes'
start-up story).  If start-up fails, ``ClusterStartError`` replaces the
nested exception groups a nursery produces with one message: what failed,
the innermost error, and those log lines; the original stays chained as
``__cause__``.  Cancellation and KeyboardInterrupt are never converted.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import trio

__all__ = ["LOG_LINES", "ClusterStartError", "StartupLog", "capture_logs", "innermost"]

#: How many of the latest log lines a start-up error shows.
LOG_LINES = 40
_LOGGER = "trinomite"
_lock = threading.Lock()
_capturing = 0
_saved_level = logging.NOTSET


class ClusterStartError(RuntimeError):
    """A test cluster (or one node of it) failed to start; the message has its log."""


class StartupLog(logging.Handler):
    """A bounded tail of formatted log lines."""

    def __init__(self, limit: int = LOG_LINES) -> None:
        super().__init__(logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=limit)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a bad log call must not break start-up
            self.handleError(record)

    def error(self, what: str, exc: BaseException) -> ClusterStartError:
        """The error to raise for ``exc``, caused by its innermost error (no group noise)."""
        cause = innermost(exc)
        text = f"{what}: {type(cause).__name__}: {cause}"
        if self.lines:
            text += f"\n--- trinomite log, last {len(self.lines)} lines ---\n"
            text += "\n".join(self.lines)
        else:
            text += "\n(the nodes logged nothing)"
        error = ClusterStartError(text)
        error.__cause__ = cause  # also when it is not raised ``from`` (kept, then raised)
        return error


def innermost(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, skipping Cancelled."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        real = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        exc = (real or list(exc.exceptions))[0]
    return exc


@contextmanager
def capture_logs() -> Iterator[StartupLog]:
    """Collect the ``trinomite`` loggers' lines for the block (see the module doc)."""
    global _capturing, _saved_level
    logger = logging.getLogger(_LOGGER)
    handler = StartupLog()
    with _lock:
        if _capturing == 0:
            _saved_level = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
        _capturing += 1
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        with _lock:
            _capturing -= 1
            if _capturing == 0:
                logger.setLevel(_saved_level)
