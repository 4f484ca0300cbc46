"""Progress while a report is written: a bar with an ETA per section, or one line per section.

On a terminal each section gets a ``keras.utils.Progbar`` (the same bar Keras' ``fit`` and
kerasviz's long optimizations show) over the section's units: optimization steps, or method
calls. Without a terminal (a log file, a pipe) each finished section is one line, passed to
``echo``. ``--quiet`` turns both off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """Reports sections as they run.

    Args:
        echo: receives one line per finished section (None: no lines).
        bar: show a ``keras.utils.Progbar`` per section (use it on a terminal only).
        clock: a ``time.perf_counter``-like function.
    """

    def __init__(
        self,
        echo: Callable[[str], None] | None = None,
        *,
        bar: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.echo = echo
        self.bar = bar
        self.clock = clock
        self._bar = None
        self._target = 1.0
        self._done = 0.0
        self._label = ""

    @staticmethod
    def terminal() -> bool:
        """True when stdout is a terminal (the bar redraws itself in place there)."""
        return bool(getattr(sys.stdout, "isatty", lambda: False)())

    def start(self, label: str, units: float = 1.0) -> None:
        """Starts a section: ``label`` is printed above its bar."""
        self._label, self._target, self._done = label, max(float(units), 1.0), 0.0
        self._bar = None
        if self.bar:
            import keras

            print(f"[kerasviz] {label}", file=sys.stdout, flush=True)
            self._bar = keras.utils.Progbar(self._target, width=24, unit_name="unit")

    def expect(self, units: float) -> None:
        """Sets how many units the running section will report in all."""
        self._target = max(float(units), self._done, 1.0)
        if self._bar is not None:
            self._bar.target = self._target

    def advance(self, units: float = 1.0) -> None:
        """Moves the running section's bar by ``units``."""
        self._done = min(self._done + float(units), self._target)
        if self._bar is not None:
            self._bar.update(self._done)

    def finish(self, line: str) -> None:
        """Ends the running section: completes its bar, or echoes ``line``."""
        if self._bar is not None:
            if self._done < self._target:  # a bar that reached its target has ended its line
                self._bar.update(self._target, finalize=True)
            self._bar = None
        elif self.echo is not None:
            self.echo(line)

    def message(self, line: str) -> None:
        """A line outside any section (the budget plan, the page written)."""
        if self.bar:
            print(f"[kerasviz] {line}", file=sys.stdout, flush=True)
        elif self.echo is not None:
            self.echo(line)
