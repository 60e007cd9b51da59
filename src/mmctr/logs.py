"""Where mmctr's progress and status lines go: the standard ``logging`` module, under "mmctr".

Each part logs to a child of the "mmctr" logger (``logger("training")`` is
``mmctr.training``; also ``experiments``, ``serve`` and ``convert``). Like any library, mmctr
attaches no handler of its own: a script calling ``mmctr.train`` sees its lines only once it
configures logging (``logging.basicConfig(level=logging.INFO)``). The command line is the
application: ``main`` runs each command inside ``to_terminal``, which prints bare messages,
INFO and DEBUG on stdout and WARNING and above on stderr, at the level of ``--quiet`` or
``--verbose``. A command's result (a table, ``--json``) is printed, not logged.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

ROOT = "mmctr"

Log = Callable[[str], None]


def logger(part: str) -> logging.Logger:
    """The logger of one part of mmctr: ``mmctr.<part>``."""
    return logging.getLogger(f"{ROOT}.{part}")


class TerminalHandler(logging.Handler):
    """Bare messages on the streams that are ``sys.stdout`` / ``sys.stderr`` when a record
    comes, not when the handler was made: a stream replaced since (pytest's capture, a
    redirect) is followed, never written to stale."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()  # in order with the progress bars on stderr, and live in a pipe
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def to_terminal(level: int = logging.INFO) -> Iterator[None]:
    """Print mmctr's log records of ``level`` and above for the duration, and put the "mmctr"
    logger back as it was afterwards (a program calling the CLI's ``main`` many times gets
    neither duplicate lines nor a handler left behind)."""
    root = logging.getLogger(ROOT)
    handler = TerminalHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    before = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # the terminal shows each line once, whatever the root logger has
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0])  # setLevel, not .level: the loggers' level caches are reset
        root.propagate = before[1]
