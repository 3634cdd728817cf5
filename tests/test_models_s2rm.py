"""The S2RM reference system, alone and with SADLR's refiner (tiny sizes only: CPU, random init)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rislayers import (
    CASGDecoder,
    DynamicQueryRefiner,
    FPNDecoder,
    PixelWordAttention,
    ShapeError,
    SpatialRecurrentCoparser,
    TileConcatFusion,
)
from reference_models import build_model
from reference_models.config import parse_overrides
from reference_models.base import RISModel
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
NAMES = ["s2rm_tiny", "s2rm_sadlr_tiny"]


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_shapes_and_gradients(name):
    torch.manual_seed(0)
    model = build_model(name)
    images, ids, mask = model_inputs(2, IMAGE)
    out = model(images, ids, mask)
    assert out.logits.shape == (2, 1, IMAGE, IMAGE)
    if model.config.head is not None and model.config.head.kind == "sadlr":
        # One 2-class map per refinement iteration, at the stride-4 resolution of F_1^cross.
        assert [tuple(t.shape) for t in out.aux_logits] == [(2, 2, IMAGE // 4, IMAGE // 4)] * model.config.head.iters
    else:
        assert [tuple(t.shape) for t in out.aux_logits] == [(2, 1, IMAGE, IMAGE)]
    assert_finite(out)
    loss = model.loss(out, model_target(2, IMAGE))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert_param_grads(model)


def test_sadlr_reads_the_finest_fused_map_instead_of_the_classifier():
    plain, sadlr = build_model("s2rm_tiny"), build_model("s2rm_sadlr_tiny")
    assert isinstance(plain.decoder.head, nn.Conv2d) and plain.head is None
    assert sadlr.decoder.head is None  # no unused classifier beside the refiner
    assert isinstance(sadlr.head.refiner, DynamicQueryRefiner)
    assert sadlr.head.refiner.dim == sadlr.backbone.dims[0] == sadlr.decoder.dims[0]
    # Everything else is the same network.
    shared = {k: v.shape for k, v in plain.state_dict().items() if not k.startswith("decoder.head.")}
    assert shared == {k: v.shape for k, v in sadlr.state_dict().items() if not k.startswith("head.")}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fill", [False, True])
def test_loss_finite_for_empty_and_full_targets(name, fill):
    model = build_model(name)
    images, ids, mask = model_inputs(2, IMAGE)
    loss = model.loss(model(images, ids, mask), model_target(2, IMAGE, fill))
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert_grads_finite(model)


def test_loss_is_single_class_dice_on_the_sigmoid():
    model = build_model("s2rm_tiny").eval()
    images, ids, mask = model_inputs(2, IMAGE)
    target = model_target(2, IMAGE)
    with torch.no_grad():
        out = model(images, ids, mask)
    prob, truth = out.logits[:, 0].sigmoid(), target.float()
    inter, total = (prob * truth).sum(dim=(1, 2)), prob.sum(dim=(1, 2)) + truth.sum(dim=(1, 2))
    expected = (1 - (2 * inter + 1) / (total + 1)).mean()
    torch.testing.assert_close(model.loss(out, target), expected)
    # A confident, correct prediction costs almost nothing.
    perfect = out._replace(aux_logits=[torch.where(target, 30.0, -30.0)[:, None]])
    assert model.loss(perfect, target) < 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_padding_words_do_not_change_the_output(name):
    model = build_model(name).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    extra = 5
    padded_ids = torch.cat([ids, torch.randint(1, 1000, (2, extra))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, extra, dtype=torch.long)], dim=1)
    padded_ids[1, 4:6] = torch.tensor([7, 9])  # garbage under the mask inside the sentence too
    with torch.no_grad():
        assert_close_outputs(model(images, ids, mask), model(images, padded_ids, padded_mask))


def test_image_of_another_size_raises_naming_image_size():
    model = build_model("s2rm_tiny")
    _, ids, mask = model_inputs(2, IMAGE)
    with pytest.raises(ShapeError, match=r"^images: .*H: 96 != 64.*image_size=64"):
        model(torch.randn(2, 3, 96, 96), ids, mask)
    with pytest.raises(ShapeError, match=r"^images: .*image_size=64"):
        model(torch.randn(2, 3, 64, 96), ids, mask)
    with pytest.raises(ShapeError, match=r"^attention_mask: "):
        model(torch.randn(2, 3, IMAGE, IMAGE), ids, mask[:, :3])
    with pytest.raises(ShapeError, match=r"^target: "):
        model.loss(model(*model_inputs(2, IMAGE)), torch.zeros(3, IMAGE, IMAGE, dtype=torch.bool))


def test_coparser_size_follows_image_size():
    model = build_model("s2rm_tiny", image_size=96).eval()
    assert model.coparser.size == (3, 3)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 96), torch.randint(1, 1000, (1, 4)))
    assert out.logits.shape == (1, 1, 96, 96)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"image_size": 80}, "image_size"),
        ({"vision_encoder": "clip"}, "vision_encoder"),
        ({"swin_depths": (1, 1, 1), "swin_heads": (1, 2, 4)}, "swin_depths"),
    ],
)
def test_bad_configs_raise_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"^{field}: .*got"):
        build_model("s2rm_tiny", **overrides)


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_trains_and_predicts(name):
    model = build_model(name)
    images, ids, mask = model_inputs(1, IMAGE)
    out = model(images, ids, mask)
    assert out.logits.shape == (1, 1, IMAGE, IMAGE)
    model.loss(out, model_target(1, IMAGE)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        out = model.eval()(images, ids, mask)
    assert out.logits.shape == (1, 1, IMAGE, IMAGE)
    assert_finite(out)


def test_batch_independence_in_eval():
    model = build_model("s2rm_sadlr_tiny").eval()
    assert_model_batch_independent(model, *model_inputs(3, IMAGE), vocab=1000, changed=0, watched=2)


def test_group_norm_option_replaces_every_batch_norm():
    model = build_model("s2rm_tiny", norm="group")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    images, ids, mask = model_inputs(2, IMAGE)
    model.loss(model(images, ids, mask), model_target(2, IMAGE)).backward()
    assert_param_grads(model)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_round_trip(tmp_path, name):
    model = build_model(name).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    model.save_pretrained(tmp_path)
    loaded = RISModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        assert_close_outputs(model(images, ids, mask), loaded(images, ids, mask), atol=0, rtol=0)


# --------------------------------------------------------------------------- Tables IV-VII (issue 14)

# Every ablation row of S2RM's Tables IV-VII as config fields (ACM, CEFNet's fusion, is not built).
FPN = {"s2rm_decoder": "fpn"}
TABLE_ROWS = {
    "IV/tile_concat": {"s2rm_fusion": "tile_concat", **FPN},
    "IV/-shift-l2v": {"coparser_shift": False, "coparser_directions": ("v2l",), **FPN},
    "IV/-shift-v2l": {"coparser_shift": False, "coparser_directions": ("l2v",), **FPN},
    "IV/-shift": {"coparser_shift": False, **FPN},
    "IV/-l2v": {"coparser_directions": ("v2l",), **FPN},
    "IV/-v2l": {"coparser_directions": ("l2v",), **FPN},
    "IV/-balance": {"coparser_balance": False, **FPN},
    "IV/full": FPN,
    "V/-lang": {"casg_language": False},
    "V/-cha": {"casg_channel": False},
    "V/-spa": {"casg_spatial": False},
    "V/full": {},
    "V/sig": {"casg_activation": "sigmoid"},
    "VI/-d3": {"casg_stages": 2},
    "VI/-d2&3": {"casg_stages": 1},
    "VI/-d1&2&3": {"casg_stages": 0},
    "VII/pwam+fpn": {"s2rm_fusion": "pwam", **FPN},
    "VII/pwam+casg": {"s2rm_fusion": "pwam"},
}


@pytest.mark.parametrize("row", list(TABLE_ROWS))
def test_every_table_row_builds_and_trains_at_tiny_size(row):
    torch.manual_seed(0)
    model = build_model("s2rm_tiny", **TABLE_ROWS[row])
    images, ids, mask = model_inputs(2, IMAGE)
    out = model(images, ids, mask)
    assert out.logits.shape == (2, 1, IMAGE, IMAGE)
    assert_finite(out)
    model.loss(out, model_target(2, IMAGE)).backward()
    # A removed CASG stage does not read its Swin stage, whose output norm then learns nothing.
    unread = {f"backbone.out_norms.{level}." for level in {0, 1, 2} - set(getattr(model.decoder, "levels", (0, 1, 2)))}
    assert_param_grads(model, exclude=lambda name: any(name.startswith(p) for p in unread))


def test_default_models_build_the_same_modules_as_before():
    # The paper's composition, written out as it was before the ablation fields existed.
    model = build_model("s2rm_tiny")
    config, dims = model.config, model.backbone.dims
    coparser = SpatialRecurrentCoparser(dims[-1], config.text.dim, size=config.image_size // 32, pos_dim=config.neck.pos_dim)
    decoder = CASGDecoder(dims, config.text.dim, num_classes=1, norm=config.norm)
    expected = {f"coparser.{k}": v.shape for k, v in coparser.state_dict().items()}
    expected |= {f"decoder.{k}": v.shape for k, v in decoder.state_dict().items()}
    actual = {k: v.shape for k, v in model.state_dict().items() if k.startswith(("coparser.", "decoder."))}
    assert actual == expected
    assert model.fusion is None and model.coparser.shift and model.decoder.num_stages == 3
    # Counted at the commit before the fields: 190 tensors, 1,718,468 parameters.
    assert len(model.state_dict()) == 190 and sum(p.numel() for p in model.parameters()) == 1_718_468


def test_fields_reach_the_layers():
    layer = build_model("s2rm_tiny", coparser_directions=("l2v",), coparser_shift=False, coparser_balance=False,
                        coparser_implementation="shift").coparser
    assert (layer.directions, layer.shift, layer.balance, layer.implementation) == (("l2v",), False, False, "shift")
    stages = build_model("s2rm_tiny", casg_language=False, casg_channel=False, casg_spatial=False,
                         casg_activation="sigmoid", casg_stages=1).decoder.stages
    assert len(stages) == 1
    assert (stages[0].language, stages[0].channel_attention, stages[0].spatial_attention, stages[0].gate) == (
        False, False, False, "sigmoid")
    assert isinstance(build_model("s2rm_tiny", s2rm_fusion="tile_concat").fusion, TileConcatFusion)
    pwam = build_model("s2rm_tiny", s2rm_fusion="pwam")
    assert isinstance(pwam.fusion, PixelWordAttention) and pwam.coparser is None
    assert isinstance(build_model("s2rm_sadlr_tiny", **FPN).decoder, FPNDecoder)


def test_model_args_parse_into_a_buildable_config():
    overrides = parse_overrides(["coparser_directions=l2v", "coparser_shift=false", "casg_stages=0"])
    assert overrides == {"coparser_directions": ("l2v",), "coparser_shift": False, "casg_stages": 0}
    model = build_model("s2rm_tiny", **overrides)
    assert model.coparser.directions == ("l2v",) and model.decoder.num_stages == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"coparser_directions": ()}, "coparser_directions"),
        ({"coparser_directions": ("l2v", "l2v")}, "coparser_directions"),
        ({"coparser_directions": ("up",)}, "coparser_directions"),
        ({"casg_stages": 4}, "casg_stages"),
        ({"casg_stages": -1}, "casg_stages"),
        ({"coparser_shift": "no"}, "coparser_shift"),
        ({"casg_spatial": 0}, "casg_spatial"),
        ({"s2rm_fusion": "acm"}, "s2rm_fusion"),
        ({"s2rm_decoder": "unet"}, "s2rm_decoder"),
        ({"casg_activation": "relu"}, "casg_activation"),
        ({"coparser_implementation": "fft"}, "coparser_implementation"),
        ({"s2rm_fusion": "pwam", "coparser_balance": False}, "coparser_balance"),
        ({"s2rm_decoder": "fpn", "casg_stages": 2}, "casg_stages"),
    ],
)
def test_bad_ablation_fields_raise_naming_the_field(overrides, field):
    # a bad value says what it got; an option of a part this model does not build says who reads it
    with pytest.raises(ValueError, match=rf"^{field}: (.*got|no part of this s2rm \(.*\) model reads it; read by: .*\(s2rm\))"):
        build_model("s2rm_tiny", **overrides)


@pytest.mark.parametrize("row", ["IV/tile_concat", "VII/pwam+fpn", "VI/-d1&2&3"])
def test_ablated_models_ignore_padding_words(row):
    model = build_model("s2rm_tiny", **TABLE_ROWS[row]).eval()
    images, ids, mask = model_inputs(2, IMAGE)
    padded_ids = torch.cat([ids, torch.randint(1, 1000, (2, 3))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert_close_outputs(model(images, ids, mask), model(images, padded_ids, padded_mask))
