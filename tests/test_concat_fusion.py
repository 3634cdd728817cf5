"""ConcatProjectFusion, CRIS's concatenation and projection (ASDA Table 2 (a)-(c)): shapes, the literal reading, properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rislayers import ConcatProjectFusion, ShapeError
from tests.layer_checks import (
    assert_batch_independent,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    perturb_sample,
)

DIMS = (8, 4, 6)
TEXT = 5


def make_inputs(b=2, dims=DIMS, sizes=((3, 4), (3, 4), (6, 8)), d=TEXT, *, dtype=torch.float32, requires_grad=False):
    maps = [torch.randn(b, c, *size, dtype=dtype, requires_grad=requires_grad) for c, size in zip(dims, sizes)]
    return {"maps": maps, "sentence": torch.randn(b, d, dtype=dtype, requires_grad=requires_grad)}


@settings(max_examples=20)
@given(
    b=st.integers(1, 3),
    dims=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    d=st.integers(1, 6),
    out_dim=st.integers(1, 8),
    norm=st.sampled_from(["batch", "group", "none"]),
    data=st.data(),
)
def test_output_shape_over_sizes_including_one_map(b, dims, d, out_dim, norm, data):
    sizes = [(data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))) for _ in dims]
    fusion = ConcatProjectFusion(dims, d, out_dim, norm=norm).eval()
    out = fusion(**make_inputs(b, dims, sizes, d))
    assert out.shape == (b, out_dim, *sizes[0])
    assert_finite(out)


def test_is_the_projection_of_the_modulated_and_resized_concatenation():
    fusion = ConcatProjectFusion(DIMS, TEXT, 7, dtype=torch.float64).eval()
    inputs = make_inputs(dtype=torch.float64)
    high, mid, low = inputs["maps"]
    with torch.no_grad():
        modulated = high * fusion.text_proj(inputs["sentence"])[:, :, None, None]
        low_resized = F.interpolate(low, size=(3, 4), mode="bilinear", align_corners=False)
        conv, norm, _ = fusion.proj
        expected = torch.relu(norm(conv(torch.cat((modulated, mid, low_resized), dim=1))))
        torch.testing.assert_close(fusion(**inputs), expected)


def test_one_map_is_the_table_2a_baseline():
    fusion = ConcatProjectFusion((8,), TEXT, 6, norm="none", dtype=torch.float64)
    high, sentence = torch.randn(2, 8, 3, 3, dtype=torch.float64), torch.randn(2, TEXT, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.relu(fusion.proj[0](high * fusion.text_proj(sentence)[:, :, None, None]))
        torch.testing.assert_close(fusion([high], sentence), expected)


def test_the_sentence_reaches_only_the_high_level_map():
    fusion = ConcatProjectFusion(DIMS, TEXT, 7).eval()
    inputs = make_inputs()
    zero_high = {**inputs, "maps": [torch.zeros_like(inputs["maps"][0]), *inputs["maps"][1:]]}
    with torch.no_grad():
        assert not torch.allclose(fusion(**inputs), fusion(**{**inputs, "sentence": torch.randn(2, TEXT)}))
        # F_H * f_E: with a zero high-level map the sentence has nothing to modulate
        torch.testing.assert_close(fusion(**zero_high), fusion(**{**zero_high, "sentence": torch.randn(2, TEXT)}))


def test_every_map_matters():
    fusion = ConcatProjectFusion(DIMS, TEXT, 7).eval()
    inputs = make_inputs()
    with torch.no_grad():
        base = fusion(**inputs)
        for i in range(len(DIMS)):
            maps = list(inputs["maps"])
            maps[i] = maps[i] + torch.randn_like(maps[i])
            assert not torch.allclose(fusion(**{**inputs, "maps": maps}), base), f"maps[{i}] does not affect the output"


def test_batch_independence_in_eval():
    fusion = ConcatProjectFusion(DIMS, TEXT, 7).eval()
    inputs = make_inputs(b=3)
    run = lambda x: fusion(**x)  # noqa: E731
    assert_batch_independent(run, inputs, perturb_sample, changed=1, watched=0)
    assert_batch_independent(run, inputs, perturb_sample, changed=0, watched=2)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_every_parameter_gets_a_gradient(norm):
    fusion = ConcatProjectFusion(DIMS, TEXT, 7, norm=norm)
    inputs = make_inputs(requires_grad=True)
    backward_sum(fusion(**inputs))
    assert_param_grads(fusion)
    assert_inputs_grads_finite([*inputs["maps"], inputs["sentence"]])


def test_batch_of_one_single_pixel_trains_with_group_norm():
    fusion = ConcatProjectFusion(DIMS, TEXT, 7, norm="group").train()
    inputs = make_inputs(b=1, sizes=((1, 1), (1, 1), (2, 2)), requires_grad=True)
    out = fusion(**inputs)
    assert out.shape == (1, 7, 1, 1)
    assert_finite(out)
    backward_sum(out)
    assert_param_grads(fusion, nonzero=False)
    assert_inputs_grads_finite([*inputs["maps"], inputs["sentence"]])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_dtype_kept_and_finite(dtype, norm):
    fusion = ConcatProjectFusion(DIMS, TEXT, 7, norm=norm, dtype=dtype)
    inputs = make_inputs(dtype=dtype, requires_grad=True)
    out = fusion(**inputs)
    assert out.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([*inputs["maps"], inputs["sentence"]])


def test_shape_errors_name_the_argument():
    fusion = ConcatProjectFusion(DIMS, TEXT, 7)
    inputs = make_inputs()
    maps = inputs["maps"]
    with pytest.raises(ShapeError, match=r"^maps: expected a sequence of 3 maps .*got length 2"):
        fusion(maps[:2], inputs["sentence"])
    with pytest.raises(ShapeError, match=r"^maps: expected a sequence of 3 maps .*got Tensor"):
        fusion(maps[0], inputs["sentence"])
    with pytest.raises(ShapeError, match=r"^maps\[0\]: .*\(c: 9 != 8\)"):
        fusion([torch.randn(2, 9, 3, 4), *maps[1:]], inputs["sentence"])
    with pytest.raises(ShapeError, match=r"^maps\[2\]: .*\(c: 4 != 6\)"):
        fusion([*maps[:2], torch.randn(2, 4, 6, 8)], inputs["sentence"])
    with pytest.raises(ShapeError, match=r"^maps\[1\]: .*\(b: 3 != 2\)"):
        fusion([maps[0], torch.randn(3, 4, 3, 4), maps[2]], inputs["sentence"])
    with pytest.raises(ShapeError, match=r"^sentence: .*\(d: 4 != 5\)"):
        fusion(maps, torch.randn(2, 4))


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^dims: "):
        ConcatProjectFusion((), TEXT, 7)
    with pytest.raises(ValueError, match=r"^dims: "):
        ConcatProjectFusion((8, 0), TEXT, 7)
    with pytest.raises(ValueError, match=r"^text_dim: "):
        ConcatProjectFusion(DIMS, 0, 7)
    with pytest.raises(ValueError, match=r"^out_dim: "):
        ConcatProjectFusion(DIMS, TEXT, -1)
    with pytest.raises(ValueError, match=r"^norm: "):
        ConcatProjectFusion(DIMS, TEXT, 7, norm="layer")
