"""Logging set-up for the ``trinomite`` command: Dynomite's levels, file and signals.

Theory of operation
-------------------
Library code logs through ``logging.getLogger("trinomite.<module>")`` and
knows nothing of this module.  The command line (``cli``) opens one
``LogControl``, which attaches a single handler to the ``trinomite`` logger:

* ``-v N`` is a Dynomite verbosity (0 = EMERG .. 11 = PVERB), translated to a
  Python level through ``LEVELS``.  NOTICE (Dynomite's default, 5) is a custom
  level between INFO and WARNING; Dynomite's VERB..PVERB (8..11) are custom
  levels below DEBUG.
* ``-o FILE`` writes to a file instead of stderr; ``reopen()`` (on SIGHUP)
  reopens it so log rotation works, as in Dynomite.
* ``louder()`` / ``quieter()`` (on SIGTTIN / SIGTTOU) move the verbosity up or
  down by one step.

Closing the ``LogControl`` detaches the handler and restores the logger's
previous level, so tests can run the CLI in-process repeatedly.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import IO

__all__ = [
    "DEFAULT_VERBOSITY",
    "LEVELS",
    "NOTICE",
    "PVERB",
    "VERB",
    "VVERB",
    "VVVERB",
    "LogControl",
    "python_level",
]

NOTICE = 25
VERB = 9
VVERB = 8
VVVERB = 7
PVERB = 6

#: Dynomite's log levels (``dyn_log.h``), indexed by ``-v`` value: (name, Python level).
LEVELS: tuple[tuple[str, int], ...] = (
    ("EMERG", logging.CRITICAL),
    ("ALERT", logging.CRITICAL),
    ("CRIT", logging.CRITICAL),
    ("ERR", logging.ERROR),
    ("WARN", logging.WARNING),
    ("NOTICE", NOTICE),
    ("INFO", logging.INFO),
    ("DEBUG", logging.DEBUG),
    ("VERB", VERB),
    ("VVERB", VVERB),
    ("VVVERB", VVVERB),
    ("PVERB", PVERB),
)
DEFAULT_VERBOSITY = 5

for _name, _level in LEVELS[5:6] + LEVELS[8:]:
    logging.addLevelName(_level, _name)

_FORMAT = "[%(asctime)s.%(msecs)03d] %(levelname)s %(name)s: %(message)s"
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def python_level(verbosity: int) -> int:
    """The Python logging level of Dynomite verbosity ``verbosity`` (clamped to 0..11)."""
    return LEVELS[min(max(verbosity, 0), len(LEVELS) - 1)][1]


class LogControl:
    """The ``trinomite`` logger's output, level and file, for one run of the command.

    Resource handling:
        Use as a context manager: entering attaches the handler, leaving
        detaches it, closes the log file and restores the previous level.
        Constructing it opens the ``output`` file (``OSError`` if it cannot).
    """

    def __init__(self, verbosity: int = DEFAULT_VERBOSITY, output: str | None = None) -> None:
        self.verbosity = verbosity
        self.output = output
        self._logger = logging.getLogger("trinomite")
        self._saved_level = self._logger.level
        self._handler = logging.StreamHandler(self._open())
        self._handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))

    def __enter__(self) -> LogControl:
        self._logger.addHandler(self._handler)
        self._apply()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._saved_level)
        if self.output is not None:
            self._handler.stream.close()

    def reopen(self) -> None:
        """Reopen the ``-o`` log file (after rotation); nothing to do for stderr."""
        if self.output is None:
            return
        old = self._handler.setStream(self._open())
        if old is not None:
            old.close()
        self._logger.log(NOTICE, "reopened log file %s", self.output)

    def louder(self) -> None:
        """One verbosity step up (SIGTTIN), at most PVERB."""
        self._step(+1)

    def quieter(self) -> None:
        """One verbosity step down (SIGTTOU), at least EMERG."""
        self._step(-1)

    def _step(self, delta: int) -> None:
        self.verbosity = min(max(self.verbosity + delta, 0), len(LEVELS) - 1)
        self._apply()
        # Logged at WARN so that it is visible at the default verbosity.
        self._logger.warning("log level set to %d (%s)", self.verbosity, LEVELS[self.verbosity][0])

    def _apply(self) -> None:
        self._logger.setLevel(python_level(self.verbosity))

    def _open(self) -> IO[str]:
        if self.output is None:
            return sys.stderr
        return open(self.output, "a", encoding="utf-8")
