"""Stopping on SIGINT and SIGTERM (Ctrl-C, a scheduler's preemption) without losing the run.

The first signal only asks the run to stop: it finishes the optimizer step it is in, writes
``last.pt`` and exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). A second
Ctrl-C interrupts at once. DataLoader workers ignore both signals (a terminal sends Ctrl-C
to every process of the foreground group), so the main process still has its data while it
finishes the step.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

__all__ = ["StopRequest", "ignore_stop_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Catches SIGINT and SIGTERM while active (a context manager) and remembers the first.

    Outside the main thread signal handlers cannot be installed; there it does nothing.

    Example:
        >>> import os
        >>> with StopRequest() as stop:
        ...     os.kill(os.getpid(), signal.SIGTERM)
        ...     print(stop.signal_name, stop.exit_code)
        SIGTERM 143
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """The conventional exit status after this signal (128 + its number)."""
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        if self.signum is None:
            self.signum = signum
            print(
                f"\n{signal.Signals(signum).name}: stopping after this step and saving last.pt (Ctrl-C again to quit now)",
                file=sys.stderr,
            )

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: leave SIGINT and SIGTERM to the main process.

    Args:
        worker_id: the worker's number (unused).
    """
    for signum in _SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
