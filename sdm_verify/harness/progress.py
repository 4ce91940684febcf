"""Progress of a sweep with an estimated time left: a tqdm bar on a terminal, a few plain lines elsewhere.

The estimate is the rate so far, ETA = elapsed / done * (total - done): cells of one sweep differ in cost (N from 16
to 16384), so it is rough early on and settles as the sweep goes. Off a terminal (a log, CI, a pipe) one line is
written to stderr each time another tenth of the work is done, and at least every LINE_EVERY_S seconds, but none
in the first QUIET_S seconds: a short sweep stays silent, a long one says how far it is and how long it has left.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

__all__ = ["Progress", "format_seconds"]

QUIET_S = 5.0
LINE_EVERY_S = 60.0


def format_seconds(s: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class Progress:
    """`with Progress(total, desc) as p: ... p.update()`; enabled=False shows nothing. `stream` (default stderr)
    decides the form: a terminal gets a tqdm bar (with its own rate and ETA), anything else plain lines."""

    def __init__(self, total: int, desc: str = "cells", *, enabled: bool = True, stream=None, clock=time.monotonic):
        self.total, self.desc, self.done = int(total), desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.start = self.last_line = clock()
        self.lines = 0
        self._tenth = 0
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = bool(enabled) and self.total > 0
        self._bar = tqdm(total=self.total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True) \
            if self.enabled and tty else None

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before the first cell)."""
        if self.done <= 0:
            return None
        return (self.clock() - self.start) / self.done * max(self.total - self.done, 0)

    def line(self) -> str:
        elapsed = self.clock() - self.start
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%), {format_seconds(elapsed)} elapsed"
        if self.done < self.total and self.eta() is not None:
            text += f", about {format_seconds(self.eta())} left"
        return text

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        tenth = 10 * self.done // self.total
        due = tenth > self._tenth or now - self.last_line >= LINE_EVERY_S
        self._tenth = max(self._tenth, tenth)
        if due and now - self.start >= QUIET_S and self.done < self.total:
            self._write(self.line())

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self.lines += 1
        self.last_line = self.clock()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.lines:  # a sweep that said how far it was also says that it ended
            self._write(f"{self.desc}: {self.done}/{self.total} in {format_seconds(self.clock() - self.start)}")
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
