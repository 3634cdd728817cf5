"""rislayers.functional: masked pooling and position features."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rislayers import ShapeError
from rislayers.functional import (
    coord_features,
    masked_avg_pool2d,
    masked_mean,
    masked_softmax,
    sine_position_encoding_2d,
)


@given(b=st.integers(1, 4), l=st.integers(1, 7), d=st.integers(1, 9), extra=st.integers(1, 4), data=st.data())
def test_masked_mean_matches_mean_of_real_words_and_ignores_padding(b, l, d, extra, data):
    lengths = data.draw(st.lists(st.integers(1, l), min_size=b, max_size=b))
    words = torch.randn(b, l + extra, d, dtype=torch.float64)
    mask = torch.zeros(b, l + extra, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    expected = torch.stack([words[i, :n].mean(dim=0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(masked_mean(words, mask), expected)
    # garbage in padding positions changes nothing
    words2 = words.clone()
    words2[~mask] = 1e6
    torch.testing.assert_close(masked_mean(words2, mask), expected)


def test_masked_mean_all_padding_is_zero_with_finite_grad():
    words = torch.randn(2, 4, 3, requires_grad=True)
    out = masked_mean(words, torch.zeros(2, 4, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2, 3))
    out.sum().backward()
    assert torch.isfinite(words.grad).all()


def test_masked_mean_none_is_plain_mean():
    words = torch.randn(2, 4, 3)
    torch.testing.assert_close(masked_mean(words), words.mean(dim=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_avg_pool_empty_mask_zero_and_dtype(dtype):
    feats = torch.randn(2, 5, 3, 4, dtype=dtype, requires_grad=True)
    weights = torch.zeros(2, 3, 4, dtype=dtype, requires_grad=True)
    out = masked_avg_pool2d(feats, weights)
    assert out.dtype == dtype
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(feats.grad).all() and torch.isfinite(weights.grad).all()


@given(b=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6))
def test_masked_avg_pool_hard_mask_is_mean_over_selected(b, c, h, w):
    feats = torch.randn(b, c, h, w, dtype=torch.float64)
    mask = torch.rand(b, h, w) > 0.5
    out = masked_avg_pool2d(feats, mask)
    for i in range(b):
        sel = feats[i][:, mask[i]]
        expected = sel.mean(dim=1) if sel.shape[1] else torch.zeros(c, dtype=torch.float64)
        torch.testing.assert_close(out[i], expected)
    torch.testing.assert_close(masked_avg_pool2d(feats, mask[:, None]), out)


def test_masked_avg_pool_shape_error_names_weights():
    with pytest.raises(ShapeError, match=r"^weights: .*\(h: 5 != 3\)"):
        masked_avg_pool2d(torch.randn(2, 4, 3, 3), torch.ones(2, 5, 3))


def test_coord_features_values():
    coords = coord_features(2, 2, 4)
    assert coords.shape == (2, 8, 2, 4)
    # x_min, x_max and centre of column 0 and 3 of a width-4 map
    assert coords[0, 0, 0].tolist() == [-1.0, -0.5, 0.0, 0.5]
    assert coords[0, 2, 0].tolist() == [-0.5, 0.0, 0.5, 1.0]
    assert coords[0, 4, 0].tolist() == [-0.75, -0.25, 0.25, 0.75]
    assert coords[0, 1, :, 0].tolist() == [-1.0, 0.0]
    assert coords[0, 3, :, 0].tolist() == [0.0, 1.0]
    assert torch.all(coords[:, 6] == 0.25) and torch.all(coords[:, 7] == 0.5)
    assert torch.equal(coords[0], coords[1])


def test_coord_features_rejects_bad_size():
    with pytest.raises(ValueError, match="height"):
        coord_features(1, 0, 3)


@given(h=st.integers(1, 9), w=st.integers(1, 9), quarter=st.integers(1, 8))
def test_sine_encoding_shape_range_and_distinct_positions(h, w, quarter):
    dim = 4 * quarter
    pe = sine_position_encoding_2d(h, w, dim)
    assert pe.shape == (dim, h, w)
    assert pe.abs().max() <= 1.0 + 1e-6
    flat = pe.flatten(1).T  # (n, c)
    if h * w > 1:
        dists = torch.cdist(flat, flat) + torch.eye(h * w) * 10
        assert dists.min() > 1e-4, "two positions share an encoding"


def test_sine_encoding_first_channels_encode_rows():
    pe = sine_position_encoding_2d(3, 5, 8, normalize=False)
    # y half is constant along a row, x half constant along a column
    assert torch.allclose(pe[:4], pe[:4, :, :1].expand(-1, -1, 5))
    assert torch.allclose(pe[4:], pe[4:, :1, :].expand(-1, 3, -1))
    assert math.isclose(pe[0, 0, 0].item(), math.sin(1.0), rel_tol=1e-6)
    assert math.isclose(pe[1, 0, 0].item(), math.cos(1.0), rel_tol=1e-6)


def test_sine_encoding_rejects_bad_dim():
    with pytest.raises(ValueError, match="dim: expected a positive multiple of 4; got 6"):
        sine_position_encoding_2d(2, 2, 6)


# -- masked_softmax: the one word softmax of the layers --------------------------------


def _reference_softmax(scores, mask):
    """The rule spelled out: softmax over the real words, 0 on padding, 0 for an empty sentence."""
    out = torch.zeros_like(scores, dtype=torch.float32)
    for i in range(scores.shape[0]):
        keep = mask[i]
        if keep.any():
            out[i][..., keep] = scores[i][..., keep].float().softmax(dim=-1)
    return out


@given(b=st.integers(1, 3), n=st.integers(1, 4), l=st.integers(1, 6), data=st.data())
def test_masked_softmax_matches_the_rule_and_ignores_padding_values(b, n, l, data):
    lengths = data.draw(st.lists(st.integers(0, l), min_size=b, max_size=b))
    mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    scores = torch.randn(b, n, l)
    scores = torch.where(mask[:, None, :], scores, torch.tensor(float("nan")))  # padding holds NaN
    weights = masked_softmax(scores, mask)
    assert torch.allclose(weights, _reference_softmax(scores, mask), atol=1e-6)
    assert torch.isfinite(weights).all()


def test_masked_softmax_over_another_axis_and_in_half_precision():
    mask = torch.tensor([[True, False, True]])
    scores = torch.zeros(1, 3, 2, dtype=torch.bfloat16)  # words on axis 1
    weights = masked_softmax(scores, mask, dim=1)
    assert weights.dtype == torch.float32
    assert weights[0, :, 0].tolist() == [0.5, 0.0, 0.5]
    assert torch.equal(masked_softmax(scores, None, dim=1), scores.float().softmax(dim=1))


def test_masked_softmax_all_padding_row_has_finite_gradients():
    scores = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[False] * 4, [True, True, False, False]])
    masked_softmax(scores, mask).sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[0].abs().sum() == 0


def test_masked_softmax_checks_the_mask_against_the_scores():
    with pytest.raises(ShapeError, match=r"^word_mask: expected \(b, l\)"):
        masked_softmax(torch.zeros(2, 3, 4), torch.ones(2, 5, dtype=torch.bool))
