"""Conventions a caller from another RIS codebase meets, checked on every layer that reads words.

- ``word_mask`` is True on real tokens; a right-padded ``key_padding_mask`` (True on padding)
  passed in its place warns, naming ``word_mask`` and the conversion; a correct mask never does.
- Whatever padded word positions hold (NaN, inf) never reaches the output or the gradients.
- A floating input of another dtype than the layer's parameters raises a TypeError naming the
  argument and both dtypes, except under autocast.
- The same keyword names everywhere: ``feats, words, word_mask``; the old names still work
  for a release, with a DeprecationWarning.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rislayers as R
from rislayers import PaddingMaskWarning
from rislayers.functional import masked_mean
from tests.layer_checks import assert_close_outputs, assert_finite, tensors_of

C, D, H, W = 8, 6, 3, 4

WORD_LAYERS = {
    "refiner": lambda: R.DynamicQueryRefiner(C, D, hidden_dims=(4, 8), pooling="soft"),
    "pixel_word": lambda: R.PixelWordAttention(C, D, num_heads=2),
    "coparser": lambda: R.SpatialRecurrentCoparser(C, D, size=(H, W)),
    "aligner": lambda: R.DualBranchAligner(C, D, num_masks=4, num_heads=2, upsample_steps=1, norm="group"),
}


def right_padded(lengths: list[int], length: int) -> torch.Tensor:
    """A correct word_mask: True on the first ``lengths[i]`` tokens of row ``i``."""
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def word_inputs(lengths: list[int], length: int, *, dtype=torch.float32):
    b = len(lengths)
    return torch.randn(b, C, H, W, dtype=dtype), torch.randn(b, length, D, dtype=dtype), right_padded(lengths, length)


def polarity_warnings(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, PaddingMaskWarning)]


# ------------------------------------------------------------------- mask polarity (item 2)


@pytest.mark.parametrize("name", list(WORD_LAYERS))
def test_an_inverted_mask_warns_at_every_call_naming_word_mask_and_the_conversion(name):
    layer = WORD_LAYERS[name]().eval()
    feats, words, word_mask = word_inputs([4, 2], 5)
    key_padding_mask = ~word_mask  # what nn.MultiheadAttention, CRIS and CLIP code hold
    with torch.no_grad():
        caught = polarity_warnings(lambda: layer(feats, words, key_padding_mask))
        assert len(caught) == 1
        message = str(caught[0].message)
        assert message.startswith("word_mask: ") and "~key_padding_mask" in message
        assert caught[0].filename == __file__  # points at the caller, not at rislayers
        # at every call: a correct mask in between settles nothing
        assert len(polarity_warnings(lambda: layer(feats, words, key_padding_mask))) == 1
        assert not polarity_warnings(lambda: layer(feats, words, word_mask))
        assert len(polarity_warnings(lambda: layer(feats, words, key_padding_mask))) == 1


def test_masked_mean_warns_too():
    words, word_mask = torch.randn(2, 5, D), right_padded([3, 5], 5)
    caught = polarity_warnings(lambda: masked_mean(words, ~word_mask))
    assert len(caught) == 1 and str(caught[0].message).startswith("word_mask: ")


@settings(max_examples=10)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4), length=st.integers(2, 6))
def test_correct_right_padded_masks_warn_only_for_an_empty_sentence_and_inverted_ones_do(lengths, length):
    lengths = [min(n, length) for n in lengths]
    layer = WORD_LAYERS["refiner"]().eval()
    feats, words, word_mask = word_inputs(lengths, length)
    with torch.no_grad():
        correct = polarity_warnings(lambda: layer(feats, words, word_mask))
        caught = polarity_warnings(lambda: layer(feats, words, ~word_mask))
    # A row without a real word (an empty sentence) warns, being most likely an inverted mask.
    assert len(correct) == int(0 in lengths)
    # An inverted mask is recognisable when a sentence is not empty: it rises (padded) or
    # has no real word (full length).
    assert len(caught) == int(any(n > 0 for n in lengths))


def test_a_mask_without_padding_keeps_checking_until_padding_shows_up():
    layer = WORD_LAYERS["pixel_word"]().eval()
    feats, words, _ = word_inputs([5, 5], 5)
    with torch.no_grad():
        assert not polarity_warnings(lambda: layer(feats, words, right_padded([5, 5], 5)))
        assert len(polarity_warnings(lambda: layer(feats, words, ~right_padded([3, 5], 5)))) == 1


# ------------------------------------------------------------- padding contents (item 3)


@settings(max_examples=12)
@given(
    name=st.sampled_from(list(WORD_LAYERS)),
    lengths=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    fill=st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e30]),
)
def test_nan_and_inf_in_padded_words_never_reach_the_output(name, lengths, fill):
    layer = WORD_LAYERS[name]().eval()
    feats, words, word_mask = word_inputs(lengths, 5)
    clean = torch.where(word_mask[..., None], words, 0.0)
    dirty = torch.where(word_mask[..., None], words, fill)
    with torch.no_grad():
        expected = layer(feats, clean, word_mask)
        got = layer(feats, dirty, word_mask)
    assert_finite(got)
    for a, b in zip(tensors_of(got), tensors_of(expected)):
        assert torch.equal(a, b)  # the padding is selected away, not multiplied by zero


@pytest.mark.parametrize("name", list(WORD_LAYERS))
def test_nan_padding_leaves_the_gradients_finite(name):
    layer = WORD_LAYERS[name]()
    feats, words, word_mask = word_inputs([3, 0], 5)
    words = torch.where(word_mask[..., None], words, float("nan")).requires_grad_()
    out = layer(feats, words, word_mask)
    sum(t.float().sum() for t in tensors_of(out) if t.is_floating_point()).backward()
    assert torch.isfinite(words.grad).all()
    for param_name, param in layer.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), param_name


def test_masked_mean_ignores_nan_padding():
    words, word_mask = torch.randn(2, 4, D), right_padded([2, 0], 4)
    dirty = torch.where(word_mask[..., None], words, float("nan"))
    torch.testing.assert_close(masked_mean(dirty, word_mask), masked_mean(words, word_mask))


# --------------------------------------------------------------------- dtypes (item 4)


def every_layer_call() -> dict[str, tuple]:
    """Each public layer with float32 inputs, and the name of its first tensor argument."""
    feats, words, word_mask = word_inputs([4, 2], 5)
    pyramid = [torch.randn(2, c, s, s) for c, s in ((4, 8), (4, 4), (4, 2), (8, 1))]
    return {
        **{name: (build(), (feats, words, word_mask), "feats") for name, build in WORD_LAYERS.items()},
        "gate": (R.LanguageGate(C), (feats, feats), "x"),
        "selector": (R.AdaptiveLayerSelector(C, D, num_candidates=2), (torch.randn(2, 2, C, H, W), torch.randn(2, 2, C), torch.randn(2, D)), "candidates"),
        "aggregator": (R.ScaleWiseAggregator(C, D, hidden_dim=4), (feats, feats, feats, torch.randn(2, D)), "high"),
        "casg_stage": (R.CASGStage(C, (4,), D), (feats, [pyramid[1]], torch.randn(2, D)), "vis"),
        "casg_decoder": (R.CASGDecoder((4, 4, 4, 8), D), (pyramid, torch.randn(2, D)), r"features\[0\]"),
        "concat_fusion": (R.ConcatProjectFusion((C, 4), D, 8), ([feats, torch.randn(2, 4, 6, 8)], torch.randn(2, D)), r"maps\[0\]"),
        "published_aggregator": (R.PublishedScaleWiseAggregator(C, D, hidden_dim=4), (feats, feats, feats, torch.randn(2, D)), "high"),
    }


def cast_first(args: tuple, dtype: torch.dtype) -> tuple:
    first = args[0]
    first = [t.to(dtype) for t in first] if isinstance(first, list) else first.to(dtype)
    return (first, *args[1:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("name", list(every_layer_call()))
def test_a_dtype_mismatch_names_the_argument_and_both_dtypes(name, dtype):
    layer, args, argument = every_layer_call()[name]
    with pytest.raises(TypeError, match=rf"^{argument}: expected dtype torch.float32 .*got {dtype}"):
        layer.eval()(*cast_first(args, dtype))


def test_the_text_inputs_are_checked_too():
    layer, (feats, words, word_mask), _ = every_layer_call()["aligner"]
    with pytest.raises(TypeError, match=r"^words: expected dtype torch.float32 .*got torch.float64"):
        layer(feats, words.double(), word_mask)
    with pytest.raises(TypeError, match=r"^sentence: expected dtype torch.float32 .*got torch.float64"):
        R.DynamicQueryRefiner(C, D)(feats, sentence=torch.randn(2, D, dtype=torch.float64))


@pytest.mark.parametrize("name", list(every_layer_call()))
def test_under_autocast_other_dtypes_still_run(name):
    layer, args, _ = every_layer_call()[name]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert_finite(layer.eval()(*cast_first(args, torch.bfloat16)))


# ------------------------------------------------------------------ keyword names (item 8)


@pytest.mark.parametrize("name", list(WORD_LAYERS))
def test_every_word_layer_takes_feats_words_word_mask_keywords(name):
    layer = WORD_LAYERS[name]().eval()
    feats, words, word_mask = word_inputs([4, 2], 5)
    with torch.no_grad():
        assert_close_outputs(layer(feats=feats, words=words, word_mask=word_mask), layer(feats, words, word_mask))


@pytest.mark.parametrize(("name", "old", "method"), [("pixel_word", "vis", None), ("coparser", "vis", None), ("coparser", "vis", "distribute"), ("aligner", "coarse", None)])
def test_old_keyword_names_work_for_a_release_with_a_deprecation_warning(name, old, method):
    layer = WORD_LAYERS[name]().eval()
    call = getattr(layer, method) if method else layer
    feats, words, word_mask = word_inputs([4, 2], 5)
    with torch.no_grad():
        expected = call(feats=feats, words=words, word_mask=word_mask)
        with pytest.warns(DeprecationWarning, match=rf"^{old}: renamed to 'feats'"):
            got = call(**{old: feats}, words=words, word_mask=word_mask)
        assert_close_outputs(got, expected)
        with pytest.raises(TypeError, match=r"^feats: given twice"):
            call(**{old: feats}, feats=feats, words=words)


def test_deep_supervision_loss_takes_a_refiner_output():
    refiner = R.DynamicQueryRefiner(C, D, hidden_dims=(4,))
    feats, words, word_mask = word_inputs([4, 2], 5)
    out = refiner(feats, words, word_mask)
    target = torch.rand(2, 12, 16) > 0.5
    criterion = R.DeepSupervisionLoss()
    torch.testing.assert_close(criterion(out, target), criterion(out.logits, target))
