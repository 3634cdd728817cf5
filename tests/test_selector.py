"""rislayers.AdaptiveLayerSelector: ASDA's adaptive feature selection (Eq. 1-3)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rislayers.selector import AdaptiveLayerSelector, SelectionOutput
from rislayers.shapes import ShapeError
from tests.layer_checks import (
    assert_batch_independent,
    assert_close_outputs,
    assert_compile_matches_eager,
    assert_finite,
    assert_param_grads,
    backward_sum,
    perturb_sample,
)

MODES = ("straight_through", "soft", "none")
SELECTOR_PARAMS = ("proj_text.weight", "proj_vis.weight", "scorer.weight")


def make_inputs(b=2, k=3, c=8, h=4, w=5, d=6, *, dtype=torch.float32, requires_grad=False):
    candidates = torch.randn(b, k, c, h, w, dtype=dtype, requires_grad=requires_grad)
    return {
        "candidates": candidates,
        "cls_tokens": torch.randn(b, k, c, dtype=dtype),
        "sentence": torch.randn(b, d, dtype=dtype),
    }


def as_list(inputs):
    return {**inputs, "candidates": list(inputs["candidates"].unbind(dim=1))}


def hard_pick(candidates, index):
    return torch.stack([candidates[i, int(index[i])] for i in range(candidates.shape[0])])


@given(
    b=st.integers(1, 4),
    k=st.integers(1, 4),
    c=st.integers(1, 12),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    d=st.integers(1, 10),
    mode=st.sampled_from(MODES),
    as_sequence=st.booleans(),
)
def test_shapes_and_hard_pick_for_both_input_forms(b, k, c, h, w, d, mode, as_sequence):
    selector = AdaptiveLayerSelector(c, d, num_candidates=k, gradient=mode)
    inputs = make_inputs(b, k, c, h, w, d)
    out = selector(**(as_list(inputs) if as_sequence else inputs))
    assert isinstance(out, SelectionOutput)
    assert out.features.shape == (b, c, h, w)
    assert out.probs.shape == (b, k)
    assert out.index.shape == (b,) and out.index.dtype == torch.int64
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(b))
    assert torch.equal(out.index, out.probs.argmax(dim=1))
    if mode == "soft":
        expected = (out.probs[:, :, None, None, None] * inputs["candidates"]).sum(dim=1)
        torch.testing.assert_close(out.features, expected)
    else:
        # bit-exact: the forward VALUE is the hard argmax pick
        assert torch.equal(out.features, hard_pick(inputs["candidates"], out.index))


def test_list_and_stacked_forms_agree():
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3)
    inputs = make_inputs()
    assert_close_outputs(selector(**inputs), selector(**as_list(inputs)), atol=0, rtol=0)


def test_selection_follows_the_sentence():
    # Different sentences must be able to pick different layers (the selector is not constant).
    torch.manual_seed(1)
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3)
    inputs = make_inputs(b=64)
    index = selector(**inputs).index
    assert index.unique().numel() > 1


def test_straight_through_trains_the_selector_and_routes_candidate_grads_like_hard_pick():
    inputs = make_inputs(requires_grad=True)
    weights = torch.randn(2, 8, 4, 5)
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient="straight_through")
    out = selector(**inputs)
    (out.features * weights).sum().backward()  # the features alone carry the gradient
    assert_param_grads(selector)
    for name in SELECTOR_PARAMS:
        assert dict(selector.named_parameters())[name].grad.abs().sum() > 0
    # candidates get exactly the hard pick's gradient: `weights` at the chosen layer, 0 elsewhere
    expected = torch.zeros_like(inputs["candidates"])
    for i, j in enumerate(out.index.tolist()):
        expected[i, j] = weights[i]
    torch.testing.assert_close(inputs["candidates"].grad, expected)


def test_none_gives_the_selector_no_gradient_at_all():
    inputs = make_inputs(requires_grad=True)
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient="none")
    out = selector(**inputs)
    assert not out.probs.requires_grad
    backward_sum(out)
    for name, param in selector.named_parameters():
        assert param.grad is None or not param.grad.any(), f"{name} received a gradient"
    assert inputs["candidates"].grad is not None


def test_soft_trains_the_selector():
    inputs = make_inputs(requires_grad=True)
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient="soft")
    selector(**inputs).features.sum().backward()
    assert_param_grads(selector)
    assert (inputs["candidates"].grad != 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_batch_independence(mode):
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient=mode).eval()
    inputs = make_inputs(b=3)

    assert_batch_independent(lambda inp: selector(**inp), inputs, perturb_sample, changed=2, watched=0)
    assert_batch_independent(lambda inp: selector(**inp), inputs, perturb_sample, changed=0, watched=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_kept_and_finite(mode, dtype):
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient=mode, dtype=dtype)
    inputs = make_inputs(dtype=dtype, requires_grad=True)
    out = selector(**inputs)
    assert out.features.dtype == dtype and out.probs.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    assert torch.isfinite(inputs["candidates"].grad).all()
    if mode != "soft":
        assert torch.equal(out.features, hard_pick(inputs["candidates"], out.index))


def test_batch_of_one():
    selector = AdaptiveLayerSelector(8, 6, num_candidates=2)
    inputs = make_inputs(b=1, k=2, h=1, w=1, requires_grad=True)
    out = selector(**inputs)
    assert out.features.shape == (1, 8, 1, 1)
    backward_sum(out)
    assert_param_grads(selector, finite=True, nonzero=False)


def test_shape_errors_name_the_argument():
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3)
    inputs = make_inputs()
    with pytest.raises(ShapeError, match=r"^cls_tokens: .*\(k: 2 != 3\)"):
        selector(**{**inputs, "cls_tokens": torch.randn(2, 2, 8)})
    with pytest.raises(ShapeError, match=r"^sentence: .*\(d: 5 != 6\)"):
        selector(**{**inputs, "sentence": torch.randn(2, 5)})
    with pytest.raises(ShapeError, match=r"^candidates: .*\(c: 7 != 8\)"):
        selector(**{**inputs, "candidates": torch.randn(2, 3, 7, 4, 5)})
    listed = as_list(inputs)
    with pytest.raises(ShapeError, match=r"^candidates: .*k=3.*got 2"):
        selector(**{**listed, "candidates": listed["candidates"][:2]})
    bad = list(listed["candidates"])
    bad[1] = torch.randn(2, 8, 4, 6)
    with pytest.raises(ShapeError, match=r"^candidates\[1\]: .*\(w: 6 != 5\)"):
        selector(**{**listed, "candidates": bad})


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="gradient"):
        AdaptiveLayerSelector(8, 6, num_candidates=3, gradient="hard")
    with pytest.raises(ValueError, match="num_candidates"):
        AdaptiveLayerSelector(8, 6, num_candidates=0)
    with pytest.raises(ValueError, match="text_dim"):
        AdaptiveLayerSelector(8, 0, num_candidates=2)


def test_torch_compile_matches_eager():
    assert_compile_matches_eager(AdaptiveLayerSelector(8, 6, num_candidates=3).eval(), **make_inputs())
