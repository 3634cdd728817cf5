"""rislayers.ScaleWiseAggregator (ASDA's scale-wise feature aggregator, Eq. 4-5) and the released code's variant."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from rislayers.aggregator import PublishedScaleWiseAggregator, ScaleWiseAggregator
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


AGGREGATORS = {
    "paper": lambda: ScaleWiseAggregator(8, 6, hidden_dim=4),
    "published": lambda: PublishedScaleWiseAggregator(8, 6, hidden_dim=4),
}


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


@pytest.mark.parametrize("variant", list(AGGREGATORS))
def test_every_input_matters(variant):
    sfa = AGGREGATORS[variant]().eval()
    inputs = make_inputs()
    with torch.no_grad():
        base = sfa(**inputs)
        for name in inputs:
            changed = {**inputs, name: inputs[name] + torch.randn_like(inputs[name])}
            assert not torch.allclose(sfa(**changed), base), f"{name} does not affect the output"


@pytest.mark.parametrize("variant", list(AGGREGATORS))
def test_sentence_modulates_the_high_level_multiplicatively(variant):
    # Eq. 4: F_G = F_H * proj(f_E); a zero high level makes the sentence irrelevant.
    sfa = AGGREGATORS[variant]().eval()
    inputs = {**make_inputs(), "high": torch.zeros(2, 8, 5, 7)}
    with torch.no_grad():
        a = sfa(**inputs)
        b = sfa(**{**inputs, "sentence": torch.randn(2, 6)})
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("variant", list(AGGREGATORS))
def test_every_parameter_gets_a_gradient(variant):
    sfa = AGGREGATORS[variant]()
    inputs = make_inputs(requires_grad=True)
    backward_sum(sfa(**inputs))
    assert_param_grads(sfa)
    assert_inputs_grads_finite(inputs.values())


@pytest.mark.parametrize("variant", list(AGGREGATORS))
def test_batch_independence(variant):
    sfa = AGGREGATORS[variant]().eval()
    inputs = make_inputs(b=3)

    assert_batch_independent(lambda inp: sfa(**inp), inputs, perturb_sample, changed=1, watched=0)
    assert_batch_independent(lambda inp: sfa(**inp), inputs, perturb_sample, changed=0, watched=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant", ["max", "avg", "published"])
def test_dtype_kept_and_finite(dtype, variant):
    if variant == "published":
        sfa, size = PublishedScaleWiseAggregator(8, 6, hidden_dim=4, dtype=dtype), 3  # 4x the grid inside
    else:
        sfa, size = ScaleWiseAggregator(8, 6, hidden_dim=4, downsample=variant, dtype=dtype), 13
    inputs = make_inputs(h=size, w=size, dtype=dtype, requires_grad=True)
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


@pytest.mark.parametrize("variant", list(AGGREGATORS))
def test_shape_errors_name_the_argument(variant):
    sfa = AGGREGATORS[variant]()
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


# ------------------------------------------------------- the released code's SFA variant


def published(c=8, d=6, hidden=4, **options):
    return PublishedScaleWiseAggregator(c, d, hidden_dim=hidden, **options)


def record_lateral_sizes(sfa):
    sizes = []
    for lateral in sfa.lateral:
        lateral.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[-2:])))
    return sizes


@settings(max_examples=15)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 8),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    d=st.integers(1, 8),
    hidden=st.integers(1, 6),
)
def test_published_shapes_and_level_sizes_including_odd(b, c, h, w, d, hidden):
    sfa = published(c, d, hidden).eval()
    sizes = record_lateral_sizes(sfa)
    out = sfa(**make_inputs(b, c, h, w, d))
    assert out.shape == (b, c, h, w)
    assert_finite(out)
    assert sizes == [(h, w), (2 * h, 2 * w), (4 * h, 4 * w)]  # the grid, then the enlarged levels


def test_published_cost_is_the_sum_of_its_convolutions():
    b, c, d, hidden, h, w = 1, 8, 6, 4, 3, 5
    sfa = published(c, d, hidden).eval()
    n = h * w
    transposed = n * 4 * c * c + n * 4 * c * c + 4 * n * 4 * c * c  # mid 2x; low 2x then 2x
    laterals = (n + 4 * n + 16 * n) * c * hidden
    outputs = (n + 4 * n + 16 * n) * 9 * hidden * hidden
    expected = d * c + transposed + laterals + outputs + n * 3 * hidden * c
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sfa(**make_inputs(b, c, h, w, d))
    assert counter.get_total_flops() == 2 * expected


def test_published_batch_of_one_trains_and_a_single_pixel_runs_in_eval():
    sfa = published()
    inputs = make_inputs(b=1, h=2, w=2, requires_grad=True)
    out = sfa(**inputs)
    assert out.shape == (1, 8, 2, 2)
    backward_sum(out)
    assert_param_grads(sfa, nonzero=False)
    assert_inputs_grads_finite(inputs.values())
    with torch.no_grad():
        assert sfa.eval()(**make_inputs(b=1, h=1, w=1)).shape == (1, 8, 1, 1)


def test_published_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^hidden_dim: "):
        PublishedScaleWiseAggregator(8, 6, hidden_dim=0)
    with pytest.raises(ValueError, match=r"^dim: "):
        PublishedScaleWiseAggregator(0, 6)
