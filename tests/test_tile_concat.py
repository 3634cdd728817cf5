"""TileConcatFusion, S2RM's Table IV "W. Tile & Concat." baseline: shapes, the literal reading, properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layer_checks import (
    assert_batch_independent,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    pad_words,
    perturb_sample,
)
from rislayers import ShapeError, TileConcatFusion


def make_inputs(b, c, h, w, l, d, *, real=None, dtype=torch.float32):
    lengths = real if real is not None else torch.randint(1, l + 1, (b,)).tolist()
    mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    return torch.randn(b, c, h, w, dtype=dtype), torch.randn(b, l, d, dtype=dtype), mask


@settings(max_examples=20)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 12),
    d=st.integers(1, 10),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    l=st.integers(1, 6),
)
def test_output_shape_and_finite(b, c, d, h, w, l):
    layer = TileConcatFusion(c, d).eval()
    feats, words, mask = make_inputs(b, c, h, w, l, d)
    out = layer(feats, words, mask)
    assert out.shape == (b, c, h, w) and out.dtype == feats.dtype
    assert_finite(out)
    assert layer(feats, words).shape == (b, c, h, w)  # word_mask=None: all real


def test_is_the_conv_of_the_tiled_concatenation():
    layer = TileConcatFusion(6, 4, dtype=torch.float64).eval()
    feats, words, mask = make_inputs(2, 6, 3, 5, 4, 4, real=[2, 4], dtype=torch.float64)
    with torch.no_grad():
        sentence = (words * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        tiled = sentence[:, :, None, None].expand(-1, -1, 3, 5)
        expected = torch.relu(layer.norm(layer.proj(torch.cat((feats, tiled), dim=1))))
        torch.testing.assert_close(layer(feats, words, mask), expected)


def test_the_sentence_changes_the_output():
    layer = TileConcatFusion(6, 4).eval()
    feats, words, mask = make_inputs(2, 6, 3, 3, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(layer(feats, words, mask), layer(feats, words + 1, mask))


def test_padding_words_do_not_change_the_output():
    layer = TileConcatFusion(8, 5).eval()
    feats, words, mask = make_inputs(3, 8, 4, 3, 5, 5, real=[2, 5, 1])
    padded_words, padded_mask = pad_words(words, mask, 3)
    padded_words[0, 3] = float("nan")  # garbage under the mask inside the sentence too
    padded_mask[0, 3] = False
    with torch.no_grad():
        torch.testing.assert_close(layer(feats, words, mask), layer(feats, padded_words, padded_mask))


def test_batch_independence_in_eval():
    layer = TileConcatFusion(8, 5).eval()
    feats, words, mask = make_inputs(3, 8, 4, 3, 5, 5, real=[2, 5, 3])
    inputs = {"feats": feats, "words": words}
    run = lambda x: layer(x["feats"], x["words"], mask)  # noqa: E731
    assert_batch_independent(run, inputs, perturb_sample, changed=1, watched=0)
    assert_batch_independent(run, inputs, perturb_sample, changed=0, watched=2)


@pytest.mark.parametrize("batch", [1, 2])
def test_all_padding_sentence_and_batch_of_one_are_finite(batch):
    layer = TileConcatFusion(8, 5).train()
    feats, words, _ = make_inputs(batch, 8, 3, 3, 4, 5)
    mask = torch.zeros(batch, 4, dtype=torch.bool)
    feats.requires_grad_()
    words.requires_grad_()
    out = layer(feats, words, mask)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([feats, words])
    assert_param_grads(layer, nonzero=False)
    assert words.grad.abs().sum() == 0  # nothing reached the output from padding


def test_every_parameter_gets_a_gradient():
    layer = TileConcatFusion(8, 5)
    backward_sum(layer(*make_inputs(3, 8, 3, 4, 5, 5)))
    assert_param_grads(layer)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^dim: "):
        TileConcatFusion(0, 4)
    with pytest.raises(ValueError, match=r"^text_dim: "):
        TileConcatFusion(4, -1)
    layer = TileConcatFusion(8, 5)
    with pytest.raises(ShapeError, match=r"^feats: .*c: 7 != 8"):
        layer(torch.randn(2, 7, 3, 3), torch.randn(2, 4, 5))
    with pytest.raises(ShapeError, match=r"^words: .*d: 4 != 5"):
        layer(torch.randn(2, 8, 3, 3), torch.randn(2, 4, 4))
