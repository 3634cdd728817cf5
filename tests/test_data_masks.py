"""COCO mask codecs: polygon rasterisation and run-length encodings (compressed and plain)."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from reference_models.data.masks import (
    check_segmentation,
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


# Strings produced by pycocotools.mask.encode on the same masks (recorded once, and
# re-checked against the installed pycocotools by test_rle_matches_pycocotools below).
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


@given(mask=masks)
def test_rle_matches_pycocotools(mask):
    from pycocotools import mask as coco_mask

    expected = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle_encode(mask)["counts"] == expected["counts"].decode()
    assert np.array_equal(rle_decode(expected), mask)


def test_recorded_rle_strings_are_pycocotools_output():
    from pycocotools import mask as coco_mask

    for make in (_mask_a, _mask_b, _mask_c):
        mask = make()
        assert rle_encode(mask)["counts"] == coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


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
    # A pixel is inside when its centre is: the rectangle [3, 10) x [4, 8) exactly.
    mask = polygons_to_mask([[3, 4, 10, 4, 10, 8, 3, 8]], 16, 16)
    assert mask.sum() == 7 * 4
    assert mask[4:8, 3:10].all()


def _coco_decode(polygons, height, width):
    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():
        # pycocotools' decode trips NumPy 2's copy-keyword deprecation; not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))).astype(bool)


coordinates = st.one_of(
    st.integers(-4, 52).map(float),
    st.floats(-4, 52, allow_nan=False).map(lambda v: round(v, 2)),  # COCO keeps two decimals
)


@given(
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    parts=st.lists(st.lists(st.tuples(coordinates, coordinates), min_size=3, max_size=12), min_size=1, max_size=3),
)
def test_polygons_match_pycocotools(height, width, parts):
    polygons = [[v for point in part for v in point] for part in parts]
    assert np.array_equal(polygons_to_mask(polygons, height, width), _coco_decode(polygons, height, width))


def test_polygons_match_pycocotools_on_many_random_shapes():
    # Hypothesis draws a dozen cases in CI; this sweeps many more, seeded: repeated vertices,
    # self-intersections, parts outside the image, negative and sub-pixel coordinates.
    rng = np.random.default_rng(7)
    for trial in range(400):
        height, width = (int(v) for v in rng.integers(1, 40, size=2))
        polygons = []
        for _ in range(int(rng.integers(1, 4))):
            points = rng.uniform(-3, max(height, width) + 3, size=(int(rng.integers(3, 14)), 2))
            points = points.round(int(rng.integers(0, 3)))
            if trial % 5 == 0:
                points[1] = points[0]
            polygons.append(points.ravel().tolist())
        expected = _coco_decode(polygons, height, width)
        assert np.array_equal(polygons_to_mask(polygons, height, width), expected), (height, width, polygons)


def test_polygon_parts_may_be_arrays():
    parts = [[1, 1, 6, 1, 6, 5], [2.5, 2, 7, 2, 7, 7.5, 2.5, 7.5]]
    expected = polygons_to_mask(parts, 9, 9)
    assert expected.any()
    assert np.array_equal(polygons_to_mask([np.array(p) for p in parts], 9, 9), expected)
    assert np.array_equal(segmentation_to_mask([np.array(p) for p in parts], 9, 9), expected)


def test_polygon_rejects_bad_numbers():
    with pytest.raises(ValueError, match=r"polygons\[0\]: expected finite coordinates"):
        polygons_to_mask([[0, 0, float("nan"), 1, 2, 2]], 4, 4)
    with pytest.raises(ValueError, match=r"polygons\[1\]: expected numbers"):
        polygons_to_mask([[0, 0, 1, 1, 2, 2], ["a", 0, 1, 1, 2, 2]], 4, 4)
    with pytest.raises(ValueError, match="height, width: expected integer sizes"):
        polygons_to_mask([[0, 0, 1, 1, 2, 2]], 4.5, 4)
    with pytest.raises(ValueError, match=r"polygons\[0\]: coordinates up to 1e\+12 lie far outside the 4x4 image"):
        polygons_to_mask([[0, 0, 1e12, 1, 2, 2]], 4, 4)


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


_numbers = st.one_of(
    st.integers(-50, 50), st.floats(width=32), st.text(max_size=2), st.none(), st.booleans(), st.lists(st.integers(0, 3), max_size=2)
)
_rles = st.fixed_dictionaries(
    {
        "size": st.one_of(st.just([4, 5]), st.lists(st.one_of(st.integers(-1, 6), st.none(), st.floats(0, 6)), max_size=3), st.none(), st.text(max_size=2)),
        "counts": st.one_of(
            st.text(alphabet="0123456789:;<=>?@ABCDEFGHIJ\x7f", max_size=6),
            st.lists(st.one_of(st.integers(-2, 25), st.floats(0, 20), st.none()), max_size=5),
            st.none(),
        ),
    }
)
_segmentations = st.one_of(
    st.lists(st.one_of(st.lists(_numbers, max_size=10), st.text(max_size=3), st.none(), _rles), max_size=3),
    _rles,
    st.lists(_rles, max_size=2),
    st.text(max_size=3),
    st.none(),
    st.integers(),
)


@given(segmentation=_segmentations)
def test_check_segmentation_refuses_exactly_what_decoding_refuses(segmentation):
    # The pre-flight checks every annotation with check_segmentation instead of rasterising it:
    # it must pass exactly the segmentations that decode, and decoding must fail only with
    # ValueError (any other exception fails this test).
    try:
        segmentation_to_mask(segmentation, 4, 5)
        decodes = True
    except ValueError:
        decodes = False
    try:
        check_segmentation(segmentation, 4, 5)
        passes = True
    except ValueError:
        passes = False
    assert passes == decodes


def test_an_rle_of_the_wrong_size_is_refused_before_it_is_decoded():
    # 100000 x 100000 would be ten gigabytes of mask; the size check comes first.
    with pytest.raises(ValueError, match=r"RLE size \[100000, 100000\] does not match the image size \[4, 5\]"):
        segmentation_to_mask({"size": [100_000, 100_000], "counts": [10**10]}, 4, 5)
