"""The ASDA reference system (asda_tiny only: CPU-sized, random init)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rislayers import ShapeError
from reference_models import build_model
from reference_models.config import LEGACY_DEFAULTS, to_flat
from reference_models.models.asda import LayerSelection
from tests.layer_checks import (
    assert_close_outputs,
    assert_finite,
    assert_grads_finite,
    assert_model_batch_independent,
    assert_param_grads,
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
    # focal_weight scales only the focal term: three weights give collinear losses. The model
    # reads its loss options when it is built, so each weight is a model built with it.
    model = build_model("asda_tiny").eval()
    images, ids, mask = model_inputs(2, IMAGE)
    target = model_target(2, IMAGE)
    with torch.no_grad():
        out = model(images, ids, mask)
    losses = []
    for weight in (0.0, 1.0, 3.0):
        weighted = build_model("asda_tiny", focal_weight=weight)
        assert weighted.config.loss.focal_weight == weighted.focal_weight == weight
        losses.append(weighted.loss(out, target))
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


@pytest.mark.parametrize("aggregation, neck", [
    ({}, "Conv2d"), ({"asda_fusion": "concat"}, "Conv2d"), ({"asda_aggregator": "published"}, "Identity"),
])
def test_the_neck_brings_f_coarse_to_the_aligners_width(aggregation, neck):
    # The paper's SFA and the concat fusion give clip_width (32); the released SFA decoder_dim.
    model = build_model("asda_tiny", decoder_dim=16, **aggregation).eval()
    assert type(model.neck).__name__ == neck
    images, ids, mask = model_inputs(2, IMAGE)
    _, _, maps, cls_tokens = model._encode(images, ids, mask)
    with torch.no_grad():
        coarse = model._fuse(maps[-1], maps[6], maps[3], model.encode_text(ids, mask).sentence)
        assert coarse.shape[1] == (16 if neck == "Identity" else model.config.vision.width)
        assert model.neck(coarse).shape == (2, 16, 8, 8)


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


@pytest.mark.parametrize("overrides", [
    {"selector_layers": ((2, 5), (6, 9))},
    {"asda_selection": "fixed", "asda_fixed_layers": (5, 8), "asda_fusion": "concat"},
    {"selector_head": "conv", "aligner_branches": "single", "aligner_blocks": "published"},
])
def test_save_and_load_round_trip(tmp_path, overrides):
    model = build_model("asda_tiny", **overrides).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert_close_outputs(model(images, ids, mask), loaded(images, ids, mask), atol=0, rtol=0)


# -- the ablation options (Tables 2-5) and the published code's behaviours ------------------

# Each option at tiny size; the keys name the test cases.
OPTIONS = {
    "fixed": {"asda_selection": "fixed"},
    "top": {"asda_selection": "top", "asda_fusion": "concat"},
    "concat": {"asda_fusion": "concat"},
    "concat_group_norm": {"asda_fusion": "concat", "norm": "group"},
    "published_aggregator": {"asda_aggregator": "published"},
    # decoder_dim != clip_width: the released SFA hands the aligner its own width
    "published_aggregator_narrow": {"asda_aggregator": "published", "decoder_dim": 16},
    "single_branch": {"aligner_branches": "single"},
    "visual_branch": {"aligner_branches": "visual"},
    "no_word_mask": {"aligner_word_mask": False},
    "published_blocks": {"aligner_blocks": "published"},
    "mlp_selector": {"selector_head": "mlp"},
    "conv_selector": {"selector_head": "conv"},
    "layer_eos": {"selector_text": "layer_eos", "text_layers": 9},
    "bce_dice": {"asda_loss": "bce_dice"},
    "no_output_bias": {"aligner_output_bias": False},
}
# Options that change no parameter: they must change what is computed instead.
# (layer_eos drops the selectors' text projections: the released code reads its [EOS] tokens as they are)
SAME_PARAMETERS = {"no_word_mask", "bce_dice"}
# What an option is compared with: the default, with the sizes the option needs.
BASELINES = {"layer_eos": {"text_layers": 9}}


def _padded(ids: torch.Tensor, mask: torch.Tensor, extra: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The same sentences with ``extra`` padding words of garbage ids appended."""
    padded_ids = torch.cat([ids, torch.randint(1, 1000, (ids.shape[0], extra))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(ids.shape[0], extra, dtype=mask.dtype)], dim=1)
    return padded_ids, padded_mask


def _perturb_layers(monkeypatch, model, layers: set[int]) -> None:
    """Add noise to the patch maps of the given 1-based ViT layers (their class tokens stay)."""
    original = model.backbone.forward

    def forward(images):
        maps, cls_tokens = original(images)
        return [m + 3 * torch.randn_like(m) if i + 1 in layers else m for i, m in enumerate(maps)], cls_tokens

    monkeypatch.setattr(model.backbone, "forward", forward)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_option_builds_and_trains_with_finite_gradients(option):
    model = build_model("asda_tiny", **OPTIONS[option])
    flat = to_flat(model.config)  # the flat names of the config the model was built with
    for key, value in OPTIONS[option].items():
        assert flat[key] == value
    images, ids, mask = model_inputs(2, IMAGE)
    out = model(images, ids, mask)
    assert out.logits.shape == (2, 1, IMAGE, IMAGE)
    assert_finite(out)
    loss = model.loss(out, model_target(2, IMAGE))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert_param_grads(model, exclude=lambda name: name.startswith(UNUSED))


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_option_differs_from_the_default(option):
    default = build_model("asda_tiny", **BASELINES.get(option, {})).eval()
    model = build_model("asda_tiny", **OPTIONS[option]).eval()
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (default, model)]
    assert (shapes[0] == shapes[1]) == (option in SAME_PARAMETERS), option
    if option not in SAME_PARAMETERS:
        return
    # The same weights compute a different output (or loss) under the option.
    model.load_state_dict(default.state_dict())
    images, ids, mask = model_inputs(2, IMAGE)
    ids, mask = _padded(ids, mask)
    target = model_target(2, IMAGE)
    with torch.no_grad():
        a, b = default(images, ids, mask), model(images, ids, mask)
        losses = default.loss(a, target), model.loss(b, target)
    if option == "layer_eos":  # only the selectors read the per-layer [EOS]: the probabilities move
        assert not torch.allclose(default.last_selection.low_probs, model.last_selection.low_probs)
    elif option == "bce_dice":
        torch.testing.assert_close(a.logits, b.logits)
        assert not torch.isclose(losses[0], losses[1])
    else:
        assert not torch.allclose(a.logits, b.logits, atol=1e-4)


@pytest.mark.parametrize("option", [o for o in OPTIONS if o != "no_word_mask"])
def test_every_option_ignores_padding_words(option):
    model = build_model("asda_tiny", **OPTIONS[option]).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        plain = model(images, ids, mask)
        padded = model(images, *_padded(ids, mask))
    assert_close_outputs(plain, padded)


@pytest.mark.parametrize("option", ["fixed", "top", "concat", "single_branch", "visual_branch", "layer_eos"])
def test_every_option_keeps_samples_independent(option):
    model = build_model("asda_tiny", **OPTIONS[option]).eval()
    assert_model_batch_independent(model, *model_inputs(3, IMAGE), vocab=1000, changed=0, watched=2)


@pytest.mark.parametrize("option", ["top", "concat", "single_branch", "visual_branch", "layer_eos"])
def test_batch_of_one_and_an_all_padding_sentence_stay_finite(option):
    model = build_model("asda_tiny", **OPTIONS[option])
    images, ids, _ = model_inputs(1, IMAGE)
    out = model(images, ids, torch.zeros_like(ids))
    assert_finite(out)
    model.loss(out, model_target(1, IMAGE)).backward()
    assert_grads_finite(model)


_DRAWN: dict[str, object] = {}


@settings(max_examples=8)
@given(option=st.sampled_from(["fixed", "top", "concat", "single_branch", "visual_branch", "layer_eos"]),
       batch=st.integers(1, 3), words=st.integers(1, 7), short=st.integers(0, 3))
def test_drawn_batches_and_sentence_lengths_give_finite_outputs_of_the_right_shape(option, batch, words, short):
    if option not in _DRAWN:
        _DRAWN[option] = build_model("asda_tiny", **OPTIONS[option]).eval()
    model = _DRAWN[option]
    images, ids, mask = model_inputs(batch, IMAGE, words, short=min(short, words))
    with torch.no_grad():
        out = model(images, ids, mask)
    assert out.logits.shape == (batch, 1, IMAGE, IMAGE)
    assert_finite(out)
    assert model.last_selection.low_layer.shape == (batch,)


@pytest.mark.parametrize("option", ["top", "concat", "single_branch", "layer_eos"])
def test_options_run_in_float64(option):
    model = build_model("asda_tiny", **OPTIONS[option]).double().eval()
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        out = model(images.double(), ids, mask)
    assert out.logits.dtype == torch.float64
    assert_finite(out)


def test_the_word_mask_off_lets_padding_change_the_output():
    model = build_model("asda_tiny", aligner_word_mask=False).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        plain = model(images, ids, mask)
        padded = model(images, *_padded(ids, mask))
    assert not torch.allclose(plain.logits, padded.logits, atol=1e-4)


def test_fixed_selection_reads_exactly_the_fixed_layers(monkeypatch):
    # asda_tiny has 9 ViT layers: layer 9 is both F_M (fixed) and F_H.
    model = build_model("asda_tiny", asda_selection="fixed", asda_fixed_layers=(6, 9)).eval()
    assert model.low_selector is None and model.mid_selector is None
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        reference = model(images, ids, mask).logits
    selection = model.last_selection
    assert selection.low_layer.tolist() == [6, 6] and selection.mid_layer.tolist() == [9, 9]
    assert torch.equal(selection.low_probs, torch.ones(2, 1)) and torch.equal(selection.mid_probs, torch.ones(2, 1))
    for layers, changes in (({1, 2, 3, 4, 5, 7, 8}, False), ({6}, True), ({9}, True)):
        with monkeypatch.context() as patch:
            _perturb_layers(patch, model, layers)
            with torch.no_grad():
                logits = model(images, ids, mask).logits
        assert (not torch.allclose(logits, reference)) == changes, layers
    assert model.select_layers(images, ids, mask).mid_layer.tolist() == [9, 9]


def test_top_selection_reads_only_the_last_layer(monkeypatch):
    model = build_model("asda_tiny", asda_selection="top", asda_fusion="concat").eval()
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        reference = model(images, ids, mask).logits
    assert model.last_selection.low_layer.tolist() == model.last_selection.mid_layer.tolist() == [9, 9]
    assert model.aggregator.__class__.__name__ == "ConcatProjectFusion"
    for layers, changes in ((set(range(1, 9)), False), ({9}, True)):
        with monkeypatch.context() as patch:
            _perturb_layers(patch, model, layers)
            with torch.no_grad():
                logits = model(images, ids, mask).logits
        assert (not torch.allclose(logits, reference)) == changes, layers


def test_adaptive_concat_reads_the_chosen_layers_only(monkeypatch):
    model = build_model("asda_tiny", asda_fusion="concat").eval()
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        reference = model(images, ids, mask).logits
    chosen = set(model.last_selection.low_layer.tolist()) | set(model.last_selection.mid_layer.tolist()) | {9}
    with monkeypatch.context() as patch:
        _perturb_layers(patch, model, set(range(1, 10)) - chosen)
        with torch.no_grad():
            torch.testing.assert_close(model(images, ids, mask).logits, reference)


def test_bce_dice_is_binary_cross_entropy_plus_dice():
    model = build_model("asda_tiny", asda_loss="bce_dice", focal_weight=2.0).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    target = model_target(2, IMAGE)
    with torch.no_grad():
        out = model(images, ids, mask)
    logits = out.aux_logits[0][:, 0]
    assert logits.shape[-2:] == target.shape[-2:]  # no resizing at this size
    truth = target.float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, truth)
    probs = logits.sigmoid()
    dice = 1 - (2 * (probs * truth).sum((1, 2)) + 1) / (probs.sum((1, 2)) + truth.sum((1, 2)) + 1)
    torch.testing.assert_close(model.loss(out, target), 2.0 * bce + dice.mean())
    # ... and differs from the paper's focal + Dice on the same logits
    assert not torch.isclose(build_model("asda_tiny", focal_weight=2.0).loss(out, target), model.loss(out, target))


def test_layer_eos_scores_each_candidate_against_its_own_text_layer(monkeypatch):
    model = build_model("asda_tiny", selector_text="layer_eos", text_layers=9).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    seen = []
    original = model.low_selector.forward
    monkeypatch.setattr(model.low_selector, "forward", lambda maps, cls, text: seen.append(text) or original(maps, cls, text))
    with torch.no_grad():
        model(images, ids, mask)
        features, layer_eos = model.text_encoder.forward_with_layer_eos(ids, mask)
    (text,) = seen
    assert text.shape == (2, 3, model.config.text.dim)
    torch.testing.assert_close(text, layer_eos[:, 3:6])  # layers 4-6, 1-based


def test_clip_text_encoder_layer_eos_leaves_the_default_features_alone():
    model = build_model("asda_tiny", text_layers=3).eval()
    encoder = model.text_encoder
    _, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        plain = encoder(ids, mask)
        features, layer_eos = encoder.forward_with_layer_eos(ids, mask)
    assert layer_eos.shape == (2, 3, model.config.text.dim)
    for a, b in zip(plain, features):
        assert torch.equal(a, b)
    # the last layer's [EOS] (the last real token), normalised, is the words' last real one
    last = mask.sum(1) - 1
    torch.testing.assert_close(encoder.text.ln_final(layer_eos[:, -1]), plain.words[torch.arange(2), last])


def test_option_errors_are_one_line():
    bad = [
        ({"asda_selection": "fixed", "asda_fixed_layers": (6, 10)}, "asda_fixed_layers: expected ViT layers within 1..clip_layers=9"),
        # an option of a part this model does not build is refused, naming the part that reads it
        ({"asda_fixed_layers": (5, 7)}, "asda_fixed_layers: no part of this asda (selector=adaptive, "),
        ({"asda_fixed_layers": (5, 7)}, "read by: selector=fixed (asda)"),
        ({"asda_selection": "top"}, "asda_fusion: the scale-wise aggregator needs"),
        ({"asda_selection": "fixed", "selector_head": "mlp"}, "selector_head: no part of this asda (selector=fixed, "),
        ({"asda_selection": "fixed", "selector_head": "mlp"}, "read by: selector=adaptive (asda)"),
        ({"asda_selection": "top", "asda_fusion": "concat", "selector_gradient": "none"}, "selector_gradient: no part of this asda (selector=top, "),
        ({"selector_text": "layer_eos", "text_encoder": "bert", "text_layers": 9}, "selector_text: 'layer_eos' reads the CLIP text tower"),
        ({"selector_text": "layer_eos"}, "selector_text: 'layer_eos' pairs ViT layer i with text layer i, so text_layers must reach"),
        ({"aligner_branches": "visual", "aligner_word_mask": False}, "aligner_word_mask: the aligner reads no words"),
        ({"asda_fusion": "concat", "asda_aggregator": "published"}, "asda_aggregator: no part of this asda (selector=adaptive, aggregator=concat, "),
        ({"asda_fusion": "concat", "asda_aggregator": "published"}, "read by: aggregator=sfa (asda)"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            build_model("asda_tiny", **overrides)
        assert "\n" not in str(err.value), overrides


def test_a_config_saved_before_the_logit_offset_builds_the_aligner_its_weights_fit(tmp_path):
    from reference_models import ModelConfig
    from reference_models.base import RISModel

    saved = {**LEGACY_DEFAULTS, "architecture": "asda", "vision_encoder": "clip"}  # a flat config.json of before
    del saved["aligner_output_bias"]
    assert ModelConfig.from_dict(saved).aligner.output_bias is False
    assert ModelConfig.from_dict({**saved, "aligner_output_bias": True}).aligner.output_bias is True
    assert ModelConfig.from_dict(ModelConfig.create("asda", vision_encoder="clip").to_dict()).aligner.output_bias is True
    # An old save_pretrained folder: its flat config lacks the field, its weights the offset.
    old = build_model("asda_tiny", aligner_output_bias=False).eval()
    old.save_pretrained(tmp_path)
    config = to_flat(old.config)
    del config["aligner_output_bias"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = RISModel.from_pretrained(tmp_path).eval()
    assert loaded.aligner.output_bias is None
    images, ids, mask = model_inputs(2, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, ids, mask).logits, old(images, ids, mask).logits)
