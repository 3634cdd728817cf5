"""rislayers.ScaleWiseAggregator: ASDA's scale-wise feature aggregator (Eq. 4-5)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rislayers.aggregator import ScaleWiseAggregator
from rislayers.shapes import ShapeError
from tests.layer_checks import (
    assert_batch_independent,
    assert_compile_matches_eager,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    perturb_sample,
)


def make_inputs(b=2, c=8, h=5, w=7, d=6, *, dtype=torch.float32, requires_grad=False):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)

    return {"high": rand(b, c, h, w), "mid": rand(b, c, h, w), "low": rand(b, c, h, w), "sentence": rand(b, d)}


def record_input_sizes(sfa):
    sizes = {}

    def hook(name):
        def record(module, args):
            sizes[name] = tuple(args[0].shape[-2:])

        return record

    sfa.low_reduce.register_forward_pre_hook(hook("low"))
    sfa.mid_lateral.register_forward_pre_hook(hook("mid"))
    sfa.global_lateral.register_forward_pre_hook(hook("high"))
    return sizes


@given(
    b=st.integers(1, 3),
    c=st.integers(1, 12),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    d=st.integers(1, 10),
    hidden=st.integers(1, 8),
    downsample=st.sampled_from(["max", "avg"]),
    upsample_mode=st.sampled_from(["nearest", "bilinear"]),
)
def test_shapes_over_sizes_including_odd(b, c, h, w, d, hidden, downsample, upsample_mode):
    sfa = ScaleWiseAggregator(c, d, hidden_dim=hidden, downsample=downsample, upsample_mode=upsample_mode)
    sizes = record_input_sizes(sfa)
    out = sfa(**make_inputs(b, c, h, w, d))
    assert out.shape == (b, c, h, w)
    assert_finite(out)
    mid = (math.ceil(h / 2), math.ceil(w / 2))
    assert sizes == {"high": (h, w), "mid": mid, "low": (math.ceil(mid[0] / 2), math.ceil(mid[1] / 2))}


@pytest.mark.parametrize("size", [13, 26])
def test_vit_b16_grid_sizes(size):
    sfa = ScaleWiseAggregator(8, 6, hidden_dim=4)
    sizes = record_input_sizes(sfa)
    assert sfa(**make_inputs(1, 8, size, size, 6)).shape == (1, 8, size, size)
    assert sizes["mid"] == ((size + 1) // 2,) * 2


def test_every_input_matters():
    sfa = ScaleWiseAggregator(8, 6, hidden_dim=4).eval()
    inputs = make_inputs()
    with torch.no_grad():
        base = sfa(**inputs)
        for name in inputs:
            changed = {**inputs, name: inputs[name] + torch.randn_like(inputs[name])}
            assert not torch.allclose(sfa(**changed), base), f"{name} does not affect the output"


def test_sentence_modulates_the_high_level_multiplicatively():
    # Eq. 4: F_G = F_H * proj(f_E); a zero high level makes the sentence irrelevant.
    sfa = ScaleWiseAggregator(8, 6, hidden_dim=4).eval()
    inputs = {**make_inputs(), "high": torch.zeros(2, 8, 5, 7)}
    with torch.no_grad():
        a = sfa(**inputs)
        b = sfa(**{**inputs, "sentence": torch.randn(2, 6)})
    torch.testing.assert_close(a, b)


def test_every_parameter_gets_a_gradient():
    sfa = ScaleWiseAggregator(8, 6, hidden_dim=4)
    inputs = make_inputs(requires_grad=True)
    backward_sum(sfa(**inputs))
    assert_param_grads(sfa)
    assert_inputs_grads_finite(inputs.values())


def test_batch_independence():
    sfa = ScaleWiseAggregator(8, 6, hidden_dim=4).eval()
    inputs = make_inputs(b=3)

    assert_batch_independent(lambda inp: sfa(**inp), inputs, perturb_sample, changed=1, watched=0)
    assert_batch_independent(lambda inp: sfa(**inp), inputs, perturb_sample, changed=0, watched=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("downsample", ["max", "avg"])
def test_dtype_kept_and_finite(dtype, downsample):
    sfa = ScaleWiseAggregator(8, 6, hidden_dim=4, downsample=downsample, dtype=dtype)
    inputs = make_inputs(h=13, w=13, dtype=dtype, requires_grad=True)
    out = sfa(**inputs)
    assert out.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite(inputs.values())


def test_batch_of_one_and_single_pixel():
    sfa = ScaleWiseAggregator(8, 6, hidden_dim=4)
    inputs = make_inputs(b=1, h=1, w=1, requires_grad=True)
    out = sfa(**inputs)
    assert out.shape == (1, 8, 1, 1)
    backward_sum(out)
    assert_param_grads(sfa, nonzero=False)
    assert_inputs_grads_finite(inputs.values())


def test_shape_errors_name_the_argument():
    sfa = ScaleWiseAggregator(8, 6)
    inputs = make_inputs()
    with pytest.raises(ShapeError, match=r"^mid: .*\(h: 4 != 5\)"):
        sfa(**{**inputs, "mid": torch.randn(2, 8, 4, 7)})
    with pytest.raises(ShapeError, match=r"^high: .*\(c: 9 != 8\)"):
        sfa(**{**inputs, "high": torch.randn(2, 9, 5, 7)})
    with pytest.raises(ShapeError, match=r"^low: .*\(b: 3 != 2\)"):
        sfa(**{**inputs, "low": torch.randn(3, 8, 5, 7)})
    with pytest.raises(ShapeError, match=r"^sentence: .*\(d: 4 != 6\)"):
        sfa(**{**inputs, "sentence": torch.randn(2, 4)})


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="hidden_dim"):
        ScaleWiseAggregator(8, 6, hidden_dim=0)
    with pytest.raises(ValueError, match="downsample"):
        ScaleWiseAggregator(8, 6, downsample="stride")
    with pytest.raises(ValueError, match="upsample_mode"):
        ScaleWiseAggregator(8, 6, upsample_mode="cubic")


def test_torch_compile_matches_eager():
    assert_compile_matches_eager(ScaleWiseAggregator(8, 6, hidden_dim=4).eval(), **make_inputs(h=7, w=6))
