"""COCO-style segmentations to boolean masks: polygons and run-length encodings.

One routine rasterises polygons everywhere in the project (:func:`polygons_to_mask`): the
synthetic generator draws its objects' masks with it and the REFER loader reads annotations
with it, so a polygon exported by one and read by the other gives a byte-identical mask. It
follows the COCO toolkit's rule to the pixel (pycocotools' ``frPyObjects`` then ``decode``,
which is how the published RIS code builds its ground truth), so masks of real datasets and
hence the metrics match the toolkits' without the compiled extension as a dependency; the
test suite checks the equality against pycocotools on random polygons.

Run-length encodings follow COCO: runs over the *column-major* flattened mask, alternating
background and foreground and starting with background (a leading zero when the first pixel
is foreground), as a ``{"size": [h, w], "counts": ...}`` dict where ``counts`` is either a
list of integers (uncompressed, used for crowd annotations) or the compressed ASCII string
of pycocotools (deltas against the count two places back, 5-bit groups with a continuation
bit, offset by 48).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import one_line

__all__ = [
    "check_segmentation",
    "polygons_to_mask",
    "rle_encode",
    "rle_decode",
    "compress_counts",
    "decompress_counts",
    "segmentation_to_mask",
]


# The COCO toolkit traces a polygon's outline on a grid this many times finer than the pixels.
_TRACE_SCALE = 5.0


def _c_int(values: np.ndarray) -> np.ndarray:
    # The toolkit converts with C's (int) cast, which truncates toward zero: for negative
    # coordinates that is not floor, and the masks differ if floor is used.
    return np.trunc(values).astype(np.int64)


def _polygon_toggles(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Column-major flat indices at which one polygon's mask switches on or off.

    The outline is traced through every cell of a grid ``_TRACE_SCALE`` times finer than the
    pixels, one cell per step along the edge's longer axis, each edge rounded from its lower
    end so that an edge traced either way gives the same cells. Wherever the trace crosses
    the vertical line through a pixel column's centres, the pixels of that column from the
    first centre below the crossing on toggle. A pixel thus ends up inside when an odd
    number of crossings lie above its centre in its column.
    """
    x = _c_int(_TRACE_SCALE * xy[:, 0] + 0.5)
    y = _c_int(_TRACE_SCALE * xy[:, 1] + 0.5)
    x_end, y_end = np.roll(x, -1), np.roll(y, -1)  # the last edge closes the polygon
    dx, dy = np.abs(x_end - x), np.abs(y_end - y)
    along_x = dx >= dy
    reverse = (along_x & (x > x_end)) | (~along_x & (y > y_end))
    x0, x1 = np.where(reverse, x_end, x), np.where(reverse, x, x_end)
    y0, y1 = np.where(reverse, y_end, y), np.where(reverse, y, y_end)
    steps = np.maximum(dx, dy)
    rise = np.where(along_x, y1 - y0, x1 - x0).astype(np.float64)
    # A repeated vertex gives a zero-length edge; its one traced point has the same column
    # as its neighbours, so it never produces a crossing and its slope does not matter.
    slope = np.divide(rise, steps, out=np.zeros_like(rise), where=steps > 0)

    counts = steps + 1
    edge = np.repeat(np.arange(len(x)), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    # Points run from each edge's first vertex to its second, whichever end was rounded from.
    t = np.where(reverse[edge], steps[edge] - step, step)
    offset = _c_int(np.where(along_x[edge], y0[edge], x0[edge]) + slope[edge] * t + 0.5)
    u = np.where(along_x[edge], x0[edge] + t, offset)
    v = np.where(along_x[edge], offset, y0[edge] + t)

    moved = np.flatnonzero(u[1:] != u[:-1]) + 1
    left = np.where(u[moved] < u[moved - 1], u[moved], u[moved] - 1).astype(np.float64)
    column = (left + 0.5) / _TRACE_SCALE - 0.5
    keep = (np.floor(column) == column) & (column >= 0) & (column <= width - 1)
    top = np.minimum(v[moved], v[moved - 1]).astype(np.float64)
    row = np.ceil(np.clip((top + 0.5) / _TRACE_SCALE - 0.5, 0, height))
    return column[keep].astype(np.int64) * height + row[keep].astype(np.int64)


def _is_whole(value: Any) -> bool:
    # Whole-number floats are accepted: some exported annotation files store sizes as 480.0.
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer())


def _image_size(height: Any, width: Any) -> tuple[int, int]:
    if not (_is_whole(height) and _is_whole(width)):
        raise ValueError(f"height, width: expected integer sizes; got ({height!r}, {width!r})")
    if height <= 0 or width <= 0:
        raise ValueError(f"height, width: expected positive sizes; got ({height}, {width})")
    return int(height), int(width)


def _polygon_points(part: Any, index: int, height: int, width: int) -> np.ndarray | None:
    """One polygon part as an ``(n, 2)`` array, None when it has no area; ValueError if malformed."""
    if isinstance(part, np.ndarray):
        part = part.ravel().tolist()
    if isinstance(part, (str, bytes)) or not isinstance(part, Sequence):
        raise ValueError(f"polygons[{index}]: expected a flat list of coordinates; got {type(part).__name__}")
    if len(part) % 2:
        raise ValueError(f"polygons[{index}]: expected an even number of coordinates; got {len(part)}")
    if len(part) < 6:
        return None
    try:
        array = np.asarray(part)
    except (TypeError, ValueError):  # ragged: a nested list among the numbers
        array = np.asarray([None])
    # Numbers only: strings, None and nested lists give other dtypes (bools are numbers to numpy).
    if array.dtype.kind not in "iufb" or array.ndim != 1:
        raise ValueError(f"polygons[{index}]: expected numbers; got {list(part)[:6]!r}...")
    xy = array.astype(np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise ValueError(f"polygons[{index}]: expected finite coordinates; got {list(part)[:6]!r}...")
    # The outline is traced cell by cell, so a wild coordinate would mean a huge allocation;
    # no real annotation lies this far outside its image.
    reach = 16 * max(height, width) + 1024
    if np.abs(xy).max() > reach:
        raise ValueError(
            f"polygons[{index}]: coordinates up to {np.abs(xy).max():g} lie far outside the "
            f"{height}x{width} image (limit {reach}); is the annotation corrupt?"
        )
    return xy


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons into one boolean mask (the union of the parts), as COCO does.

    The result equals pycocotools' ``decode(merge(frPyObjects(polygons, height, width)))``
    pixel for pixel: roughly, a pixel is inside when its centre is, with the boundary
    settled by tracing the outline at 5x resolution (see the module docstring). Overlapping
    parts stay foreground (union, as pycocotools' ``merge``). Parts with fewer than three
    vertices have no area and are skipped.

    Args:
        polygons: a list of parts, each a flat ``[x1, y1, x2, y2, ...]`` list (or array) in
            pixels (pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``).
        height: mask height.
        width: mask width.

    Returns:
        A ``(height, width)`` bool array.

    Example:
        >>> polygons_to_mask([[1, 1, 4, 1, 4, 3, 1, 3]], 5, 6).astype(int)
        array([[0, 0, 0, 0, 0, 0],
               [0, 1, 1, 1, 0, 0],
               [0, 1, 1, 1, 0, 0],
               [0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0]])
    """
    height, width = _image_size(height, width)
    # +1 where a part's inside run starts, -1 where it ends; overlapping parts add up, so one
    # cumulative sum over the image at the end gives the union of all parts.
    coverage = np.zeros(height * width + 1, dtype=np.int32)
    for index, part in enumerate(polygons):
        xy = _polygon_points(part, index, height, width)
        if xy is None:
            continue
        toggles, count = np.unique(_polygon_toggles(xy, height, width), return_counts=True)
        # Toggles at the same pixel cancel in pairs; the rest alternate start, end, start, ...
        edges = toggles[count % 2 == 1]
        np.add.at(coverage, edges[0::2], 1)
        np.add.at(coverage, edges[1::2], -1)
    # The runs are column-major, as everywhere in COCO.
    mask = np.cumsum(coverage[: height * width]) > 0
    return mask.reshape(width, height).T.copy()


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    # COCO runs always start with background: a foreground first pixel gets a zero-length run.
    return ([0] + runs) if flat[0] else runs


def compress_counts(counts: Sequence[int]) -> str:
    """Compress COCO run lengths into pycocotools' ASCII string.

    Args:
        counts: run lengths (background first).

    Returns:
        The compressed string.

    Example:
        >>> compress_counts([3, 2, 10])
        '32:'
        >>> decompress_counts(compress_counts([3, 2, 10]))
        [3, 2, 10]
    """
    out = []
    for index, count in enumerate(counts):
        value = int(count)
        if value < 0:
            raise ValueError(f"counts[{index}]: run lengths must be >= 0; got {value}")
        if index > 2:
            value -= int(counts[index - 2])
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            # The sign of the remaining value decides when to stop: -1 for negatives, 0 otherwise.
            more = (value != -1) if group & 0x10 else (value != 0)
            if more:
                group |= 0x20
            out.append(chr(group + 48))
    return "".join(out)


def decompress_counts(text: str | bytes) -> list[int]:
    """Expand pycocotools' compressed ASCII counts back into run lengths.

    Args:
        text: the compressed string (``str`` or ``bytes``).

    Returns:
        The list of run lengths.

    Example:
        >>> decompress_counts('32:')
        [3, 2, 10]
    """
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    position = 0
    while position < len(text):
        value = 0
        shift = 0
        more = True
        while more:
            if position >= len(text):
                raise ValueError(f"compressed RLE counts end in the middle of a number: {text!r}")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"compressed RLE counts: invalid character {text[position]!r} at {position}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_encode(mask: np.ndarray, *, compressed: bool = True) -> dict[str, Any]:
    """Run-length encode a boolean mask in COCO's column-major convention.

    Args:
        mask: ``(h, w)`` array, nonzero = foreground.
        compressed: return pycocotools' compressed string counts (default) or a list of ints.

    Returns:
        ``{"size": [h, w], "counts": str | list[int]}``.

    Example:
        >>> m = np.zeros((3, 4), dtype=bool); m[1, 1:3] = True
        >>> rle_encode(m, compressed=False)
        {'size': [3, 4], 'counts': [4, 1, 2, 1, 4]}
        >>> bool((rle_decode(rle_encode(m)) == m).all())
        True
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask: expected a 2-D (h, w) array; got shape {array.shape}")
    counts = _runs(array.astype(bool))
    size = [int(array.shape[0]), int(array.shape[1])]
    return {"size": size, "counts": compress_counts(counts) if compressed else counts}


def _rle_parts(rle: Any) -> tuple[int, int, list[int]]:
    """``(height, width, run lengths)`` of a COCO RLE, checked; ValueError if malformed."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"rle: expected a dict with 'size' and 'counts'; got {one_line(rle, 80)}")
    size, counts = rle["size"], rle["counts"]
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2 or not all(map(_is_whole, size)):
        raise ValueError(f"rle: 'size' must be [height, width]; got {one_line(size, 80)}")
    height, width = (int(v) for v in size)
    if height < 0 or width < 0:
        raise ValueError(f"rle: 'size' must not be negative; got {[height, width]}")
    if isinstance(counts, (str, bytes)):
        runs = decompress_counts(counts)
    elif isinstance(counts, Sequence) and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts):
        runs = [int(c) for c in counts]
    else:
        raise ValueError(f"rle: 'counts' must be a string or a list of ints; got {one_line(counts, 80)}")
    if any(c < 0 for c in runs):
        raise ValueError("rle: negative run length in counts")
    total = sum(runs)
    if total != height * width:
        raise ValueError(f"rle: run lengths sum to {total}, but size {height}x{width} has {height * width} pixels")
    return height, width, runs


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode one COCO RLE (compressed string or uncompressed list counts) into a bool mask.

    Args:
        rle: ``{"size": [h, w], "counts": str | bytes | list[int]}``.

    Returns:
        A ``(h, w)`` bool array.

    Raises:
        ValueError: the RLE is malformed (the message says how).

    Example:
        >>> rle_decode({"size": [2, 2], "counts": [1, 2, 1]}).astype(int)
        array([[0, 1],
               [1, 0]])
    """
    height, width, counts = _rle_parts(rle)
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T.copy() if flat.size else np.zeros((height, width), dtype=bool)


def _segmentation_parts(segmentation: Any) -> tuple[bool, list[Any]]:
    """``(is_polygons, parts)`` of a ``segmentation`` field; ValueError when it is neither."""
    if isinstance(segmentation, Mapping):
        return False, [segmentation]
    if not isinstance(segmentation, Sequence) or isinstance(segmentation, (str, bytes)):
        raise ValueError(f"segmentation: expected polygons or RLE; got {type(segmentation).__name__}")
    parts = list(segmentation)
    if all(isinstance(p, Mapping) for p in parts) and parts:
        return False, parts
    if any(isinstance(p, Mapping) for p in parts):
        raise ValueError("segmentation: cannot mix polygons and RLE in one annotation")
    return True, parts


def _check_rle_size(rle: Mapping[str, Any], height: int, width: int) -> None:
    # Before decoding: a wrong size would otherwise allocate that size's pixels first.
    size = rle.get("size")
    if isinstance(size, Sequence) and not isinstance(size, (str, bytes)) and len(size) == 2 and all(map(_is_whole, size)):
        if [int(size[0]), int(size[1])] != [height, width]:
            raise ValueError(
                f"segmentation: RLE size {[int(size[0]), int(size[1])]} does not match the image size [{height}, {width}]"
            )


def check_segmentation(segmentation: Any, height: int, width: int) -> None:
    """Check that :func:`segmentation_to_mask` can decode ``segmentation``, without rasterising.

    Cheap enough to run over every annotation of a dataset before training: polygons are
    checked for shape, numbers and reach, RLEs for size, counts and their sum.

    Args:
        segmentation: the annotation's ``segmentation`` value.
        height: image height.
        width: image width.

    Raises:
        ValueError: what is wrong, in one line.

    Example:
        >>> check_segmentation([[0, 0, 2, 0, 2, 2, 0, 2]], 4, 4)
        >>> check_segmentation([[0, 0, 2, 0, 2]], 4, 4)
        Traceback (most recent call last):
        ...
        ValueError: polygons[0]: expected an even number of coordinates; got 5
    """
    height, width = _image_size(height, width)
    polygons, parts = _segmentation_parts(segmentation)
    for index, part in enumerate(parts):
        if polygons:
            _polygon_points(part, index, height, width)
        else:
            _check_rle_size(part, height, width)
            _rle_parts(part)


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Turn any COCO ``segmentation`` field into a bool mask of the image's size.

    Accepts a list of polygons, one RLE dict, or a list of RLE dicts (their union).

    Args:
        segmentation: the annotation's ``segmentation`` value.
        height: image height (RLE sizes must match it).
        width: image width.

    Returns:
        A ``(height, width)`` bool array.

    Raises:
        ValueError: the segmentation is malformed (see :func:`check_segmentation`).

    Example:
        >>> segmentation_to_mask([[0, 0, 2, 0, 2, 2, 0, 2]], 4, 4).sum()
        np.int64(4)
    """
    height, width = _image_size(height, width)
    polygons, parts = _segmentation_parts(segmentation)
    if polygons:
        return polygons_to_mask(parts, height, width)
    mask = np.zeros((height, width), dtype=bool)
    for part in parts:
        _check_rle_size(part, height, width)
        mask |= rle_decode(part)
    return mask
