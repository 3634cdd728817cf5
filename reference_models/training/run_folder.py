"""The run folder: claiming and locking it, refusing one that holds another run,
``config.json``, the ``metrics.jsonl`` log and the ``bad_samples.jsonl`` list.

Only the main process of a job writes the folder (and holds its lock), except
``bad_samples.jsonl``, to which every process appends the samples it skipped.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["RUN_FILES", "LOCK_FILE", "RunLock", "refuse_existing_run", "create_default_out", "write_config", "MetricsLog", "append_rows"]

#: What a run writes that a fresh run must not overwrite.
RUN_FILES = ("config.json", "last.pt", "best.pt", "metrics.jsonl", "summary.json")


def _holds_a_run_error(out_dir: Path, found: list[str]) -> ValueError:
    if "last.pt" in found or (out_dir / "last.pt").exists():
        advice = "pass --resume to continue it or choose another --out"
    else:
        # a run that stopped before its first checkpoint cannot be resumed
        advice = "it has no last.pt to resume from: remove the folder or choose another --out"
    return ValueError(f"--out: {out_dir} already holds a run ({', '.join(found)}); {advice}")


def refuse_existing_run(out_dir: Path) -> None:
    """A fresh run may start in a missing or empty folder, never over another run's files.

    Args:
        out_dir: the folder asked for with ``--out``.

    Raises:
        ValueError: a file, a folder holding a run, or one a live run has locked.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: expected a folder; got the file {out_dir}")
    if (out_dir / LOCK_FILE).exists():
        RunLock(out_dir).release()  # refuses a folder a live run holds, naming the process
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if found:
        raise _holds_a_run_error(out_dir, found)


def create_default_out(model: str) -> Path:
    """Create ``runs/<model>-<time>``, with ``-2``, ``-3``, ... when that name is taken.

    Creating the folder (``exist_ok=False``) is what claims a name, so two runs started in
    the same second cannot both pick it.

    Args:
        model: the model's registry name.
    """
    from ..outputs import check_name

    # the name may come from a file (--init-from's config.json): never a path out of runs/
    base = Path("runs") / f"{check_name(model, what='model name')}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, n = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")



def write_config(out_dir: Path, config: dict[str, Any], *, resume: bool) -> None:
    """Write ``config.json``; a fresh run refuses a folder another run has claimed meanwhile.

    Args:
        out_dir: the run folder (created if missing).
        config: ``{"train": ..., "model": ...}``.
        resume: a resumed run rewrites its own file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2) + "\n"
    try:
        # "x": a run started into the same folder since the check in refuse_existing_run loses here
        with (out_dir / "config.json").open("w" if resume else "x") as handle:
            handle.write(text)
    except FileExistsError:
        raise _holds_a_run_error(out_dir, ["config.json"]) from None


class MetricsLog:
    """``metrics.jsonl``: one JSON row per logged step and per validation.

    Opening the log of a resumed run drops the rows logged after the checkpoint it resumes
    from: the resumed run logs those steps again.

    Args:
        path: the ``metrics.jsonl`` file.
        up_to_step: keep the existing rows up to this step (0 for a fresh run).
        enabled: write anything at all (only the main process does).
    """

    def __init__(self, path: pathlib.Path, *, up_to_step: int = 0, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.records: list[dict[str, Any]] = []
        if enabled and path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.records = [r for r in rows if r.get("step", 0) <= up_to_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, row: dict[str, Any]) -> None:
        """Add one row (kept in memory for the curves, and appended to the file)."""
        if not self.enabled:
            return
        self.records.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append JSON rows to ``path`` in one write (whole lines, even with several writers).

    Args:
        path: the ``.jsonl`` file.
        rows: the rows (nothing is written for none).
    """
    if rows:
        with path.open("a") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in rows))


#: The lock file of a run folder (held, with ``flock``, for as long as a run trains there).
LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run folder, held for the whole run.

    The operating system releases a ``flock`` when its process ends, however it ends, so a
    lock left by a killed run never blocks the next one. The file holds the holder's process
    id and host, for the message that refuses a second run.

    Args:
        folder: the run folder (it must exist).

    Raises:
        ValueError: another live process holds the folder (the message names it).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     lock = RunLock(Path(run))
        ...     try:
        ...         RunLock(Path(run))
        ...     except ValueError as err:
        ...         print(str(err).split(" (")[0].endswith("is in use by another run"))
        ...     lock.release()
        True
    """

    def __init__(self, folder: pathlib.Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None
        self.created = not self.path.exists()
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs are not protected from each other there
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"--out: {folder} is in use by another run ({holder}); wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self, *, remove: bool = False) -> None:
        """Let another run take the folder (closing the file releases the lock).

        Args:
            remove: also delete the lock file if this lock created it (a run that could
                not claim the folder leaves it as it found it).
        """
        if self._fd is not None:
            if remove and self.created:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
