"""Checking a REFER dataset before anything runs: field types, links, picture files, masks.

:class:`~reference_models.data.refer.ReferDataset` calls :func:`check_refer` when it is built,
so ``python -m reference_models.train`` and ``evaluate`` find bad data before they create a run
folder or load a model. Every problem is one line, a
:class:`~reference_models.data.errors.DataError` (or :class:`FileNotFoundError` for a missing
file) that names the file, the ref or annotation id, the field and what was expected, e.g.::

    data/refcoco/refs(unc).p: ref 17 (refs[16]): 'image_id': expected an int; got None

What is checked:

- every ref of the refs file: ``ref_id``, ``image_id`` ints; ``ann_id`` an int or a flat list
  of ints; ``split`` a string; ``sentences`` a non-empty list of dicts whose ``raw`` and
  ``sent`` (one at least) are strings; ``sent_id``, ``tokens``, ``sent_ids``, ``category_id``
  of the right type where present;
- every image and annotation entry of ``instances.json``: ids are ints and unique;
  ``file_name`` is a relative path that stays inside the picture folder (no absolute path,
  no ``..``); ``height`` and ``width`` are positive whole numbers;
- for the refs of the split: each names an image and annotations that exist, on that image,
  and each annotation's polygons or RLE decode (checked without rasterising);
- with ``check_images``: each picture file exists and its header opens, with the size
  ``instances.json`` gives (the pixels are not decoded; RefCOCO's 17,000 training pictures
  take a few seconds, with a progress bar on a terminal).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

from PIL import Image

from .errors import CorruptImageError, DataError, one_line
from .images import read_header
from .masks import check_segmentation
from .safe_pickle import loads_plain_pickle

__all__ = [
    "PROGRESS_FROM",
    "CheckedRefer",
    "check_refer",
    "read_refs",
    "read_instances",
    "split_matches",
    "target_ann_ids",
    "image_file",
]

# Show a progress bar (on a terminal, outside CI) from this many pictures on.
PROGRESS_FROM = 2000


class CheckedRefer(NamedTuple):
    """The parts of a REFER dataset that one split uses, all checked.

    Attributes:
        refs: the refs of the split, in file order (each a new dict).
        images: ``{image id: image entry}`` of the pictures those refs show.
        annotations: ``{annotation id: annotation entry}`` of their targets.
    """

    refs: list[dict[str, Any]]
    images: dict[int, dict[str, Any]]
    annotations: dict[int, dict[str, Any]]


# Refs and instances come from JSON or the plain unpickler, which only make exact built-in
# types, so ``type(x) is int`` is the test (it also keeps bools out); a dataset of millions
# of fields makes the difference between isinstance calls and one set of types matter.
def _is_int(value: Any) -> bool:
    return type(value) is int


def _all_of(kind: type, values: Any) -> bool:
    return isinstance(values, list) and set(map(type, values)) <= {kind}


def _is_whole(value: Any) -> bool:
    return type(value) is int or (type(value) is float and value.is_integer())


def _got(value: Any) -> str:
    return one_line(repr(value), 80)


def split_matches(requested: str, ref_split: str) -> bool:
    """REFER's ``getRefIds`` rule: ``test`` takes every test split, ``testA`` any test split with A.

    Args:
        requested: the split asked for.
        ref_split: a ref's ``split`` field.

    Example:
        >>> split_matches("test", "testB"), split_matches("testA", "testAB"), split_matches("val", "test")
        (True, True, False)
    """
    if requested in ("train", "val"):
        return ref_split == requested
    if requested == "test":
        return "test" in ref_split
    return ref_split.startswith("test") and requested[-1] in ref_split[4:]


def target_ann_ids(ann_id: int | Sequence[int]) -> list[int]:
    """The annotation ids a ref's ``ann_id`` names (``-1`` and ``[]`` mean no target).

    Args:
        ann_id: a checked ``ann_id`` field.

    Example:
        >>> target_ann_ids(5), target_ann_ids([5, 6]), target_ann_ids(-1), target_ann_ids([])
        ([5], [5, 6], [], [])
    """
    values = ann_id if isinstance(ann_id, (list, tuple)) else [ann_id]
    return [int(v) for v in values if int(v) != -1]


def image_file(image_dir: str | os.PathLike[str], entry: Mapping[str, Any]) -> Path:
    """The picture of a checked image entry: ``image_dir / file_name``.

    Args:
        image_dir: the picture folder.
        entry: an image entry of ``instances.json`` (its ``file_name`` checked by :func:`read_instances`).

    Example:
        >>> image_file("images", {"file_name": "a/b.jpg"}).as_posix()
        'images/a/b.jpg'
    """
    return Path(image_dir) / str(entry["file_name"])


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({one_line(error, 160)})") from None


def _parse_json(data: bytes, path: Path) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: not valid JSON ({one_line(error, 160)})") from None


# Files already checked in this process, by content: training reads the same refs and
# instances for its train and val splits, evaluation for each split, and on RefCOCO each
# check takes seconds. The datasets share these entries (they never change them).
_CHECKED: OrderedDict[tuple[str, bytes], Any] = OrderedDict()
_CHECKED_SIZE = 4


def _remembered(kind: str, data: bytes, check: Callable[[], Any]) -> Any:
    key = (kind, hashlib.blake2b(data, digest_size=16).digest())
    if key in _CHECKED:
        _CHECKED.move_to_end(key)
        return _CHECKED[key]
    value = _CHECKED[key] = check()
    while len(_CHECKED) > _CHECKED_SIZE:
        _CHECKED.popitem(last=False)
    return value


def read_refs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a refs file (pickle or JSON) and check every ref's fields (see the module docstring).

    Args:
        path: ``refs(<split_by>).p`` or ``.json``.

    Returns:
        The refs, in file order.

    Raises:
        FileNotFoundError: the file is missing.
        DataError: the file is unreadable or a field has the wrong type (one line naming the
            file, the ref and the field).

    Example:
        >>> import pickle, tempfile
        >>> ref = {"ref_id": 1, "image_id": 2, "ann_id": 3, "split": "val", "sentences": [{"raw": None}]}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = Path(tmp, "refs.p").write_bytes(pickle.dumps([ref]))
        ...     read_refs(Path(tmp, "refs.p"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        reference_models.data.errors.DataError: .../refs.p: ref 1 (refs[0]): 'sentences'[0]['raw']: expected a str; got None
    """
    file = Path(path)
    data = _read_bytes(file, "refs file")
    return _remembered("refs" + file.suffix, data, lambda: _checked_refs(data, file))


def _checked_refs(data: bytes, file: Path) -> list[dict[str, Any]]:
    refs = loads_plain_pickle(data, source=str(file)) if file.suffix == ".p" else _parse_json(data, file)
    if not isinstance(refs, list):
        raise DataError(f"{file}: expected a list of refs; got a {type(refs).__name__}")
    for position, ref in enumerate(refs):
        _check_ref(ref, position, file)
    return refs


def _check_ref(ref: Any, position: int, file: Path) -> None:
    where = f"{file}: refs[{position}]"
    if not isinstance(ref, Mapping):
        raise DataError(f"{where}: expected a dict; got a {type(ref).__name__}")
    missing = [key for key in ("ref_id", "image_id", "ann_id", "split", "sentences") if key not in ref]
    if missing:
        raise DataError(f"{where}: missing {', '.join(map(repr, missing))}; has {one_line(sorted(map(str, ref)), 120)}")
    if not _is_int(ref["ref_id"]):
        raise DataError(f"{where}: 'ref_id': expected an int; got {_got(ref['ref_id'])}")
    where = f"{file}: ref {ref['ref_id']} (refs[{position}])"
    for key in ("image_id", "category_id"):
        if key in ref and not _is_int(ref[key]):
            raise DataError(f"{where}: {key!r}: expected an int; got {_got(ref[key])}")
    ann_id = ref["ann_id"]
    if not (_is_int(ann_id) or _all_of(int, ann_id) or (isinstance(ann_id, tuple) and _all_of(int, list(ann_id)))):
        raise DataError(f"{where}: 'ann_id': expected an int or a flat list of ints; got {_got(ann_id)}")
    if not isinstance(ref["split"], str):
        raise DataError(f"{where}: 'split': expected a str; got {_got(ref['split'])}")
    if "sent_ids" in ref and not _all_of(int, ref["sent_ids"]):
        raise DataError(f"{where}: 'sent_ids': expected a list of ints; got {_got(ref['sent_ids'])}")
    sentences = ref["sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise DataError(f"{where}: 'sentences': expected a non-empty list of sentences; got {_got(sentences)}")
    for index, sentence in enumerate(sentences):
        _check_sentence(sentence, f"{where}: 'sentences'[{index}]")


def _check_sentence(sentence: Any, where: str) -> None:
    if not isinstance(sentence, Mapping):
        raise DataError(f"{where}: expected a dict with 'raw' or 'sent'; got {_got(sentence)}")
    if "raw" not in sentence and "sent" not in sentence:
        raise DataError(f"{where}: expected a 'raw' or 'sent' text; has {one_line(sorted(map(str, sentence)), 120)}")
    for key in ("raw", "sent"):
        # A None text would be read as the word "None"; refuse it rather than train on it.
        if key in sentence and type(sentence[key]) is not str:
            raise DataError(f"{where}[{key!r}]: expected a str; got {_got(sentence[key])}")
    if "sent_id" in sentence and not _is_int(sentence["sent_id"]):
        raise DataError(f"{where}['sent_id']: expected an int; got {_got(sentence['sent_id'])}")
    tokens = sentence.get("tokens", [])
    if not _all_of(str, tokens):
        raise DataError(f"{where}['tokens']: expected a list of str; got {_got(tokens)}")


def read_instances(path: str | os.PathLike[str]) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Read ``instances.json`` and check every image and annotation entry's fields.

    Args:
        path: the dataset's ``instances.json``.

    Returns:
        ``({image id: entry}, {annotation id: entry})``.

    Raises:
        FileNotFoundError: the file is missing.
        DataError: unreadable, or an entry is malformed (one line naming the entry and field).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     file = Path(tmp, "instances.json")
        ...     _ = file.write_text('{"images": [{"id": 1, "file_name": "/etc/x.jpg", "height": 2, "width": 2}], '
        ...                         '"annotations": []}')
        ...     read_instances(file)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        reference_models.data.errors.DataError: .../instances.json: image 1 (images[0]): 'file_name': expected a relative path ...
    """
    file = Path(path)
    data = _read_bytes(file, "instances.json (COCO images and annotations)")
    return _remembered("instances", data, lambda: _checked_instances(_parse_json(data, file), file))


def _checked_instances(data: Any, file: Path) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    if not isinstance(data, Mapping):
        raise DataError(f"{file}: expected a COCO dict with 'images' and 'annotations'; got a {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{file}: {key!r}: expected a list of entries; got {_got(data.get(key))}")
    images: dict[int, dict[str, Any]] = {}
    for position, entry in enumerate(data["images"]):
        image_id = _entry_id(entry, file, "images", position)
        where = f"{file}: image {image_id} (images[{position}])"
        _check_file_name(entry.get("file_name"), where)
        for key in ("height", "width"):
            if not (_is_whole(entry.get(key)) and entry[key] > 0):
                raise DataError(f"{where}: {key!r}: expected a positive whole number of pixels; got {_got(entry.get(key))}")
        limit = Image.MAX_IMAGE_PIXELS
        if limit and entry["height"] * entry["width"] > 2 * limit:
            size = f"{int(entry['width'])}x{int(entry['height'])}"
            raise DataError(f"{where}: {size} pixels (width x height) is beyond Pillow's limit of {2 * limit:,}")
        if image_id in images:
            raise DataError(f"{where}: the image id {image_id} appears twice")
        images[image_id] = entry
    annotations: dict[int, dict[str, Any]] = {}
    for position, entry in enumerate(data["annotations"]):
        ann_id = _entry_id(entry, file, "annotations", position)
        where = f"{file}: annotation {ann_id} (annotations[{position}])"
        if not _is_int(entry.get("image_id")):
            raise DataError(f"{where}: 'image_id': expected an int; got {_got(entry.get('image_id'))}")
        if "segmentation" not in entry:
            raise DataError(f"{where}: no 'segmentation' (polygons or RLE)")
        if ann_id in annotations:
            raise DataError(f"{where}: the annotation id {ann_id} appears twice")
        annotations[ann_id] = entry
    return images, annotations


def _entry_id(entry: Any, file: Path, key: str, position: int) -> int:
    if not isinstance(entry, Mapping):
        raise DataError(f"{file}: {key}[{position}]: expected a dict; got a {type(entry).__name__}")
    if not _is_int(entry.get("id")):
        raise DataError(f"{file}: {key}[{position}]: 'id': expected an int; got {_got(entry.get('id'))}")
    return entry["id"]


def _check_file_name(name: Any, where: str) -> None:
    if type(name) is not str or not name.strip():
        raise DataError(f"{where}: 'file_name': expected a relative path; got {_got(name)}")
    if ".." not in name and ":" not in name and name[0] not in "/\\":
        return  # nearly every name: no way out of the folder, no need to parse it
    # Refused on both path flavours: a name written on Windows must not escape on Linux either.
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        raise DataError(
            f"{where}: 'file_name': expected a relative path inside the picture folder, without '..'; got {_got(name)}"
        )


def check_refer(
    refs_path: str | os.PathLike[str],
    instances_path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    split: str,
    *,
    check_images: bool = True,
    exif_orientation: bool = False,
    progress: bool | None = None,
) -> CheckedRefer:
    """Check a REFER dataset for one split (see the module docstring) and return its parts.

    Args:
        refs_path: ``refs(<split_by>).p`` or ``.json``.
        instances_path: ``instances.json``.
        image_dir: the picture folder.
        split: ``train``, ``val``, ``test``, ``testA``, ... (REFER's matching rule).
        check_images: also open every picture's header (existence, format, size).
        exif_orientation: the pictures are to be turned by their EXIF orientation, so
            ``instances.json`` gives the turned sizes.
        progress: show a progress bar over the pictures (default: from
            :data:`PROGRESS_FROM` pictures on, on a terminal, unless ``CI`` is set).

    Returns:
        The split's :class:`CheckedRefer`.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
        DataError: anything else wrong, in one line naming the file, the entry and the field.

    Example:
        >>> import tempfile
        >>> from reference_models.data.synthetic import export_refer
        >>> with tempfile.TemporaryDirectory() as root:
        ...     _ = export_refer(root, counts={"train": 1, "val": 2, "test": 1}, progress=False)
        ...     checked = check_refer(f"{root}/synthetic/refs(unc).p", f"{root}/synthetic/instances.json",
        ...                           f"{root}/images/synthetic", "val")
        >>> len(checked.images), all(ref["split"] == "val" for ref in checked.refs)
        (2, True)
    """
    refs_path, instances_path = Path(refs_path), Path(instances_path)
    every_ref = read_refs(refs_path)
    refs = [dict(ref) for ref in every_ref if split_matches(split, ref["split"])]
    if not refs:
        present = sorted({ref["split"] for ref in every_ref})
        raise DataError(f"{refs_path}: no refs in split {split!r}; the file has splits {present}")
    every_image, every_annotation = read_instances(instances_path)
    images: dict[int, dict[str, Any]] = {}
    annotations: dict[int, dict[str, Any]] = {}
    for ref in refs:
        image = every_image.get(ref["image_id"])
        if image is None:
            raise DataError(f"{refs_path}: ref {ref['ref_id']}: 'image_id' {ref['image_id']} is not an image of {instances_path}")
        images[ref["image_id"]] = image
        for ann_id in target_ann_ids(ref["ann_id"]):
            if ann_id not in annotations:
                annotations[ann_id] = _checked_annotation(every_annotation, ann_id, ref, image, refs_path, instances_path)
            elif annotations[ann_id]["image_id"] != ref["image_id"]:
                raise DataError(f"{instances_path}: annotation {ann_id} of ref {ref['ref_id']} is on another image")
    if check_images:
        _check_pictures(refs, images, Path(image_dir), instances_path, exif_orientation, progress)
    return CheckedRefer(refs, images, annotations)


def _checked_annotation(
    every: Mapping[int, dict[str, Any]], ann_id: int, ref: Mapping[str, Any], image: Mapping[str, Any],
    refs_path: Path, instances_path: Path,
) -> dict[str, Any]:
    annotation = every.get(ann_id)
    where = f"{instances_path}: annotation {ann_id} of ref {ref['ref_id']}"
    if annotation is None:
        raise DataError(f"{refs_path}: ref {ref['ref_id']}: 'ann_id' {ann_id} is not an annotation of {instances_path}")
    if annotation["image_id"] != ref["image_id"]:
        raise DataError(f"{where}: it is on image {annotation['image_id']}, the ref on image {ref['image_id']}")
    try:
        check_segmentation(annotation["segmentation"], image["height"], image["width"])
    except ValueError as error:
        raise DataError(f"{where}: 'segmentation': {one_line(error, 200).removeprefix('segmentation: ')}") from None
    return annotation


def _check_pictures(
    refs: list[dict[str, Any]], images: Mapping[int, Mapping[str, Any]], image_dir: Path, instances_path: Path,
    exif_orientation: bool, progress: bool | None,
) -> None:
    first_ref = {}
    for ref in refs:
        first_ref.setdefault(ref["image_id"], ref["ref_id"])
    if progress is None:
        progress = len(first_ref) >= PROGRESS_FROM and sys.stderr.isatty() and not os.environ.get("CI")
    from tqdm.auto import tqdm

    for image_id, ref_id in tqdm(first_ref.items(), desc="checking pictures", unit="picture", disable=not progress):
        entry = images[image_id]
        file = image_file(image_dir, entry)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: the picture of image {image_id} (ref {ref_id}) not found")
        try:
            header = read_header(file)
        except CorruptImageError as error:
            raise CorruptImageError(f"{error} (image {image_id}, ref {ref_id})") from None
        stored, expected = (header.width, header.height), (int(entry["width"]), int(entry["height"]))
        seen, other = (header.upright_size, stored) if exif_orientation else (stored, header.upright_size)
        if seen != expected:
            message = (
                f"{file}: image {image_id} (ref {ref_id}): the picture is {seen[0]}x{seen[1]} (width x height"
                f"{', turned by its EXIF orientation' if seen != stored else ''}) but {instances_path} says "
                f"{expected[0]}x{expected[1]}"
            )
            if other == expected:
                message += f"; it matches {'as stored' if other == stored else 'turned by its EXIF orientation'}: " \
                    f"build the dataset with exif_orientation={other != stored}"
            raise DataError(message)
