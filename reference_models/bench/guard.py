"""Guarded units of work: an error or an overrun becomes a row, and the run goes on.

The GPU check (:mod:`reference_models.bench.gpu`) runs each of its measurements through
:func:`guarded`, so that one failure (CUDA out of memory, a model that does not build, a
compilation that takes too long) is reported in its row while the rest still runs.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["BudgetSpent", "guarded"]


class BudgetSpent(Exception):
    """A unit of work was interrupted because its time ran out."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`BudgetSpent` in the block after ``seconds`` (main thread only, else no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def interrupt(signum, frame):
        raise BudgetSpent(f"interrupted: its time budget ran out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _interrupted(err: BaseException) -> BudgetSpent | None:
    """The :class:`BudgetSpent` behind an error (torch.compile may wrap it in its own)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, BudgetSpent):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def guarded(label: dict, unit: Callable[[], Any], deadline: float, device: torch.device) -> list[dict]:
    """Run one unit of work before ``deadline``; whatever goes wrong becomes its one row.

    A unit returns a row (a dict) or a list of rows; each gets ``unit_s``, the unit's time.
    A unit that raises gives one row: ``label`` with ``status`` ``"error"`` (and ``error``,
    the exception in one line) or ``"interrupted"`` when the deadline passed while it ran;
    none starts after the deadline (``"skipped"``). Memory is released after each unit, so
    that one running out of CUDA memory leaves the next its full share.

    Args:
        label: what the unit measures (e.g. ``{"model": "lavt_base"}``), the keys of its row.
        unit: the zero-argument measurement.
        deadline: ``time.perf_counter()`` value by which it must finish.
        device: the device it runs on (its cache is emptied afterwards).

    Example:
        >>> guarded({"model": "m"}, lambda: 1 / 0, time.perf_counter() + 60, torch.device("cpu"))[0]["error"]
        'ZeroDivisionError: division by zero'
    """
    left = deadline - time.perf_counter()
    if left <= 0:
        return [{**label, "status": "skipped", "error": "its time budget was spent before it started"}]
    start = time.perf_counter()
    try:
        with _time_limit(left):
            result = unit()
        rows = result if isinstance(result, list) else [result]
    except Exception as err:  # noqa: BLE001 - every failure is the row's result, the rest still runs
        spent = _interrupted(err)
        status = "interrupted" if spent is not None else "error"
        message = str(spent) if spent is not None else f"{type(err).__name__}: {err}".splitlines()[0][:300]
        rows = [{**label, "status": status, "error": message}]
    _release(device)
    for row in rows:
        row["unit_s"] = round(time.perf_counter() - start, 2)
    return rows
