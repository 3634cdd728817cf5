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
        index: the sample's index in the dataset.
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
    """

    def __init__(self, index: int, path: str | os.PathLike[str], reason: str, ref_id: int | None = None) -> None:
        self.index = int(index)
        self.path = os.fspath(path)
        self.reason = one_line(reason)
        self.ref_id = None if ref_id is None else int(ref_id)
        where = f"sample {self.index}" + ("" if self.ref_id is None else f" (ref {self.ref_id})")
        super().__init__(f"{self.path}: {where} cannot be read: {self.reason}")

    def __reduce__(self):
        # The default reduction calls cls(*self.args) with the message alone, which this
        # __init__ cannot take: DataLoader workers would fail while reporting the error.
        return (type(self), (self.index, self.path, self.reason, self.ref_id))
