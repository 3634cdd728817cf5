"""COCO mask codecs: polygon rasterisation and run-length encodings (compressed and plain)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from reference_models.data.masks import (
    compress_counts,
    decompress_counts,
    polygons_to_mask,
    rle_decode,
    rle_encode,
    segmentation_to_mask,
)

masks = st.integers(1, 12).flatmap(
    lambda h: st.integers(1, 12).flatmap(lambda w: arrays(np.bool_, (h, w)))
)


def _mask_a() -> np.ndarray:
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 2:6] = True
    mask[0, 0] = mask[4, 6] = True
    return mask


def _mask_b() -> np.ndarray:
    mask = np.zeros((40, 30), dtype=bool)
    mask[5:35, 3:27] = True
    mask[10:20, 10:20] = False
    return mask


def _mask_c() -> np.ndarray:
    mask = np.ones((300, 200), dtype=bool)
    mask[::7, ::3] = False
    return mask


# Strings produced by pycocotools.mask.encode on the same masks (recorded once; pycocotools
# is not a dependency), so the codec is checked against the reference implementation.
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_mask_a, "01:2H000003N"),
        (_mask_b, "m3n0:000000000000WO0:0F0:0F0:0F0:0F0:0F0:0F0:0F0:0F0:0F0:0?000000000000c3"),
    ],
)
def test_compressed_rle_matches_pycocotools(make, expected):
    mask = make()
    assert rle_encode(mask)["counts"] == expected
    assert np.array_equal(rle_decode({"size": list(mask.shape), "counts": expected}), mask)
    assert np.array_equal(rle_decode({"size": list(mask.shape), "counts": expected.encode()}), mask)


def test_long_compressed_rle_matches_pycocotools_digest():
    counts = rle_encode(_mask_c())["counts"]
    assert len(counts) == 6027
    assert hashlib.sha1(counts.encode()).hexdigest() == "bb9bbc275156dfdc8cf25d87e3c7b5bb355840ed"


@given(mask=masks, compressed=st.booleans())
def test_rle_round_trip(mask, compressed):
    rle = rle_encode(mask, compressed=compressed)
    assert rle["size"] == list(mask.shape)
    assert np.array_equal(rle_decode(rle), mask)
    counts = decompress_counts(rle["counts"]) if compressed else rle["counts"]
    assert sum(counts) == mask.size
    # Column-major runs, background first (COCO's convention).
    flat = mask.ravel(order="F")
    assert (counts[0] == 0) == bool(flat[0])


@given(counts=st.lists(st.integers(0, 5000), min_size=1, max_size=30))
def test_counts_compression_round_trip(counts):
    assert decompress_counts(compress_counts(counts)) == counts


def test_uncompressed_rle_is_column_major():
    mask = np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)
    assert rle_encode(mask, compressed=False)["counts"] == [2, 1, 1, 2]
    assert np.array_equal(rle_decode({"size": [2, 3], "counts": [2, 1, 1, 2]}), mask)


def test_polygon_parts_overlap_stays_foreground():
    first = [2, 2, 12, 2, 12, 12, 2, 12]
    second = [7, 7, 17, 7, 17, 17, 7, 17]
    union = polygons_to_mask([first, second], 20, 20)
    expected = polygons_to_mask([first], 20, 20) | polygons_to_mask([second], 20, 20)
    assert np.array_equal(union, expected)
    assert union[9, 9]  # inside both parts


def test_polygon_area_of_axis_aligned_rectangle():
    # Pillow fills the closed rectangle: columns 3..10 and rows 4..8 inclusive.
    mask = polygons_to_mask([[3, 4, 10, 4, 10, 8, 3, 8]], 16, 16)
    assert mask.sum() == 8 * 5
    assert mask[4:9, 3:11].all()


def test_degenerate_polygon_parts_are_empty():
    assert not polygons_to_mask([[1, 1, 5, 5]], 8, 8).any()


def test_segmentation_to_mask_accepts_every_coco_form():
    mask = _mask_a()
    polygon = [[1, 1, 4, 1, 4, 3, 1, 3]]
    assert np.array_equal(segmentation_to_mask(polygon, 5, 7), polygons_to_mask(polygon, 5, 7))
    assert np.array_equal(segmentation_to_mask(rle_encode(mask), 5, 7), mask)
    assert np.array_equal(segmentation_to_mask(rle_encode(mask, compressed=False), 5, 7), mask)
    other = np.zeros_like(mask)
    other[2, :] = True
    both = segmentation_to_mask([rle_encode(mask), rle_encode(other)], 5, 7)
    assert np.array_equal(both, mask | other)


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ({"size": [5, 7], "counts": [1, 2]}, "sum to 3"),
        ({"size": [4, 7], "counts": [28]}, "does not match"),
        ({"counts": [35]}, "'size' and 'counts'"),
        ([[1, 2, 3]], "even number"),
        ("abc", "polygons or RLE"),
    ],
)
def test_bad_segmentations_raise(segmentation, message):
    with pytest.raises(ValueError, match=message):
        segmentation_to_mask(segmentation, 5, 7)


def test_bad_compressed_counts_raise():
    with pytest.raises(ValueError, match="invalid character"):
        decompress_counts("0 1")
    with pytest.raises(ValueError, match="middle of a number"):
        decompress_counts("0n")
