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
HEADS = ("linear", "mlp", "conv")
SELECTOR_PARAMS = {
    "linear": ("proj_text.weight", "proj_vis.weight", "scorer.weight"),
    "mlp": ("proj_text.weight", "proj_vis.weight", "scorer.0.weight", "scorer.0.bias", "scorer.2.weight"),
    "conv": ("proj_text.weight", "proj_vis.weight", "scorer.weight"),
}


def make_inputs(b=2, k=3, c=8, h=4, w=5, d=6, *, dtype=torch.float32, requires_grad=False, per_candidate=False):
    candidates = torch.randn(b, k, c, h, w, dtype=dtype, requires_grad=requires_grad)
    sentence_shape = (b, k, d) if per_candidate else (b, d)
    return {
        "candidates": candidates,
        "cls_tokens": torch.randn(b, k, c, dtype=dtype),
        "sentence": torch.randn(*sentence_shape, dtype=dtype),
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
    head=st.sampled_from(HEADS),
    per_candidate=st.booleans(),
    project_text=st.booleans(),
)
def test_shapes_and_hard_pick_for_both_input_forms(b, k, c, h, w, d, mode, as_sequence, head, per_candidate, project_text):
    selector = AdaptiveLayerSelector(c, d, num_candidates=k, gradient=mode, head=head, project_text=project_text)
    inputs = make_inputs(b, k, c, h, w, d, per_candidate=per_candidate)
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


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("per_candidate", [False, True])
def test_straight_through_trains_the_selector_and_routes_candidate_grads_like_hard_pick(head, per_candidate):
    inputs = make_inputs(requires_grad=True, per_candidate=per_candidate)
    weights = torch.randn(2, 8, 4, 5)
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient="straight_through", head=head)
    out = selector(**inputs)
    (out.features * weights).sum().backward()  # the features alone carry the gradient
    assert_param_grads(selector)
    assert sorted(name for name, _ in selector.named_parameters()) == sorted(SELECTOR_PARAMS[head])
    for name in SELECTOR_PARAMS[head]:
        assert dict(selector.named_parameters())[name].grad.abs().sum() > 0
    # candidates get exactly the hard pick's gradient: `weights` at the chosen layer, 0 elsewhere
    expected = torch.zeros_like(inputs["candidates"])
    for i, j in enumerate(out.index.tolist()):
        expected[i, j] = weights[i]
    torch.testing.assert_close(inputs["candidates"].grad, expected)


@pytest.mark.parametrize("head", HEADS)
def test_none_gives_the_selector_no_gradient_at_all(head):
    inputs = make_inputs(requires_grad=True)
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient="none", head=head)
    out = selector(**inputs)
    assert not out.probs.requires_grad
    backward_sum(out)
    for name, param in selector.named_parameters():
        assert param.grad is None or not param.grad.any(), f"{name} received a gradient"
    assert inputs["candidates"].grad is not None


@pytest.mark.parametrize("head", HEADS)
def test_soft_trains_the_selector(head):
    inputs = make_inputs(requires_grad=True)
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient="soft", head=head)
    selector(**inputs).features.sum().backward()
    assert_param_grads(selector)
    assert (inputs["candidates"].grad != 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("head", "per_candidate"), [("linear", False), ("mlp", True), ("conv", False), ("conv", True)])
def test_batch_independence(mode, head, per_candidate):
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient=mode, head=head).eval()
    inputs = make_inputs(b=3, per_candidate=per_candidate)

    assert_batch_independent(lambda inp: selector(**inp), inputs, perturb_sample, changed=2, watched=0)
    assert_batch_independent(lambda inp: selector(**inp), inputs, perturb_sample, changed=0, watched=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head", HEADS)
def test_dtype_kept_and_finite(mode, dtype, head):
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, gradient=mode, head=head, dtype=dtype)
    inputs = make_inputs(dtype=dtype, requires_grad=True)
    out = selector(**inputs)
    assert out.features.dtype == dtype and out.probs.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    assert torch.isfinite(inputs["candidates"].grad).all()
    if mode != "soft":
        assert torch.equal(out.features, hard_pick(inputs["candidates"], out.index))


@pytest.mark.parametrize("head", HEADS)
def test_batch_of_one(head):
    selector = AdaptiveLayerSelector(8, 6, num_candidates=2, head=head)
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
    with pytest.raises(ValueError, match=r"^head: expected one of \('linear', 'mlp', 'conv'\); got 'attention'"):
        AdaptiveLayerSelector(8, 6, num_candidates=2, head="attention")
    with pytest.raises(ValueError, match=r"^project_text: expected a bool; got 'no'"):
        AdaptiveLayerSelector(8, 6, num_candidates=2, project_text="no")
    with pytest.raises(ValueError, match=r"^score_dim: expected text_dim=6 with project_text=False; got 4"):
        AdaptiveLayerSelector(8, 6, num_candidates=2, score_dim=4, project_text=False)


def scorer_outputs(selector, inputs):
    """The logits the scorer gives (before the softmax), via a forward hook."""
    seen = []
    handle = selector.scorer.register_forward_hook(lambda module, args, out: seen.append(out.flatten()))
    with torch.no_grad():
        selector(**inputs)
    handle.remove()
    return seen[0]


def test_conv_head_lets_neighbouring_candidates_inform_each_other():
    # Linear and MLP heads score each candidate alone: changing candidate 2's class token
    # leaves the odds between candidates 0 and 1 alone. The conv head's candidate 1 sees 2.
    inputs = make_inputs(b=1)
    cls_tokens = inputs["cls_tokens"].clone()
    cls_tokens[0, 2] = torch.randn(8) * 3
    for head, neighbours_matter in (("linear", False), ("mlp", False), ("conv", True)):
        selector = AdaptiveLayerSelector(8, 6, num_candidates=3, head=head)
        with torch.no_grad():
            before, after = (selector(**{**inputs, "cls_tokens": t}).probs[0] for t in (inputs["cls_tokens"], cls_tokens))
        odds_before = (before[0] / before[1]).log()
        odds_after = (after[0] / after[1]).log()
        assert torch.isclose(odds_before, odds_after, atol=1e-5).item() != neighbours_matter, head


def test_conv_head_with_one_candidate_is_its_centre_tap():
    torch.manual_seed(0)
    conv = AdaptiveLayerSelector(8, 6, num_candidates=1, head="conv")
    linear = AdaptiveLayerSelector(8, 6, num_candidates=1, head="linear")
    with torch.no_grad():
        linear.proj_text.weight.copy_(conv.proj_text.weight)
        linear.proj_vis.weight.copy_(conv.proj_vis.weight)
        linear.scorer.weight.copy_(conv.scorer.weight[:, :, 1])
    inputs = make_inputs(b=3, k=1)
    torch.testing.assert_close(scorer_outputs(conv, inputs), scorer_outputs(linear, inputs))


@pytest.mark.parametrize("head", HEADS)
def test_one_sentence_equals_the_same_vector_for_every_candidate(head):
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, head=head)
    inputs = make_inputs()
    repeated = {**inputs, "sentence": inputs["sentence"][:, None].expand(-1, 3, -1)}
    assert_close_outputs(selector(**inputs), selector(**repeated), atol=1e-6)


def test_per_candidate_text_scores_each_candidate_against_its_own_vector():
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3)
    inputs = make_inputs(b=1, per_candidate=True)
    sentence = inputs["sentence"].clone()
    sentence[0, 2] = torch.randn(6) * 3
    with torch.no_grad():
        before = selector(**inputs).probs[0]
        after = selector(**{**inputs, "sentence": sentence}).probs[0]
    assert not torch.allclose(before, after)
    # with the linear head only candidate 2's logit moved: the odds of 0 against 1 stay
    torch.testing.assert_close((before[0] / before[1]).log(), (after[0] / after[1]).log(), atol=1e-5, rtol=1e-4)


def test_per_candidate_sentence_shape_errors():
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3)
    inputs = make_inputs()
    with pytest.raises(ShapeError, match=r"^sentence: .*\(k: 2 != 3\)"):
        selector(**{**inputs, "sentence": torch.randn(2, 2, 6)})
    with pytest.raises(ShapeError, match=r"^sentence: .*\(d: 5 != 6\)"):
        selector(**{**inputs, "sentence": torch.randn(2, 3, 5)})
    with pytest.raises(ShapeError, match=r"^sentence: .*\(b: 1 != 2\)"):
        selector(**{**inputs, "sentence": torch.randn(1, 3, 6)})
    with pytest.raises(ShapeError, match=r"^sentence: expected \(b, d\) or \(b, k, d\) with b=2, k=3, d=6; got \(2, 3, 6, 1\)$"):
        selector(**{**inputs, "sentence": torch.randn(2, 3, 6, 1)})


def test_torch_compile_matches_eager():
    assert_compile_matches_eager(AdaptiveLayerSelector(8, 6, num_candidates=3).eval(), **make_inputs())


# ------------------------------------------- the published code's selector: raw [EOS] text


@pytest.mark.parametrize("per_candidate", [False, True])
def test_without_text_projection_the_text_is_the_score_tokens_factor(per_candidate):
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, project_text=False, gradient="none")
    assert sorted(name for name, _ in selector.named_parameters()) == ["proj_vis.weight", "scorer.weight"]
    inputs = make_inputs(per_candidate=per_candidate)
    text = inputs["sentence"] if per_candidate else inputs["sentence"][:, None]
    scores = text * selector.proj_vis(inputs["cls_tokens"])  # Eq. 1 with f_E as given
    expected = selector.scorer(scores)[..., 0].softmax(dim=-1)
    torch.testing.assert_close(selector(**inputs).probs, expected)


def test_without_text_projection_the_selector_trains_batch_independently():
    selector = AdaptiveLayerSelector(8, 6, num_candidates=3, project_text=False)
    inputs = make_inputs(b=3, requires_grad=True, per_candidate=True)
    selector(**inputs).features.square().sum().backward()
    assert_param_grads(selector)
    assert_batch_independent(lambda inp: selector(**inp), make_inputs(b=3, per_candidate=True), perturb_sample, changed=1, watched=0)
