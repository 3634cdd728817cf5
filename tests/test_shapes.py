"""ShapeError messages, axis binding, the off switch, and torch.compile compatibility."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import rislayers
from rislayers import DynamicQueryRefiner, ShapeError, check_shape
from rislayers.shapes import check_mask, set_shape_checks


def test_design_example_message():
    axes = check_shape(torch.zeros(2, 30, 30, 512), "b h w c", name="feats")
    with pytest.raises(ShapeError) as info:
        check_shape(torch.zeros(2, 20, 512), "b l d", name="words", bound=axes, d=768)
    assert str(info.value) == "words: expected (b, l, d) with b=2, d=768; got (2, 20, 512) (d: 512 != 768)"


def test_shape_error_is_value_error():
    assert issubclass(ShapeError, ValueError)
    assert rislayers.ShapeError is ShapeError


def test_binding_across_arguments_names_batch_axis():
    axes = check_shape(torch.zeros(2, 8, 4, 4), "b c h w", name="feats")
    with pytest.raises(ShapeError, match=r"^words: .*\(b: 3 != 2\)$"):
        check_shape(torch.zeros(3, 5, 16), "b l d", name="words", bound=axes)


def test_wrong_rank_names_argument_and_counts():
    with pytest.raises(ShapeError, match=r"^feats: expected \(b, c, h, w\); got \(2, 8\) \(4 dims expected, got 2\)$"):
        check_shape(torch.zeros(2, 8), "b c h w", name="feats")


def test_literal_axis():
    check_shape(torch.zeros(2, 1, 3, 3), "b 1 h w", name="logits")
    with pytest.raises(ShapeError, match=r"logits: .*\(1: 2 != 1\)"):
        check_shape(torch.zeros(2, 2, 3, 3), "b 1 h w", name="logits")


def test_repeated_axis_must_agree():
    check_shape(torch.zeros(3, 3), "n n", name="affinity")
    with pytest.raises(ShapeError, match=r"affinity: .*\(n: 4 != 3\)"):
        check_shape(torch.zeros(3, 4), "n n", name="affinity")


def test_non_tensor_is_named():
    with pytest.raises(ShapeError, match=r"^sentence: expected a tensor of shape \(b, d\); got list$"):
        check_shape([1, 2], "b d", name="sentence")


def test_mask_dtype_and_shape():
    axes = check_shape(torch.zeros(2, 5, 4), "b l d", name="words")
    check_mask(None, name="word_mask", bound=axes)
    check_mask(torch.ones(2, 5, dtype=torch.bool), name="word_mask", bound=axes)
    with pytest.raises(TypeError, match="word_mask: expected a bool tensor"):
        check_mask(torch.ones(2, 5, dtype=torch.long), name="word_mask", bound=axes)
    with pytest.raises(ShapeError, match=r"word_mask: .*\(l: 6 != 5\)"):
        check_mask(torch.ones(2, 6, dtype=torch.bool), name="word_mask", bound=axes)


def test_switch_off_at_run_time():
    set_shape_checks(False)
    try:
        check_shape(torch.zeros(2), "b c h w", name="feats")
    finally:
        set_shape_checks(True)
    with pytest.raises(ShapeError):
        check_shape(torch.zeros(2), "b c h w", name="feats")


def test_environment_variable_switches_off():
    code = (
        "import torch, rislayers\n"
        "rislayers.check_shape(torch.zeros(2), 'b c h w', name='feats')\n"
        "print(rislayers.shapes.shape_checks_enabled())\n"
    )
    env = dict(os.environ, RISLAYERS_CHECK_SHAPES="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _checked_op(feats: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    axes = check_shape(feats, "b c h w", name="feats", c=4)
    check_shape(words, "b l d", name="words", bound=axes, d=3)
    return feats.sum(dim=(2, 3)) * words.sum()


def test_checks_compile_without_graph_break():
    torch._dynamo.reset()
    # fullgraph=True proves the passing checks trace into guards, not graph breaks
    compiled = torch.compile(_checked_op, fullgraph=True, backend="eager")
    feats, words = torch.randn(2, 4, 3, 3), torch.randn(2, 5, 3)
    torch.testing.assert_close(compiled(feats, words), _checked_op(feats, words))
    # a failing check still raises the user's ShapeError under default compile settings
    torch._dynamo.reset()
    with pytest.raises(ShapeError, match=r"^words: .*\(d: 7 != 3\)"):
        torch.compile(_checked_op, backend="eager")(feats, torch.randn(2, 5, 7))


def test_floating_inputs_name_the_argument_on_integer_dtypes():
    with pytest.raises(ShapeError, match="feats: expected a floating-point tensor; got dtype torch.int64"):
        check_shape(torch.zeros(2, 3, 4, 4, dtype=torch.long), "b c h w", name="feats", floating=True)
    assert check_shape(torch.zeros(2, 3, dtype=torch.bfloat16), "b c", name="x", floating=True) == {"b": 2, "c": 3}
    # Without the flag, integer tensors (ids, masks) pass.
    assert check_shape(torch.zeros(2, 3, dtype=torch.long), "b l", name="ids") == {"b": 2, "l": 3}


@pytest.mark.parametrize("dtype", [torch.long, torch.bool])
def test_layers_reject_integer_features_by_name(dtype):
    refiner = DynamicQueryRefiner(8, 6, num_iters=1, hidden_dims=(4,))
    feats = torch.zeros(1, 8, 4, 4, dtype=dtype)
    with pytest.raises(ShapeError, match=f"feats: expected a floating-point tensor; got dtype {dtype}"):
        refiner(feats, torch.randn(1, 3, 6), torch.ones(1, 3, dtype=torch.bool))


# ------------------------------------------------------------------ word_mask polarity


def _padding_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, rislayers.PaddingMaskWarning)]


def _right_padded(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def test_an_inverted_mask_warns_at_every_call_even_after_correct_ones():
    refiner = DynamicQueryRefiner(8, 6, num_iters=1, hidden_dims=(4,)).eval()
    feats, words, word_mask = torch.randn(2, 8, 3, 3), torch.randn(2, 5, 6), _right_padded([5, 2], 5)
    with torch.no_grad():
        for _ in range(2):  # correct masks, padded or not, settle nothing
            assert not _padding_warnings(lambda: refiner(feats, words, word_mask))
            assert not _padding_warnings(lambda: refiner(feats, words, _right_padded([5, 5], 5)))
        for _ in range(3):
            (message,) = _padding_warnings(lambda: refiner(feats, words, ~word_mask))
            assert message.startswith("word_mask: rows go False ... then True") and "~key_padding_mask" in message


@pytest.mark.parametrize("lengths", [[5, 5], [0, 3], [0]])
def test_a_row_without_a_real_token_warns_at_every_call_naming_the_rows(lengths):
    refiner = DynamicQueryRefiner(8, 6, num_iters=1, hidden_dims=(4,)).eval()
    feats, words = torch.randn(len(lengths), 8, 3, 3), torch.randn(len(lengths), 5, 6)
    # [5, 5] inverted is all padding (an inverted batch without padding); [0, 3] and [0] hold
    # an empty sentence: computed (finite), but it warns as well.
    mask = ~_right_padded(lengths, 5) if lengths == [5, 5] else _right_padded(lengths, 5)
    rows = "rows 0, 1 of 2 have" if lengths == [5, 5] else f"row 0 of {len(lengths)} has"
    with torch.no_grad():
        for _ in range(2):
            assert not _padding_warnings(lambda: refiner(feats, words, _right_padded([5] * len(lengths), 5)))
            (message,) = _padding_warnings(lambda: torch.isfinite(refiner(feats, words, mask).logits[0]).all())
            assert message.startswith(f"word_mask: {rows} no real token (all False)"), message
            assert "pass word_mask=~key_padding_mask" in message


def test_a_mask_changed_in_place_is_read_again():
    mask = _right_padded([5, 2], 5)
    assert not _padding_warnings(lambda: rislayers.shapes.warn_if_inverted(mask, name="word_mask"))
    mask[0] = False  # same tensor object, new contents: the cached reading must not be reused
    assert _padding_warnings(lambda: rislayers.shapes.warn_if_inverted(mask, name="word_mask"))
    with torch.inference_mode():  # no version counter: read at every call
        frozen = _right_padded([5, 2], 5)
        assert not _padding_warnings(lambda: rislayers.shapes.warn_if_inverted(frozen, name="word_mask"))
        frozen[1] = False
        assert _padding_warnings(lambda: rislayers.shapes.warn_if_inverted(frozen, name="word_mask"))


def _masked_op(words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    check_mask(word_mask, name="word_mask", bound=check_shape(words, "b l d", name="words"))
    return (words * word_mask[..., None]).sum(1)


def test_the_polarity_check_is_skipped_inside_torch_compile():
    torch._dynamo.reset()
    words, key_padding_mask = torch.randn(2, 5, 3), ~_right_padded([5, 2], 5)
    with pytest.warns(rislayers.PaddingMaskWarning):  # eager reads the values
        expected = _masked_op(words, key_padding_mask)
    # fullgraph=True: reading the mask would be a graph break (an error here); skipped, it warns not
    compiled = torch.compile(_masked_op, fullgraph=True, backend="eager")
    results = []
    assert not _padding_warnings(lambda: results.append(compiled(words, key_padding_mask)))
    torch.testing.assert_close(results[0], expected)
