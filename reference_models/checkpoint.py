"""Training checkpoints: written atomically, read with ``weights_only=True``, clear on damage.

A checkpoint is one ``.pt`` file holding the model weights, the optimizer, scheduler and
gradient-scaler states, the random-number states, the step counters, and both configs
(model and training) as plain dicts, so that ``--resume`` continues exactly and
``evaluate``/``predict`` can rebuild the model from the file alone.

Every checkpoint also carries ``"digest"``: the SHA-256 of its contents (each tensor's
dtype, shape and bytes, and every plain value, walked in a fixed order). torch's zip
reader does not check its members' CRCs, so a flipped byte in a tensor otherwise loads
silently; :func:`load_checkpoint` recomputes the digest and refuses a file that differs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .data.errors import one_line
from .weights import WeightsError, archive_problem, atomic_save, expansion_budget, load_weights

__all__ = [
    "CheckpointError",
    "RUN_CHECKPOINTS",
    "content_digest",
    "first_non_finite",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "read_json_object",
    "load_model",
    "load_model_and_train_config",
]

RUN_CHECKPOINTS = ("best.pt", "last.pt")
"""The checkpoints a training run folder stands for, in the order they are preferred."""

_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a checkpoint."""


_DIGEST = "digest"


def _feed(hasher: Any, value: Any) -> None:
    """Add ``value`` to ``hasher`` unambiguously (a type tag and a length before contents).

    The walk keeps its own stack, so that nesting depth is no limit; a shared part is fed
    once per place it is used (:func:`_expanded_size` bounds that before a file is checked).
    """
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            hasher.update(f"T{flat.dtype}{tuple(value.shape)}|".encode())
            hasher.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            hasher.update(f"D{len(value)}|".encode())
            for key in reversed(sorted(value, key=repr)):  # popped in ascending order
                stack += (value[key], key)
        elif isinstance(value, (list, tuple)):
            hasher.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}|".encode())
            stack.extend(reversed(value))
        elif value is None or isinstance(value, (bool, int, float, str, bytes)):
            text = repr(value)
            hasher.update(f"{type(value).__name__}{len(text)}|{text}".encode())
        else:
            raise TypeError(f"checkpoint: cannot digest a {type(value).__name__}; expected tensors and plain values")


class _Cycle(ValueError):
    """A container of a checkpoint holds itself."""


def _leaf_size(value: Any) -> int:
    """About how many bytes :func:`_feed` gives the hasher for a tensor or scalar."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() + 32
    if isinstance(value, (str, bytes)):
        return len(value) + 16
    if isinstance(value, int):
        return value.bit_length() // 3 + 16  # decimal digits
    return 32


def _expanded_size(value: Any) -> int:
    """The bytes :func:`_feed` would hash for ``value``, found in time linear in its objects.

    A container is sized once (remembered by ``id``) and its size added wherever it is used:
    a list holding the same list twice, nested 60 deep, comes to about 2**60 here after 60
    steps, where the digest walk would never finish.

    Raises:
        _Cycle: a container that holds itself (the walk would go round for ever).

    Example:
        >>> shared = [1]
        >>> for _ in range(60):
        ...     shared = [shared, shared]
        >>> _expanded_size({"extra": shared}) > 2**60
        True
    """
    if not isinstance(value, (dict, list, tuple)):
        return _leaf_size(value)
    done: dict[int, int] = {}
    frames = [[value, _children(value), 32]]
    open_ids = {id(value)}
    while frames:
        frame = frames[-1]
        for child in frame[1]:
            if not isinstance(child, (dict, list, tuple)):
                frame[2] += _leaf_size(child)
            elif id(child) in done:
                frame[2] += done[id(child)]
            elif id(child) in open_ids:
                raise _Cycle(f"a {type(child).__name__} that contains itself")
            else:
                open_ids.add(id(child))
                frames.append([child, _children(child), 32])
                break
        else:
            frames.pop()
            open_ids.discard(id(frame[0]))
            done[id(frame[0])] = frame[2]
            if frames:
                frames[-1][2] += frame[2]
    return done[id(value)]


def _children(container: Any) -> Any:
    if isinstance(container, dict):
        return itertools.chain(container.keys(), container.values())
    return iter(container)


def content_digest(state: dict[str, Any]) -> str:
    """The SHA-256 of a checkpoint's contents (its ``"digest"`` entry left out).

    Args:
        state: tensors and plain Python values, as :func:`save_checkpoint` takes.

    Returns:
        64 hexadecimal digits.

    Example:
        >>> a = content_digest({"w": torch.ones(2), "step": 3})
        >>> a == content_digest({"step": 3, "w": torch.ones(2)}), a == content_digest({"w": torch.ones(2), "step": 4})
        (True, False)
    """
    hasher = hashlib.sha256()
    _feed(hasher, {k: v for k, v in state.items() if k != _DIGEST})
    return hasher.hexdigest()


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The first key whose floating-point tensor holds a NaN or an infinity, or ``None``.

    Args:
        tensors: a state dict (other values are ignored).

    Example:
        >>> first_non_finite({"a": torch.ones(2), "b": torch.tensor([1.0, math.nan])})
        'b'
    """
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` and its digest to ``path`` atomically (a crash mid-write keeps the previous file).

    Args:
        state: tensors and plain Python values (what ``torch.load(weights_only=True)`` reads).
        path: the ``.pt`` file to write; its folder must exist.

    Returns:
        ``path``.
    """
    path = Path(path)
    atomic_save({**state, _DIGEST: content_digest(state)}, path)
    return path


def _unreadable(path: Path) -> str:
    """Why ``torch.load`` failed on ``path``, in words a user can act on."""
    with path.open("rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if head and head != _ZIP_MAGIC:
        return f"{path}: not a checkpoint (cannot read it as a torch zip file)"
    if head and zipfile.is_zipfile(path):
        return f"{path}: not a checkpoint (a zip file torch cannot read as tensors and plain values)"
    # an empty file or a zip without its central directory: a write that never finished
    return f"{path}: cannot read checkpoint (the file is truncated or corrupt)"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safe: ``weights_only=True``).

    Args:
        path: a run's ``last.pt`` or ``best.pt``.

    Returns:
        The saved dict (``model``, ``model_config``, ``train_config``, optimizer states, ...),
        on the CPU.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: truncated or corrupt file (its digest differs from its contents),
            or a file that is not a checkpoint; one whose records or values would expand
            beyond :func:`~reference_models.weights.expansion_budget` of its size (checked
            before they are inflated or hashed); a one-line message that names the file
            (torch's own error is chained).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    problem = archive_problem(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise  # the system's message already names the file
    except Exception as err:  # truncated zip (torch may raise OSError), foreign format, pickled objects
        # torch's own messages run to several lines and advise weights_only=False, which would
        # run arbitrary code from the file: keep them for debugging, show a short line instead
        raise CheckpointError(_unreadable(path)) from err
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path}: not a reference_models training checkpoint (no 'model'/'model_config')")
    _verify_digest(state, path)
    _check_types(state, path)
    return state


def _check_types(state: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, entries of the wrong type (a digest only says the file is whole)."""
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise CheckpointError(f"{path}: its 'model' is not a dict of named tensors (a damaged or hand-made checkpoint)")
    for key in ("model_config", "train_config"):
        value = state.get(key) or {}  # a checkpoint may be written without a train_config
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise CheckpointError(f"{path}: its {key!r} is not a dict of settings; got {type(value).__name__}")


def _verify_digest(state: dict[str, Any], path: Path) -> None:
    saved = state.get(_DIGEST)
    if saved is None:
        # written before checkpoints carried digests: nothing to check it against
        warnings.warn(f"{path}: checkpoint has no digest (written by an older version); cannot check it for corruption", stacklevel=3)
        return
    _refuse_expansion(state, path)
    try:
        actual = content_digest(state)
    except (TypeError, ValueError, RecursionError) as err:  # a foreign type, an int too long to print, deep keys
        raise CheckpointError(f"{path}: corrupt checkpoint ({one_line(err, 160)})") from None
    if actual != saved:
        raise CheckpointError(
            f"{path}: corrupt checkpoint (its contents do not match the digest it was saved with; "
            "the file was damaged after writing): use another checkpoint of the run"
        )


def _refuse_expansion(state: dict[str, Any], path: Path) -> None:
    """Refuse contents whose digest walk would not be linear in the file's size."""
    size = path.stat().st_size
    budget = expansion_budget(size)
    try:
        expanded = _expanded_size(state)
    except _Cycle as err:
        raise CheckpointError(f"{path}: refusing a checkpoint with {err}; a checkpoint holds no cycles") from None
    if expanded > budget:
        raise CheckpointError(
            f"{path}: refusing a checkpoint whose values, each shared part counted where it is used, come to "
            f"{_approximate(expanded)} bytes, more than the {budget:,} its size of {size:,} bytes allows "
            "(shared lists or tensor views that repeat their storage?)"
        )


def _approximate(count: int) -> str:
    return f"{count:,}" if count < 10**15 else f"about 2**{count.bit_length() - 1}"


def _refuse_non_finite(weights: dict[str, torch.Tensor], path: Path) -> None:
    bad = first_non_finite(weights)
    if bad is not None:
        raise CheckpointError(f"{path}: the weights hold NaN or infinite values (first: {bad}); the run diverged before saving them")


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object a file holds; anything else is one line naming the file.

    Args:
        path: the file.

    Raises:
        OSError: it cannot be read (the error names it).
        ValueError: it is not valid JSON (truncated, not UTF-8), is nested deeper than
            Python's parser goes, or holds something other than an object.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for text in ('{"a": 1}', '{"a": ', "[]"):
        ...         _ = (Path(tmp) / "c.json").write_text(text)
        ...         try:
        ...             print(read_json_object(Path(tmp) / "c.json"))
        ...         except ValueError as err:
        ...             print(str(err).replace(tmp, "TMP"))
        {'a': 1}
        TMP/c.json: not valid JSON (Expecting value: line 1 column 7 (char 6))
        TMP/c.json: expected a JSON object; got list
    """
    try:
        data = json.loads(Path(path).read_bytes())
    except RecursionError:
        raise ValueError(f"{path}: not readable as JSON (nested deeper than the parser goes)") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not valid JSON ({str(err)[:120]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object; got {type(data).__name__}")
    return data


def _is_run_config(path: Path) -> bool:
    """Whether a folder's ``config.json`` is a training run's (``"model"`` and ``"train"``).

    Raises:
        ValueError: the file is not a JSON object (:func:`read_json_object`); one line naming
            it, and the folder's checkpoint to pass instead if it has one (a run's config has
            ``"model"`` and ``"train"``; a ``save_pretrained`` folder's is a model config).
    """
    if not path.is_file():
        return False
    try:
        data = read_json_object(path)
    except ValueError as err:
        found = [path.parent / name for name in RUN_CHECKPOINTS if (path.parent / name).is_file()]
        instead = f"; pass the checkpoint file ({found[0]}) to skip it" if found else ""
        raise ValueError(f"{err}{instead}") from None
    return {"model", "train"} <= data.keys()


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The file or folder a ``--checkpoint PATH`` argument stands for.

    A training run folder (``config.json`` with ``"model"`` and ``"train"``, or no
    ``config.json`` but a ``best.pt``/``last.pt``) stands for its ``best.pt``, else its
    ``last.pt``; a ``.pt`` file or a ``save_pretrained`` folder stands for itself.

    Args:
        path: a ``.pt`` file, a ``save_pretrained`` folder or a training run folder.

    Returns:
        The ``.pt`` file or ``save_pretrained`` folder to load.

    Raises:
        FileNotFoundError: a run folder without ``best.pt`` or ``last.pt``, or a folder that
            is neither kind.
        ValueError: the folder's ``config.json`` is not a JSON object (one line naming it).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = (Path(run) / "last.pt").write_bytes(b"")
        ...     print(find_checkpoint(run).name)
        last.pt
    """
    path = Path(path)
    if not path.is_dir():
        return path
    config = path / "config.json"
    run = _is_run_config(config)
    if run or not config.is_file():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        if run:
            raise FileNotFoundError(f"{path}: a training run folder without best.pt or last.pt (no checkpoint written yet?)")
        raise FileNotFoundError(
            f"{path}: expected a training run folder (with best.pt or last.pt) or a save_pretrained folder "
            "(with config.json and model.safetensors); found neither"
        )
    return path


def load_model(path: str | os.PathLike, *, strict: bool = True, **overrides: Any):
    """Rebuild a model from a training checkpoint (``.pt``), a run folder or a ``save_pretrained`` folder.

    Args:
        path: ``last.pt``/``best.pt`` of a run, a run folder (its ``best.pt``, else
            ``last.pt``; see :func:`find_checkpoint`), or a folder with ``config.json`` and
            ``model.safetensors``.
        strict: fail on any mismatched key.
        **overrides: model config fields to change (e.g. ``image_size``).
    """
    return load_model_and_train_config(path, strict=strict, **overrides)[0]


def load_model_and_train_config(path: str | os.PathLike, *, strict: bool = True, **overrides: Any) -> tuple[Any, dict[str, Any] | None]:
    """:func:`load_model`, plus the training configuration the checkpoint was written with.

    Reads the file once, so a tool can default its data options to what the model was
    trained on.

    Args:
        path: as for :func:`load_model`.
        strict: fail on any mismatched key.
        **overrides: model config fields to change (e.g. ``image_size``).

    Returns:
        ``(model, train_config)``: ``train_config`` is the checkpoint's
        :class:`~reference_models.train.TrainConfig` as a dict, or ``None`` for a
        ``save_pretrained`` folder or a checkpoint written without one.
    """
    from .base import RISModel
    from .registry import build_for_loading

    path = find_checkpoint(path)
    if path.is_dir():
        model = RISModel.from_pretrained(path, strict=strict, **overrides)
        _refuse_non_finite(model.state_dict(), path)
        return model, None
    state = load_checkpoint(path)
    _refuse_non_finite(state["model"], path)
    model = build_for_loading(ModelConfig.from_dict(state["model_config"]), **overrides)
    try:
        load_weights(model, state["model"], strict=strict)
    except WeightsError as err:
        raise CheckpointError(f"{path}: {err}") from err
    train_config = state.get("train_config")
    return model, dict(train_config) if isinstance(train_config, dict) else None
