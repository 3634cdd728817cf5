"""The ASDA reference system (asda_tiny only: CPU-sized, random init)."""

from __future__ import annotations

import pytest
import torch

from rislayers import ShapeError
from reference_models import build_model
from reference_models.models.asda import LayerSelection
from tests.layer_checks import (
    assert_close_outputs,
    assert_finite,
    assert_grads_finite,
    assert_model_batch_independent,
    model_inputs,
    model_target,
)

IMAGE = 64

# CLIP's vision tower keeps ln_post and proj for its image embedding, which ASDA never uses.
UNUSED = ("backbone.visual.ln_post.", "backbone.visual.proj")


def _is_selector(name: str) -> bool:
    return name.startswith(("low_selector.", "mid_selector."))


def test_forward_backward_shapes_and_gradients():
    model = build_model("asda_tiny")
    images, ids, mask = model_inputs(2, IMAGE)
    out = model(images, ids, mask)
    assert out.logits.shape == (2, 1, IMAGE, IMAGE)
    assert [t.shape for t in out.aux_logits] == [torch.Size([2, 1, IMAGE, IMAGE])]
    assert_finite(out)
    loss = model.loss(out, model_target(2, IMAGE))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        if name.startswith(UNUSED):
            assert param.grad is None, f"{name} was expected to be unused"
            continue
        assert param.grad is not None, f"parameter {name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"parameter {name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"parameter {name} has an all-zero gradient"


@pytest.mark.parametrize("fill", [False, True])
def test_loss_finite_for_empty_and_full_targets(fill):
    model = build_model("asda_tiny")
    images, ids, mask = model_inputs(2, IMAGE)
    loss = model.loss(model(images, ids, mask), model_target(2, IMAGE, fill))
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert_grads_finite(model)


def test_loss_combines_focal_and_dice():
    # focal_weight scales only the focal term: three weights give collinear losses.
    model = build_model("asda_tiny").eval()
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        out = model(images, ids, mask)
    losses = []
    for weight in (0.0, 1.0, 3.0):
        model.config = model.config.replace(focal_weight=weight)
        losses.append(model.loss(out, model_target(2, IMAGE)))
    dice, one, three = losses
    assert 0 < dice < 1
    assert one > dice
    torch.testing.assert_close(three - dice, 3 * (one - dice), rtol=1e-4, atol=1e-6)


def test_padding_words_do_not_change_the_output():
    model = build_model("asda_tiny").eval()
    images, ids, mask = model_inputs(2, IMAGE)
    extra = 5
    padded_ids = torch.cat([ids, torch.randint(1, 1000, (2, extra))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, extra, dtype=torch.long)], dim=1)
    # Garbage ids under the mask inside the sentence too (sample 1 ends 2 tokens early).
    ids_garbled = padded_ids.clone()
    ids_garbled[1, 4:6] = torch.tensor([7, 9])
    with torch.no_grad():
        plain = model(images, ids, mask)
        plain_selection = model.last_selection
        padded = model(images, ids_garbled, padded_mask)
    assert_close_outputs(plain, padded)
    assert torch.equal(plain_selection.low_layer, model.last_selection.low_layer)
    assert torch.equal(plain_selection.mid_layer, model.last_selection.mid_layer)


@pytest.mark.parametrize("mode", ["straight_through", "soft", "none"])
def test_selector_gradient_modes(mode):
    model = build_model("asda_tiny", selector_gradient=mode)
    images, ids, mask = model_inputs(2, IMAGE)
    model.loss(model(images, ids, mask), model_target(2, IMAGE)).backward()
    selector = {name: p for name, p in model.named_parameters() if _is_selector(name)}
    assert len(selector) == 6  # proj_text, proj_vis, scorer for the low and the mid selector
    for name, param in selector.items():
        if mode == "none":
            assert param.grad is None or not param.grad.any(), f"{name} learned under gradient='none'"
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} got no gradient under {mode!r}"


def test_batch_of_one_trains_and_predicts():
    model = build_model("asda_tiny")
    images, ids, mask = model_inputs(1, IMAGE)
    out = model(images, ids, mask)
    assert out.logits.shape == (1, 1, IMAGE, IMAGE)
    model.loss(out, model_target(1, IMAGE)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        assert_finite(model.eval()(images, ids, mask))


def test_batch_independence():
    model = build_model("asda_tiny").eval()
    assert_model_batch_independent(model, *model_inputs(3, IMAGE), vocab=1000, changed=0, watched=2)


def test_selection_reports_layer_numbers():
    model = build_model("asda_tiny").eval()
    images, ids, mask = model_inputs(4, IMAGE)
    with torch.no_grad():
        model(images, ids, mask)
        selection = model.select_layers(images, ids, mask)
    assert isinstance(selection, LayerSelection)
    assert ((selection.low_layer >= 4) & (selection.low_layer <= 6)).all()
    assert ((selection.mid_layer >= 7) & (selection.mid_layer <= 9)).all()
    assert selection.low_probs.shape == (4, 3) and selection.mid_probs.shape == (4, 3)
    torch.testing.assert_close(selection.low_probs.sum(-1), torch.ones(4))
    assert torch.equal(selection.low_layer, model.last_selection.low_layer)
    assert torch.equal(selection.mid_layer, model.last_selection.mid_layer)


def test_aligner_width_projection_and_coarser_grid():
    # decoder_dim != clip_width adds the 1x1 projection; patch 16 makes the aligner's map
    # (8 x the 4x4 grid = 32) smaller than the input, so the loss resizes the target.
    model = build_model("asda_tiny", decoder_dim=16, clip_patch=16, selector_layers=((1, 3), (4, 9)))
    images, ids, mask = model_inputs(2, IMAGE)
    out = model(images, ids, mask)
    assert out.logits.shape == (2, 1, IMAGE, IMAGE)
    assert out.aux_logits[0].shape == (2, 1, 32, 32)
    assert model.mid_selector.num_candidates == 6
    loss = model.loss(out, model_target(2, IMAGE))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.neck.weight.grad.abs().sum() > 0


def test_wrong_inputs_raise():
    model = build_model("asda_tiny")
    images, ids, mask = model_inputs(2, IMAGE)
    with pytest.raises(ShapeError, match="images"):
        model(torch.randn(2, 3, 32, 32), ids, mask)
    with pytest.raises(ShapeError, match="attention_mask"):
        model(images, ids, mask[:, :3])
    with pytest.raises(ShapeError, match="target"):
        model.loss(model(images, ids, mask), torch.zeros(3, IMAGE, IMAGE, dtype=torch.bool))
    for bad in (((4, 6),), ((4, 6), (7, 10)), ((6, 4), (7, 9)), ((0, 2), (7, 9))):
        with pytest.raises(ValueError, match="selector_layers"):
            build_model("asda_tiny", selector_layers=bad)
    with pytest.raises(ValueError, match="vision_encoder"):
        build_model("asda_tiny", vision_encoder="swin")


def test_save_and_load_round_trip(tmp_path):
    model = build_model("asda_tiny", selector_layers=((2, 5), (6, 9))).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert_close_outputs(model(images, ids, mask), loaded(images, ids, mask), atol=0, rtol=0)
