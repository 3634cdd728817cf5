"""Reading weight files safely and loading them with errors that say what went wrong.

Only local files are read: no hub, no network. Pickle-based files are opened with
``torch.load(weights_only=True)`` so a checkpoint cannot run code, and only after
:func:`archive_problem` has checked the sizes their zip records declare: torch inflates a
compressed record in full, so a 500 kB file could otherwise ask for gigabytes. What a file
holds may not expand beyond :func:`expansion_budget` of its size (tensor views that repeat
one storage, shared lists), so that reading and checking it stays linear in its size.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "WeightsError",
    "EXPANSION",
    "archive_problem",
    "expansion_budget",
    "views_problem",
    "values_problem",
    "read_state_dict",
    "load_weights",
    "atomic_save",
    "remove_stale_temporaries",
]

_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state")


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, or does not fit the model."""


#: How many times its own size a file may expand to when read (tied weights count twice).
EXPANSION = 4
_EXPANSION_SLACK = 16 << 20  # small files: headers, the RNG state and configs as text


def expansion_budget(size: int) -> int:
    """The most bytes a file of ``size`` bytes may expand to when read: ``4 * size + 16 MiB``.

    Args:
        size: the file's size in bytes.

    Example:
        >>> expansion_budget(0) == 16 * 2**20, expansion_budget(10**9) > 4 * 10**9
        (True, True)
    """
    return EXPANSION * size + _EXPANSION_SLACK


def archive_problem(path: str | os.PathLike) -> str | None:
    """Why a torch zip file must not be loaded, judged from its directory only; ``None`` if it may.

    torch allocates each record at the size the zip directory declares and inflates a
    compressed one in full. ``torch.save`` stores records uncompressed, so together they
    never exceed the file; anything past :func:`expansion_budget` of its size is refused.
    A file that is not a zip (torch's legacy format, garbage) is left to ``torch.load``.

    Args:
        path: the file.

    Returns:
        A message (without the file name), or ``None``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with zipfile.ZipFile(f"{tmp}/w.pt", "w", zipfile.ZIP_DEFLATED) as archive:
        ...         archive.writestr("w/data/0", bytes(64 << 20))  # 64 MiB of zeros in 65 kB
        ...     print(archive_problem(f"{tmp}/w.pt").split(" from ")[0])
        refusing a zip whose records expand to 67,108,864 bytes (w/data/0 alone 67,108,864)
    """
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None  # not a zip, or a damaged one: torch.load says so in its own words
    total = sum(record.file_size for record in records)
    if total <= expansion_budget(size):
        return None
    largest = max(records, key=lambda record: record.file_size)
    return (
        f"refusing a zip whose records expand to {total:,} bytes ({largest.filename} alone {largest.file_size:,}) "
        f"from a file of {size:,} bytes; more than {EXPANSION} x its size + 16 MiB (torch.save writes records uncompressed)"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``.pt``/``.pth``/``.bin``/``.ckpt``).

    Checkpoints that wrap the weights (``{"model": ...}``, ``{"state_dict": ...}``) are
    unwrapped.

    Args:
        path: a local file.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        WeightsError: the file is truncated, corrupt, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    problem = None if path.suffix == ".safetensors" else archive_problem(path)
    if problem:
        raise WeightsError(f"{path}: {problem}")
    try:
        if path.suffix == ".safetensors":
            # safetensors checks its header against the file's size before allocating
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for bad bytes
        raise WeightsError(f"{path}: cannot read weights ({type(err).__name__}: {err}); the file may be truncated or corrupt") from err
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no tensors (expected a state dict)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    problem = views_problem(tensors, path.stat().st_size)
    if problem:
        raise WeightsError(f"{path}: {problem}")
    return tensors


def views_problem(tensors: Mapping[str, torch.Tensor], size: int) -> str | None:
    """Why ``tensors`` read from a file of ``size`` bytes must not be used; ``None`` if they may.

    A saved tensor may view its storage with stride 0: a 2 kB file can hold a 4 GiB tensor
    that any copy, comparison or conversion makes real. Their dense bytes together may not
    exceed :func:`expansion_budget` of the file's size.

    Args:
        tensors: the tensors read, by key.
        size: the size in bytes of the file they came from.

    Returns:
        A message naming the largest tensor (without the file name), or ``None``.

    Example:
        >>> views_problem({"w": torch.zeros(1).expand(2**30)}, 2000)
        'refusing tensors of 4,294,967,296 bytes in all (w alone 4,294,967,296) from a file of 2,000 bytes; more than 4 x its size + 16 MiB (views that repeat their storage?)'
    """
    sizes = {key: value.numel() * value.element_size() for key, value in tensors.items()}
    total = sum(sizes.values())
    if total <= expansion_budget(size):
        return None
    largest = max(sizes, key=sizes.__getitem__)
    return (
        f"refusing tensors of {total:,} bytes in all ({largest} alone {sizes[largest]:,}) from a file of {size:,} bytes; "
        f"more than {EXPANSION} x its size + 16 MiB (views that repeat their storage?)"
    )


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _kind(tensor: torch.Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    if tensor.is_complex():
        return "complex"
    return "floating" if tensor.is_floating_point() else "integer"


def values_problem(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> str | None:
    """Why tensors that fit a module by name and shape must still not be copied into it; ``None`` if they may.

    ``load_state_dict`` casts what it copies, so an integer, bool or complex tensor where the
    module holds a floating one (or the reverse) would load silently as something else. A
    floating tensor holding NaN or infinity would make every forward non-finite (training
    would skip every step). Both are refused, whatever ``strict`` says.

    Args:
        state: the tensors about to be copied, by the module's keys.
        own: the module's ``state_dict()``.

    Returns:
        A message naming the first offending key (without the file name), or ``None``.

    Example:
        >>> own = {"w": torch.zeros(2), "index": torch.zeros(2, dtype=torch.long)}
        >>> values_problem({"w": torch.ones(2, dtype=torch.int32)}, own)
        "refusing weights whose kind differs from the model's: w (int32 where the model holds float32); copying would cast them silently"
        >>> values_problem({"w": torch.tensor([1.0, float("nan")]), "index": torch.ones(2, dtype=torch.long)}, own)
        'refusing weights holding NaN or infinite values: w; the model would compute non-finite outputs'
        >>> values_problem({"w": torch.ones(2, dtype=torch.float16)}, own) is None  # same kind: cast as before
        True
    """
    wrong_kind = [
        f"{key} ({str(value.dtype).removeprefix('torch.')} where the model holds {str(own[key].dtype).removeprefix('torch.')})"
        for key, value in state.items()
        if key in own and _kind(value) != _kind(own[key])
    ]
    if wrong_kind:
        return f"refusing weights whose kind differs from the model's: {_preview(wrong_kind)}; copying would cast them silently"
    non_finite = [key for key, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if non_finite:
        return f"refusing weights holding NaN or infinite values: {_preview(non_finite)}; the model would compute non-finite outputs"
    return None


def load_weights(
    module: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    prefix: str = "",
    transform: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None = None,
    ignore: Callable[[str], bool] = lambda key: False,
) -> None:
    """Load weights into ``module`` and fail loudly on any mismatch.

    Args:
        module: the module to fill.
        source: a weights file (see :func:`read_state_dict`) or a state dict.
        strict: when True (the default), any missing key, unexpected key or shape
            mismatch raises :class:`WeightsError` naming the file and the first keys;
            ``strict=False`` loads what fits and leaves the rest as initialised.
        prefix: keep only keys starting with this prefix, with it removed (e.g.
            ``"visual."`` to load a whole CLIP checkpoint into the vision tower).
        transform: adapts a foreign state dict to the module (e.g. timm's
            ``checkpoint_filter_fn`` resizing position tables), applied after ``prefix``.
        ignore: keys of the module that may legitimately be absent from the file
            (buffers rebuilt at construction, heads replaced by the model).

    Raises:
        WeightsError: besides the mismatches above, always (whatever ``strict``) for a
            tensor whose kind (floating, integer, bool, complex) differs from the module's
            or a floating one holding NaN or infinity: see :func:`values_problem`.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> load_weights(layer, {"weight": torch.ones(1, 2), "bias": torch.zeros(1)})
        >>> layer.weight.tolist()
        [[1.0, 1.0]]
        >>> load_weights(layer, {"weight": torch.ones(1, 2, dtype=torch.long), "bias": torch.zeros(1)})
        Traceback (most recent call last):
        ...
        reference_models.weights.WeightsError: state dict: refusing weights whose kind differs from the model's: weight (int64 where the model holds float32); copying would cast them silently
    """
    name = str(source) if not isinstance(source, Mapping) else "state dict"
    state = dict(read_state_dict(source) if not isinstance(source, Mapping) else source)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if transform is not None:
        state = transform(state, module)
    own = module.state_dict()
    missing = [k for k in own if k not in state and not ignore(k)]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if strict and (missing or unexpected or mismatched):
        parts = []
        if mismatched:
            parts.append(f"shape mismatch: {_preview(mismatched)}")
        if missing:
            parts.append(f"missing from file: {_preview(missing)}")
        if unexpected:
            parts.append(f"not in model: {_preview(unexpected)}")
        raise WeightsError(f"{name}: weights do not fit {type(module).__name__}; " + "; ".join(parts) + " (pass strict=False to load what fits)")
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    problem = values_problem(fitting, own)
    if problem:
        raise WeightsError(f"{name}: {problem}")
    module.load_state_dict(fitting, strict=False)


def atomic_save(obj: object, path: str | os.PathLike, *, save: Callable[[object, str], None] | None = None) -> None:
    """Write a file atomically: to a temporary file in the same folder, fsync, then rename.

    A crash mid-write leaves the previous file intact (never a truncated one). A full disk
    raises :class:`OSError` with ``errno.ENOSPC`` naming ``path`` (torch's zip writer
    reports it as an opaque ``RuntimeError``); the temporary file is removed either way.
    Temporary files of a write that was killed are named ``.<name>.*.tmp``:
    :func:`remove_stale_temporaries` clears them.

    Args:
        obj: what to save.
        path: destination.
        save: ``save(obj, tmp_path)``; ``torch.save`` by default.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        (save or (lambda o, p: torch.save(o, p)))(obj, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the permissions of a normal file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and _disk_full(err, path.parent):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from err
        raise


# Below this much free space, a failed write is taken to have failed for want of space.
_FULL_BELOW = 1 << 20


def _disk_full(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_BELOW
    except OSError:
        return False


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_save` left when its process was killed.

    Only call it where no other process is writing (a run folder whose lock is held).

    Args:
        folder: the folder to clean.

    Returns:
        The files removed.
    """
    removed = []
    for stale in Path(folder).glob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed
