"""ShapeError messages, axis binding, the off switch, and torch.compile compatibility."""

from __future__ import annotations

import os
import subprocess
import sys

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
