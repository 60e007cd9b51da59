"""RUN/train.log: every line a run tells its caller, kept with its time in the run folder, so
that the folder explains itself once the terminal is gone.

The file is appended to: a resumed run continues it, its first line saying what started
(mmctr's version, the process, a new run or a resume, the data). Nothing is written before
the run's first line, so a run that fails to start still leaves no folder (training/lock.py);
a run stopped by an error or an interrupt says so on its last line. A file that cannot be
written (a full disk) is warned about once and given up: the log never stops training.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from mmctr.logs import Log, logger

LOG_FILE = "train.log"


class RunLog:
    """A ``Log`` that appends each line, timestamped, to ``root/train.log`` and passes it on
    to ``echo``; ``root`` None: passes lines on only (a rank other than 0)."""

    def __init__(self, root: Path | None, echo: Log, first: str) -> None:
        self.path = None if root is None else root / LOG_FILE
        self.echo = echo
        self.pending = [first]  # written with the run's first line
        self.started = False

    def __call__(self, message: str) -> None:
        self._append(*self.pending, message)
        self.pending = []
        self.started = True
        self.echo(message)

    def note(self, message: str) -> None:
        """A line for the file alone (the caller says it otherwise), once the run has begun."""
        if self.started:
            self._append(message)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, KeyboardInterrupt):
            self.note("stopped: interrupted")
        else:
            self.note(f"stopped: {type(exc).__name__}: {' '.join(str(exc).split())}")

    def _append(self, *lines: str) -> None:
        if self.path is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.writelines(f"{stamp} {line}\n" for line in lines)
        except OSError as exc:
            logger("training").warning(
                f"{self.path}: cannot write the run's log ({exc.strerror or exc}); "
                "training goes on without it"
            )
            self.path = None
