"""Progress as the commands show it: one bar drawing, and one line that redraws in place on
a terminal and prints a line per quarter elsewhere (CI logs)."""

from __future__ import annotations

from typing import TextIO


def progress_bar(percent: float, width: int = 10) -> str:
    """`[#####.....]` for 52 %: full only when done, never more than full."""
    filled = max(0, min(width, int(percent * width // 100)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class ProgressLine:
    WIDTH = 30

    def __init__(self, out: TextIO, *, prefix: str = "  ", quarters: bool = True) -> None:
        self._out = out
        self._prefix = prefix
        self._tty = out.isatty()
        # Off a terminal: a line per quarter, or nothing at all.
        self._quarters = quarters
        self._last_quarter = -1
        self._shown = False

    def show(self, done: int, total: int, suffix: str) -> None:
        share = done / total if total else 1.0
        line = f"{self._prefix}{progress_bar(share * 100, self.WIDTH)} {share * 100:5.1f}% {suffix}"
        if self._tty:
            self._out.write("\r" + line + "\x1b[K")  # and clear what a longer line left
            self._out.flush()
            self._shown = True
            return
        quarter = int(share * 4)
        if self._quarters and quarter != self._last_quarter:
            self._last_quarter = quarter
            self._out.write(line + "\n")
            self._out.flush()

    def finish(self) -> None:
        if self._shown:
            self._out.write("\n")
            self._out.flush()
            self._shown = False
