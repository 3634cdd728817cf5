"""What the command-line tools write: checked before any work starts, never over an input.

Every tool that writes a file (``evaluate --json``, ``bench --json``, ``predict --out``,
``convert lavt --out``) checks its output here first, before it loads or computes anything,
so a bad path costs nothing:

- an existing file is replaced only with ``--overwrite``; a folder given for a file, or a
  non-empty folder given for a new one, is refused;
- nothing is written onto a file the tool reads (compared as files, so a link or a second
  spelling of the same path counts), whatever ``--overwrite`` says;
- a file written into a training run folder is written under that folder's lock, so it
  cannot race a run writing there, and is refused while a run holds it.

Files are written to a temporary sibling and renamed over the target, so a failed write
(a full disk) leaves the earlier file whole. Names read from files (a model's ``"name"``)
become path components only through :func:`check_name`.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["check_name", "check_output_file", "check_output_folder", "write_output"]

# A name that is one plain path component: no separator, no "..", not hidden, not absolute.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def check_name(name: object, *, what: str) -> str:
    """Refuse a name (read from a file) that could not safely become one path component.

    Args:
        name: the value read.
        what: where it came from, for the message (``"runs/a/config.json's name"``).

    Returns:
        ``name``, unchanged.

    Raises:
        ValueError: not a string of letters, digits, ``_ . + -`` starting with a letter or
            digit, at most 128 long, without ``..``.

    Example:
        >>> check_name("lavt_sadlr_tiny", what="name")
        'lavt_sadlr_tiny'
        >>> check_name("../x_tiny", what="name")
        Traceback (most recent call last):
        ...
        ValueError: name: expected a plain name (letters, digits, _ . + -; no path); got '../x_tiny'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{what}: expected a plain name (letters, digits, _ . + -; no path); got {name!r}")
    return name


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file (both existing: the same inode; else the same spelling)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _refuse_inputs(path: Path, reads: Iterable[str | os.PathLike], argument: str) -> None:
    for source in reads:
        source = Path(source)
        inside = [source / p.name for p in source.iterdir()] if source.is_dir() else [source]
        for read in inside:
            if _same(path, read):
                raise ValueError(f"{argument}: {path} is {read}, which this command reads; choose another {argument}")


def _run_file_names() -> tuple[str, ...]:
    from .training.run_folder import LOCK_FILE, RUN_FILES

    return (*RUN_FILES, LOCK_FILE)


def _run_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in _run_file_names())


def _locked(folder: Path, argument: str):
    """Take ``folder``'s run lock (refused while a run holds it); the caller releases it."""
    from .training.run_folder import RunLock

    try:
        return RunLock(folder)
    except ValueError as err:
        # RunLock speaks of train's --out; this tool's flag is another
        raise ValueError(str(err).replace("--out:", f"{argument}:", 1)) from None


def check_output_file(path: str | os.PathLike, *, argument: str, overwrite: bool = False, reads: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output file that would replace an input or, without ``overwrite``, any file.

    Called before the work starts. Creates the missing parent folders (so a path under
    ``/proc`` or a read-only folder fails now) and, when the parent is a run folder, checks
    that no run holds its lock. Devices and pipes (``/dev/stdout``) are written as they are.

    Args:
        path: the file to write.
        argument: the flag that named it, for messages (``"--json"``).
        overwrite: an existing file may be replaced.
        reads: files and folders the command reads (a folder stands for the files in it).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a folder, an input, or an existing file without ``overwrite``.
        OSError: the parent folder cannot be created or written to.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{argument}: {path} is a folder; expected a file to write")
    _refuse_inputs(path, reads, argument)
    if path.is_file() and not overwrite:
        raise ValueError(f"{argument}: {path} already exists; pass --overwrite to replace it")
    if path.exists() and not path.is_file():
        return path  # a device or a pipe: written in place, nothing is replaced
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise PermissionError(errno.EACCES, "cannot write into this folder", str(parent))
    if _run_folder(parent):
        if path.name in _run_file_names():
            raise ValueError(f"{argument}: {path} is a file of the training run in {parent}; choose another {argument}")
        _locked(parent, argument).release(remove=True)
    return path


def check_output_folder(path: str | os.PathLike, *, argument: str, overwrite: bool = False, reads: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output folder that holds anything, unless ``overwrite``; never a run folder.

    Args:
        path: the folder to write (created later by the tool).
        argument: the flag that named it (``"--out"``).
        overwrite: a non-empty folder may be written into (its files of the same names are
            replaced; the others stay).
        reads: files the command reads; none of them may be inside ``path``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a file, a training run's folder, an input inside it, or a non-empty
            folder without ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{argument}: {path} is a file; expected a folder to write")
    if not path.is_dir():
        return path
    for read in reads:
        read = Path(read)
        if read.exists() and _same(read.parent, path):
            raise ValueError(f"{argument}: {path} holds {read}, which this command reads; choose another {argument}")
    run_files = [name for name in ("last.pt", "best.pt", "metrics.jsonl") if (path / name).exists()]
    if run_files:
        # a run folder's config.json says what its checkpoints are: replacing it mixes two models
        raise ValueError(f"{argument}: {path} is a training run's folder ({', '.join(run_files)}); choose another {argument}")
    from .training.run_folder import LOCK_FILE

    if (path / LOCK_FILE).exists():
        _locked(path, argument).release()  # refuses a folder a live run or tool holds
    entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(f"{argument}: {path} is not empty ({shown}); pass --overwrite to write into it, or choose another {argument}")
    return path


def write_output(path: str | os.PathLike, data: str | bytes, *, argument: str) -> Path:
    """Write ``data`` to ``path`` (checked with :func:`check_output_file`) in one step.

    A regular file is written to a temporary sibling, then renamed over ``path``, under the
    run folder's lock when its folder holds a run; a device or pipe is written directly.
    A failed write raises an :class:`OSError` naming ``path``.

    Args:
        path: the file.
        data: text (UTF-8) or bytes.
        argument: the flag that named it.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.exists() and not path.is_file():
        _write_bytes(path, raw)
        return path
    lock = _locked(path.parent, argument) if _run_folder(path.parent) else None
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        _write_bytes(partial, raw, shown=path)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        if lock is not None:
            lock.release(remove=True)
    return path


def _write_bytes(path: Path, raw: bytes, *, shown: Path | None = None) -> None:
    try:
        with path.open("wb") as handle:
            handle.write(raw)
    except OSError as err:
        # a write error (ENOSPC from /dev/full or a full disk) carries no file name of its own
        raise OSError(err.errno, err.strerror or str(err), str(shown or path)) from None
