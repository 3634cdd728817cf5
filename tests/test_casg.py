"""Tests of S2RM's CASG decoder (rislayers.casg).

CASG takes only a sentence vector, no words, so the "extra padding words" property of the
other layers does not apply here. The default norm is BatchNorm (the paper's
Conv_BN_ReLU): batch-independence checks run in eval mode, and one test shows that
train-mode BatchNorm does couple samples while GroupNorm does not.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from layer_checks import (
    assert_batch_independent,
    assert_compile_matches_eager,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    perturb_sample,
)
from rislayers.casg import CASGDecoder, CASGStage, CASGStageOptions
from rislayers.shapes import ShapeError, set_shape_checks, shape_checks_enabled

IN_DIMS = (8, 12, 16, 20)
TEXT_DIM = 10

# Option sets covering the paper's default and each documented alternative.
OPTION_SETS = [
    {},
    {"gate": "sigmoid", "spatial_scaling": True},
    {"coord": "recombine", "norm": "group"},
    {"language": False, "norm": "none"},
    {"channel_attention": False},
    {"spatial_attention": False, "kernel_size": 1, "head_kernel_size": 3},
    {"dims": (6, 10, 14), "mlp_ratio": 0.5},
]


def pyramid(h1: int, halving: str) -> list[int]:
    """Sizes of V1..F4: "ceil" as padded Swin stages produce them, "floor" as strided convs."""
    if halving == "ceil":
        return [math.ceil(h1 / 2**k) for k in range(4)]
    return [max(1, h1 // 2**k) for k in range(4)]


def make_features(batch, in_dims, h1, w1, halving="ceil", dtype=torch.float32):
    heights, widths = pyramid(h1, halving), pyramid(w1, halving)
    return [torch.randn(batch, c, h, w, dtype=dtype) for c, h, w in zip(in_dims, heights, widths)]


def decoder_inputs(batch=2, h1=8, w1=8, *, dtype=torch.float32, halving="ceil"):
    return {
        "features": make_features(batch, IN_DIMS, h1, w1, halving, dtype),
        "sentence": torch.randn(batch, TEXT_DIM, dtype=dtype),
    }


def run_decoder(decoder):
    return lambda inputs: decoder(inputs["features"], inputs["sentence"])


# --------------------------------------------------------------------------- shapes


@given(
    batch=st.integers(1, 3),
    dim=st.integers(1, 12),
    vis_dim=st.one_of(st.none(), st.integers(1, 12)),
    text_dim=st.integers(1, 12),
    prev=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=3),
    size=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    norm=st.sampled_from(["batch", "group", "none"]),
    coord=st.sampled_from(["none", "recombine"]),
)
def test_stage_output_shape(batch, dim, vis_dim, text_dim, prev, size, norm, coord):
    stage = CASGStage(dim, [c for c, _, _ in prev], text_dim, vis_dim=vis_dim, norm=norm, coord=coord).eval()
    h, w = size
    vis = torch.randn(batch, vis_dim or dim, h, w)
    prev_maps = [torch.randn(batch, c, ph, pw) for c, ph, pw in prev]
    out = stage(vis, prev_maps, torch.randn(batch, text_dim))
    assert out.shape == (batch, dim, h, w)
    assert_finite(out)


@given(
    batch=st.integers(1, 3),
    h1=st.integers(1, 16),
    w1=st.integers(1, 16),
    in_dims=st.tuples(*[st.integers(1, 12)] * 4),
    dims=st.one_of(st.none(), st.tuples(*[st.integers(1, 12)] * 3)),
    text_dim=st.integers(1, 12),
    num_classes=st.integers(1, 3),
    halving=st.sampled_from(["ceil", "floor"]),
)
def test_decoder_output_shape(batch, h1, w1, in_dims, dims, text_dim, num_classes, halving):
    decoder = CASGDecoder(in_dims, text_dim, num_classes=num_classes, dims=dims).eval()
    features = make_features(batch, in_dims, h1, w1, halving)
    out = decoder(features, torch.randn(batch, text_dim))
    assert out.shape == (batch, num_classes, 4 * h1, 4 * w1)
    assert_finite(out)


@pytest.mark.parametrize("halving", ["ceil", "floor"])
def test_decoder_non_divisible_pyramid(halving):
    # 13 -> (13, 7, 4, 2) or (13, 6, 3, 1): every stage resizes to its own map's exact size.
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM)
    out = decoder(**decoder_inputs(2, 13, 10, halving=halving))
    assert out.shape == (2, 1, 52, 40)
    assert_finite(out)


# --------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("options", [{}, {"gate": "sigmoid", "spatial_scaling": True}])
def test_stage_follows_eq_11_to_15(options):
    stage = CASGStage(6, (5, 7), 4, dtype=torch.float64, **options).eval()
    vis = torch.randn(2, 6, 5, 6, dtype=torch.float64)
    prev = [torch.randn(2, 5, 2, 2, dtype=torch.float64), torch.randn(2, 7, 3, 3, dtype=torch.float64)]
    sentence = torch.randn(2, 4, dtype=torch.float64)
    gate = torch.sigmoid if options.get("gate") == "sigmoid" else torch.tanh
    scale = 6**-0.5 if options.get("spatial_scaling") else 1.0

    with torch.no_grad():
        ups = [F.interpolate(p, size=(5, 6), mode="bilinear", align_corners=False) for p in prev]
        recombined = stage.recombine(torch.cat(ups, 1))
        channel = gate(stage.channel_mlp(torch.cat((sentence, recombined.mean((2, 3))), 1)))
        fused = stage.fuse_vis(torch.cat((vis * channel[:, :, None, None], recombined), 1))
        kernel = stage.spatial_kernel(sentence)
        spatial = gate((recombined * kernel[:, :, None, None]).sum(1, keepdim=True) * scale)
        expected = stage.fuse_out(torch.cat((fused * spatial, recombined), 1))
        actual = stage(vis, prev, sentence)
    torch.testing.assert_close(actual, expected)


def test_decoder_feeds_every_coarser_output_to_each_stage():
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, num_classes=2, dtype=torch.float64).eval()
    features = make_features(2, IN_DIMS, 9, 7, dtype=torch.float64)
    sentence = torch.randn(2, TEXT_DIM, dtype=torch.float64)
    v1, v2, v3, f4 = features
    with torch.no_grad():
        f3 = decoder.stages[0](v3, [f4], sentence)
        f2 = decoder.stages[1](v2, [f4, f3], sentence)
        f1 = decoder.stages[2](v1, [f4, f3, f2], sentence)
        expected = F.interpolate(decoder.head(f1), size=(36, 28), mode="bilinear", align_corners=False)
        actual = decoder(features, sentence)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("language", [True, False])
def test_sentence_used_only_with_language(language):
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, language=language).eval()
    inputs = decoder_inputs()
    with torch.no_grad():
        a = decoder(inputs["features"], inputs["sentence"])
        b = decoder(inputs["features"], torch.randn(2, TEXT_DIM))
    assert torch.equal(a, b) != language


def test_coord_option_adds_position_information():
    # Constant inputs and 1x1 convs: only the coordinate channels can make positions differ.
    with_coord = CASGDecoder(IN_DIMS, TEXT_DIM, coord="recombine", kernel_size=1).eval()
    without = CASGDecoder(IN_DIMS, TEXT_DIM, kernel_size=1).eval()
    features = [torch.ones(1, c, s, s) for c, s in zip(IN_DIMS, (8, 4, 2, 1))]
    sentence = torch.randn(1, TEXT_DIM)
    with torch.no_grad():
        spread = lambda x: (x.max() - x.min()).item()  # noqa: E731
        assert spread(with_coord(features, sentence)) > 1e-4
        assert spread(without(features, sentence)) < 1e-6


# --------------------------------------------------------------------------- batch independence


@pytest.mark.parametrize("options", OPTION_SETS[:4])
def test_decoder_batch_independent_in_eval(options):
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, **options).eval()
    inputs = decoder_inputs(3, 8, 6)
    assert_batch_independent(run_decoder(decoder), inputs, perturb_sample, changed=1, watched=0)
    assert_batch_independent(run_decoder(decoder), inputs, perturb_sample, changed=0, watched=2)


def test_stage_batch_independent_in_eval():
    stage = CASGStage(8, (12, 6), TEXT_DIM).eval()
    inputs = {
        "vis": torch.randn(3, 8, 7, 5),
        "prev": [torch.randn(3, 12, 2, 2), torch.randn(3, 6, 4, 3)],
        "sentence": torch.randn(3, TEXT_DIM),
    }
    run = lambda x: stage(x["vis"], x["prev"], x["sentence"])  # noqa: E731
    assert_batch_independent(run, inputs, perturb_sample, changed=2, watched=1)


def test_train_mode_batch_norm_couples_samples_group_norm_does_not():
    inputs = decoder_inputs(3, 8, 8)
    batch_norm = CASGDecoder(IN_DIMS, TEXT_DIM).train()
    with pytest.raises(AssertionError):
        assert_batch_independent(run_decoder(batch_norm), inputs, perturb_sample, changed=1, watched=0)
    group_norm = CASGDecoder(IN_DIMS, TEXT_DIM, norm="group").train()
    assert_batch_independent(run_decoder(group_norm), inputs, perturb_sample, changed=1, watched=0)


# --------------------------------------------------------------------------- finiteness, dtype, gradients


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("train", [True, False])
def test_finite_for_zero_sentence_and_batch_of_one(batch, train):
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM).train(train)
    inputs = decoder_inputs(batch, 8, 8)
    inputs["sentence"] = torch.zeros(batch, TEXT_DIM)
    leaves = [*inputs["features"], inputs["sentence"]]
    for t in leaves:
        t.requires_grad_(True)
    out = decoder(inputs["features"], inputs["sentence"])
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite(leaves)
    assert_param_grads(decoder, nonzero=False)


def test_stage_finite_for_zero_sentence_and_batch_of_one():
    stage = CASGStage(8, (12,), TEXT_DIM).train()
    vis = torch.randn(1, 8, 4, 4, requires_grad=True)
    prev = torch.randn(1, 12, 2, 2, requires_grad=True)
    sentence = torch.zeros(1, TEXT_DIM, requires_grad=True)
    out = stage(vis, [prev], sentence)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([vis, prev, sentence])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_kept(dtype):
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, dtype=dtype).train()
    inputs = decoder_inputs(2, 9, 8, dtype=dtype)
    out = decoder(inputs["features"], inputs["sentence"])
    assert out.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    assert_param_grads(decoder, nonzero=False)
    with torch.no_grad():
        assert decoder.eval()(inputs["features"], inputs["sentence"]).dtype == dtype

    stage = CASGStage(8, (12, 6), TEXT_DIM, coord="recombine", dtype=dtype).eval()
    vis = torch.randn(2, 8, 5, 5, dtype=dtype)
    prev = [torch.randn(2, 12, 2, 2, dtype=dtype), torch.randn(2, 6, 3, 3, dtype=dtype)]
    out = stage(vis, prev, torch.randn(2, TEXT_DIM, dtype=dtype))
    assert out.dtype == dtype
    assert_finite(out)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_every_parameter_gets_a_gradient(options):
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, **options).train()
    out = decoder(**decoder_inputs(2, 8, 8))
    backward_sum(out)
    assert_param_grads(decoder)


def test_ablations_drop_their_parameters():
    full = CASGStage(8, (12,), TEXT_DIM)
    assert full.channel_mlp is not None and full.spatial_kernel is not None
    assert CASGStage(8, (12,), TEXT_DIM, channel_attention=False).channel_mlp is None
    assert CASGStage(8, (12,), TEXT_DIM, spatial_attention=False).spatial_kernel is None
    # The paper's widths: each stage as wide as its vision feature, no projection.
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM)
    assert [s.dim for s in decoder.stages] == [16, 12, 8]
    assert [s.prev_dims for s in decoder.stages] == [(20,), (20, 16), (20, 16, 12)]
    assert all(s.vis_proj is None for s in decoder.stages)


# --------------------------------------------------------------------------- errors


def test_decoder_shape_errors_name_the_argument():
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM)
    inputs = decoder_inputs()
    features, sentence = inputs["features"], inputs["sentence"]
    with pytest.raises(ShapeError, match=r"^features: expected a sequence of 4"):
        decoder(features[:3], sentence)
    with pytest.raises(ShapeError, match=r"^features: "):
        decoder(torch.randn(4, 2, 8, 8, 8), sentence)
    wrong_channels = [*features[:2], torch.randn(2, 99, 2, 2), features[3]]
    with pytest.raises(ShapeError, match=r"^features\[2\]: .*c: 99 != 16"):
        decoder(wrong_channels, sentence)
    wrong_batch = [features[0], torch.randn(3, 12, 4, 4), *features[2:]]
    with pytest.raises(ShapeError, match=r"^features\[1\]: .*b: 3 != 2"):
        decoder(wrong_batch, sentence)
    with pytest.raises(ShapeError, match=r"^sentence: .*d: 11 != 10"):
        decoder(features, torch.randn(2, 11))
    with pytest.raises(ShapeError, match=r"^sentence: "):
        decoder(features, torch.randn(2, 5, TEXT_DIM))


def test_stage_shape_errors_name_the_argument():
    stage = CASGStage(8, (12, 6), TEXT_DIM)
    vis, sentence = torch.randn(2, 8, 4, 4), torch.randn(2, TEXT_DIM)
    prev = [torch.randn(2, 12, 2, 2), torch.randn(2, 6, 3, 3)]
    with pytest.raises(ShapeError, match=r"^vis: .*c: 9 != 8"):
        stage(torch.randn(2, 9, 4, 4), prev, sentence)
    with pytest.raises(ShapeError, match=r"^prev: expected a sequence of 2"):
        stage(vis, prev[:1], sentence)
    with pytest.raises(ShapeError, match=r"^prev\[1\]: .*c: 7 != 6"):
        stage(vis, [prev[0], torch.randn(2, 7, 3, 3)], sentence)
    with pytest.raises(ShapeError, match=r"^sentence: .*b: 1 != 2"):
        stage(vis, prev, torch.randn(1, TEXT_DIM))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"in_dims": (8, 12, 16)}, "in_dims"),
        ({"in_dims": (8, 12, 0, 20)}, "in_dims"),
        ({"text_dim": 0}, "text_dim"),
        ({"num_classes": 0}, "num_classes"),
        ({"dims": (8, 12)}, "dims"),
        ({"head_kernel_size": 2}, "head_kernel_size"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"norm": "layer"}, "norm"),
        ({"gate": "relu"}, "gate"),
        ({"coord": "vis"}, "coord"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, name):
    args = {"in_dims": IN_DIMS, "text_dim": TEXT_DIM, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}: .*got"):
        CASGDecoder(args.pop("in_dims"), args.pop("text_dim"), **args)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"dim": 0}, "dim"), ({"prev_dims": ()}, "prev_dims"), ({"prev_dims": 12}, "prev_dims"), ({"vis_dim": -1}, "vis_dim")],
)
def test_bad_stage_arguments_raise_value_error(kwargs, name):
    args = {"dim": 8, "prev_dims": (12,), "text_dim": TEXT_DIM, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}: .*got"):
        CASGStage(args.pop("dim"), args.pop("prev_dims"), args.pop("text_dim"), **args)


def test_runs_with_shape_checks_switched_off():
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM).eval()
    inputs = decoder_inputs(2, 9, 7)
    previous = shape_checks_enabled()
    set_shape_checks(False)
    try:
        with torch.no_grad():
            out = decoder(**inputs)
    finally:
        set_shape_checks(previous)
    assert out.shape == (2, 1, 36, 28)


# --------------------------------------------------------------------------- torch.compile


def test_torch_compile_matches_eager():
    assert_compile_matches_eager(CASGDecoder(IN_DIMS, TEXT_DIM).eval(), **decoder_inputs(2, 13, 10))


def test_decoder_without_classifier_returns_the_finest_fused_map():
    torch.manual_seed(0)
    features = [torch.randn(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate((8, 16, 32, 64))]
    sentence = torch.randn(2, 12)
    with_head = CASGDecoder((8, 16, 32, 64), 12).eval()
    torch.manual_seed(0)
    headless = CASGDecoder((8, 16, 32, 64), 12, num_classes=None).eval()
    headless.load_state_dict({k: v for k, v in with_head.state_dict().items() if not k.startswith("head.")})
    assert headless.head is None
    with torch.no_grad():
        fused = headless(features, sentence)
        assert fused.shape == (2, 8, 16, 16)
        torch.testing.assert_close(fused, with_head.forward_features(features, sentence))


# --------------------------------------------------------------------------- num_stages (Table VI)


@settings(max_examples=10)
@given(
    batch=st.integers(1, 2),
    h1=st.integers(1, 12),
    w1=st.integers(1, 12),
    num_stages=st.integers(0, 3),
    num_classes=st.one_of(st.none(), st.integers(1, 2)),
)
def test_removed_stages_keep_the_output_contract(batch, h1, w1, num_stages, num_classes):
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, num_stages=num_stages, num_classes=num_classes).eval()
    out = decoder(**decoder_inputs(batch, h1, w1))
    assert len(decoder.stages) == num_stages
    if num_classes is None:
        level = 0 if num_stages else 3  # V1 whenever a stage is kept, else F4
        finest = pyramid(h1, "ceil")[level], pyramid(w1, "ceil")[level]
        assert out.shape == (batch, decoder.out_dim, *finest)
    else:
        assert out.shape == (batch, num_classes, 4 * h1, 4 * w1)
    assert_finite(out)


def test_removed_stages_go_coarsest_first():
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, num_stages=2, num_classes=2, dtype=torch.float64).eval()
    assert [s.dim for s in decoder.stages] == [12, 8] and [s.prev_dims for s in decoder.stages] == [(20,), (20, 12)]
    features = make_features(2, IN_DIMS, 9, 7, dtype=torch.float64)
    sentence = torch.randn(2, TEXT_DIM, dtype=torch.float64)
    v1, v2, v3, f4 = features
    with torch.no_grad():
        f2 = decoder.stages[0](v2, [f4], sentence)
        f1 = decoder.stages[1](v1, [f4, f2], sentence)
        expected = F.interpolate(decoder.head(f1), size=(36, 28), mode="bilinear", align_corners=False)
        torch.testing.assert_close(decoder(features, sentence), expected)
        # V3's stage is gone: V3 is not read.
        torch.testing.assert_close(decoder([v1, v2, v3 + 5, f4], sentence), expected)


def test_no_stage_classifies_the_fused_coarsest_map():
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, num_stages=0).eval()
    assert decoder.head.in_channels == IN_DIMS[3] and decoder.out_dim == IN_DIMS[3]
    features = make_features(2, IN_DIMS, 8, 8)
    with torch.no_grad():
        expected = F.interpolate(decoder.head(features[3]), size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(decoder(features, torch.randn(2, TEXT_DIM)), expected)


@pytest.mark.parametrize("num_stages", [0, 1, 2])
def test_removed_stages_batch_of_one_and_batch_independence(num_stages):
    decoder = CASGDecoder(IN_DIMS, TEXT_DIM, num_stages=num_stages).eval()
    inputs = decoder_inputs(3, 8, 6)
    assert_batch_independent(run_decoder(decoder), inputs, perturb_sample, changed=1, watched=0)
    decoder.train()
    inputs = decoder_inputs(1, 16, 16)
    inputs["sentence"] = torch.zeros(1, TEXT_DIM)
    leaves = [*inputs["features"], inputs["sentence"]]
    for t in leaves:
        t.requires_grad_(True)
    out = decoder(inputs["features"], inputs["sentence"])
    assert_finite(out)
    backward_sum(out)
    assert_param_grads(decoder, nonzero=False)
    for level in {0, 1, 2} - set(decoder.levels):  # removed stages' V_i: no gradient at all
        assert inputs["features"][level].grad is None
    assert_inputs_grads_finite([t for t in leaves if t.grad is not None])


@pytest.mark.parametrize("value", [4, -1, True, 2.0])
def test_bad_num_stages_raises(value):
    with pytest.raises(ValueError, match=r"^num_stages: .*got"):
        CASGDecoder(IN_DIMS, TEXT_DIM, num_stages=value)


@pytest.mark.parametrize(
    "options", [{"gate": "sigmoid"}, {"language": False}, {"channel_attention": False}, {"spatial_attention": False}]
)
def test_each_table_v_option_changes_the_output(options):
    # The same weights (where the option leaves them) and different outputs: not ignored.
    torch.manual_seed(0)
    full = CASGDecoder(IN_DIMS, TEXT_DIM).eval()
    ablated = CASGDecoder(IN_DIMS, TEXT_DIM, **options).eval()
    own = ablated.state_dict()
    ablated.load_state_dict({k: v for k, v in full.state_dict().items() if k in own and own[k].shape == v.shape}, strict=False)
    inputs = decoder_inputs()
    with torch.no_grad():
        assert not torch.allclose(full(**inputs), ablated(**inputs))


# -- one shared stage config; the pyramid's order ---------------------------------------


def _pyramid(b=1, dims=(8, 16, 24, 32), size=16):
    return [torch.randn(b, c, size >> i, size >> i) for i, c in enumerate(dims)]


def test_the_decoder_builds_every_stage_from_one_stage_config():
    options = CASGStageOptions(gate="sigmoid", language=False, kernel_size=1, coord="recombine", mlp_ratio=2.0)
    decoder = CASGDecoder((8, 16, 24, 32), 8, stage=options, norm="group")
    assert decoder.stage_options is options
    assert all(stage.options == options and stage.norm == "group" for stage in decoder.stages)
    assert CASGDecoder((8, 16, 24, 32), 8).stage_options == CASGStageOptions()  # the paper's defaults


def test_the_old_stage_keywords_still_build_the_same_decoder_with_a_warning():
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match=r"^gate, language: deprecated as CASGDecoder keywords"):
        old = CASGDecoder((8, 16, 24, 32), 8, gate="sigmoid", language=False).eval()
    torch.manual_seed(0)
    new = CASGDecoder((8, 16, 24, 32), 8, stage=CASGStageOptions(gate="sigmoid", language=False)).eval()
    assert list(old.state_dict()) == list(new.state_dict())
    features, sentence = _pyramid(2), torch.randn(2, 8)
    assert torch.equal(old(features, sentence), new(features, sentence))
    with pytest.raises(TypeError, match=r"^colour: not an argument of CASGDecoder nor a field of CASGStageOptions"):
        CASGDecoder((8, 16, 24, 32), 8, colour="red")
    with pytest.raises(ValueError, match=r"^stage: expected a CASGStageOptions; got \{'gate': 'tanh'\}"):
        CASGDecoder((8, 16, 24, 32), 8, stage={"gate": "tanh"})


def test_stage_options_check_their_values_when_made():
    with pytest.raises(ValueError, match=r"^gate: expected one of \('tanh', 'sigmoid'\); got 'relu'"):
        CASGStageOptions(gate="relu")
    with pytest.raises(ValueError, match=r"^mlp_ratio: expected a positive number; got 0"):
        CASGStageOptions(mlp_ratio=0)


@pytest.mark.parametrize("num_stages", [0, 3])
def test_a_pyramid_given_coarsest_first_is_refused(num_stages):
    decoder = CASGDecoder((8, 8, 8, 8), 8, num_stages=num_stages)
    features = _pyramid(dims=(8, 8, 8, 8))
    with pytest.raises(ShapeError, match=r"^features: expected \[V1, V2, V3, F4cross\] high resolution first .* got sizes 2x2, 4x4, 8x8, 16x16$"):
        decoder(features[::-1], torch.randn(1, 8))
    same = [torch.randn(1, 8, 4, 4) for _ in range(4)]  # one grid (a ViT's levels) is not refused
    assert decoder(same, torch.randn(1, 8)).shape == (1, 1, 16, 16)


def test_out_channels_state_what_the_decoder_returns():
    assert CASGDecoder((8, 16, 24, 32), 8).out_channels == 1
    assert CASGDecoder((8, 16, 24, 32), 8, num_classes=None).out_channels == 8
    assert CASGDecoder((8, 16, 24, 32), 8, num_classes=None, num_stages=0).out_channels == 32
    assert CASGStage(12, (8,), 4).out_channels == 12
