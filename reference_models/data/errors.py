"""The exceptions of the data loaders: one class for bad data, one for a sample that cannot be used.

:class:`DataError` is a :class:`ValueError`, so the command-line tools' one-line error handler
(:func:`reference_models.cli.run`) prints it without a traceback. Its message is one line that
names the file and, where there is one, the ref, annotation or image id, the field and what
was expected.

:class:`BadSampleError` is raised by a dataset's ``__getitem__`` for one sample that cannot be
read (a picture that only fails when decoded, a file removed after the dataset was built). It
carries the sample's ``index``, the ``path`` and a short ``reason`` so that a training loop
can skip the sample, log it and count it. It survives pickling, which is how a
:class:`~torch.utils.data.DataLoader` worker hands it back to the main process.
"""

from __future__ import annotations

import os
import re

__all__ = ["DataError", "BadSampleError", "CorruptImageError", "one_line"]


def one_line(text: object, limit: int = 300) -> str:
    """``text`` as one line of at most ``limit`` characters (for messages built from file contents).

    Args:
        text: anything; converted with :class:`str`.
        limit: the longest result.

    Returns:
        The text with runs of whitespace (newlines included) collapsed to one space.

    Example:
        >>> one_line("cannot read\\n  line 2", limit=16)
        'cannot read l...'
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: max(limit - 3, 0)] + "..."


class DataError(ValueError):
    """A dataset file holds something the loaders cannot use.

    Example:
        >>> error = DataError("refs(unc).p: ref 7: 'image_id': expected an int; got None")
        >>> isinstance(error, ValueError)
        True
    """


class CorruptImageError(DataError, OSError):
    """A picture exists but cannot be decoded (truncated, not an image, an unsupported mode).

    It is a :class:`DataError` and, as Pillow's own decoding errors are, an :class:`OSError`.

    Example:
        >>> issubclass(CorruptImageError, DataError) and issubclass(CorruptImageError, OSError)
        True
    """


class BadSampleError(DataError):
    """One sample of a dataset cannot be read; the others may be fine.

    Args:
        index: the sample's index in the dataset (or the whole message, see below).
        path: the file at fault (usually the picture).
        reason: a short description, e.g. ``"truncated picture (image file is truncated)"``.
        ref_id: the ref the sample belongs to, when known (named in the message).

    Attributes:
        index (int): the sample's index.
        path (str): the file at fault.
        reason (str): the short description (one line).
        ref_id (int | None): the ref, or None.

    Example:
        >>> import pickle
        >>> error = BadSampleError(3, "images/a.jpg", "truncated picture", ref_id=12)
        >>> str(error)
        'images/a.jpg: sample 3 (ref 12) cannot be read: truncated picture'
        >>> copy = pickle.loads(pickle.dumps(error))
        >>> (copy.index, copy.path, copy.reason, copy.ref_id)
        (3, 'images/a.jpg', 'truncated picture', 12)

    A message alone (how torch's DataLoader re-raises a worker's error in the main process)
    is parsed back into the parts:

        >>> again = BadSampleError("Caught BadSampleError in worker.\\nTraceback ...\\n" + f"BadSampleError: {error}")
        >>> (again.index, again.path, again.reason, again.ref_id)
        (3, 'images/a.jpg', 'truncated picture', 12)
    """

    def __init__(
        self, index: int | str, path: str | os.PathLike[str] | None = None, reason: str | None = None,
        ref_id: int | None = None,
    ) -> None:
        if path is None and reason is None and isinstance(index, str):
            index, path, reason, ref_id = _from_worker_message(index)
        self.index = int(index)
        self.path = os.fspath(path)
        self.reason = one_line(reason)
        self.ref_id = None if ref_id is None else int(ref_id)
        where = f"sample {self.index}" + ("" if self.ref_id is None else f" (ref {self.ref_id})")
        super().__init__(f"{self.path}: {where} cannot be read: {self.reason}")

    def __reduce__(self):
        # The default reduction calls cls(*self.args), the message alone: rebuild from the parts.
        return (type(self), (self.index, self.path, self.reason, self.ref_id))


_MESSAGE = re.compile(r"(?P<path>.*): sample (?P<index>\d+)(?: \(ref (?P<ref>-?\d+)\))? cannot be read: (?P<reason>.*)")


def _from_worker_message(message: str) -> tuple[int, str, str, int | None]:
    """The parts of a BadSampleError that a DataLoader worker raised, from the text it sent.

    torch's DataLoader re-raises a worker's exception in the main process as
    ``type(error)(text)``, where the text ends with the worker's traceback, whose last line is
    ``...BadSampleError: <message>``. The message's format is this class's own, so the parts
    come back exactly, and a handler in the main process sees the same error.
    """
    lines = message.strip().splitlines()
    last = lines[-1].split("BadSampleError: ", 1)[-1] if lines else ""
    match = _MESSAGE.fullmatch(last)
    if match is None:  # not a message of this class: keep all of it as the reason
        return -1, "<unknown>", message, None
    ref = match["ref"]
    return int(match["index"]), match["path"], match["reason"], None if ref is None else int(ref)
