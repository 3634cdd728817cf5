"""Plug-ins on the baselines they fit, chosen by slot: every cell builds, trains, ignores
padding words and survives save/load; combinations that cannot meet are refused in one line."""

from __future__ import annotations

import pytest
import torch

from reference_models import RISModel, build_model
from rislayers import CASGDecoder, FPNDecoder
from reference_models.config import ModelConfig
from reference_models.models.parts import AlignerDecoder

CELLS = [
    *[(name, {"neck": neck}) for name in ("lavt_tiny", "vlt_tiny", "lts_tiny") for neck in ("coparser", "tile_concat", "pwam")],
    *[("lavt_tiny", {"decoder": decoder}) for decoder in ("casg", "fpn")],
    *[(name, {"decoder": decoder}) for name in ("vlt_tiny", "lts_tiny") for decoder in ("casg", "fpn")],
    *[(name, {"decoder": "aligner"}) for name in ("lavt_tiny", "vlt_tiny", "lts_tiny")],
    ("lavt_sadlr_tiny", {"neck": "coparser", "decoder": "casg"}),
    ("asda_tiny", {"head": "sadlr"}),
    ("lavt_tiny", {"decoder": "aligner", "head": "sadlr"}),
    ("lts_tiny", {"neck": "tile_concat", "decoder": "aligner", "head": "sadlr"}),
]
IDS = [f"{name}:{','.join(f'{k}={v}' for k, v in slots.items())}" for name, slots in CELLS]


def _trained_parameters(model, slot: str) -> list[torch.nn.Parameter]:
    """The parameters of the part plugged into ``slot`` that a training step must reach."""
    if slot != "decoder":
        return list(getattr(model, slot).parameters())
    part = next(m for m in model.modules() if isinstance(m, (CASGDecoder, FPNDecoder, AlignerDecoder)))
    if isinstance(part, AlignerDecoder) and not part.predicts:  # decode() stops before the aligner's mask head
        return [p for name, p in part.named_parameters() if not name.startswith("aligner.mask_head.")]
    return list(part.parameters())


def _inputs(batch: int = 2, words: int = 6):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 64, 64, generator=generator)
    ids = torch.randint(1, 100, (batch, words), generator=generator)
    mask = torch.ones(batch, words, dtype=torch.long)
    mask[-1, words // 2 :] = 0
    return images, ids, mask


@pytest.mark.parametrize(("name", "slots"), CELLS, ids=IDS)
def test_cell_trains_ignores_padding_and_round_trips(name, slots, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, **slots)
    for slot, kind in slots.items():
        assert getattr(model.config, slot).kind == kind
    images, ids, mask = _inputs()
    out = model(images, ids, mask)
    loss = model.loss(out, torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is None or torch.isfinite(g).all() for g in grads)
    for slot in slots:  # the plugged part is built and trains
        trained = _trained_parameters(model, slot)
        assert trained and all(p.grad is not None for p in trained), slot

    model.eval()
    with torch.no_grad():
        base = model(images, ids, mask).logits
        padded_ids = torch.cat([ids, torch.randint(1, 100, (2, 3))], dim=1)
        padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], dim=1)
        torch.testing.assert_close(model(images, padded_ids, padded_mask).logits, base, rtol=1e-4, atol=1e-5)
        model.save_pretrained(tmp_path / "saved")
        again = RISModel.from_pretrained(tmp_path / "saved").eval()
        assert again.config == model.config
        torch.testing.assert_close(again(images, ids, mask).logits, base)


def test_the_aligner_decoder_predicts_with_the_classifier_and_feeds_the_refiner_its_decoded_map():
    images, ids, mask = _inputs()
    torch.manual_seed(0)
    model = build_model("lavt_tiny", decoder="aligner").eval()
    assert model.decoder.predicts and not hasattr(model.head, "classifier")
    seen = []
    model.decoder.aligner.register_forward_hook(lambda module, args, output: seen.append(output.logits))
    with torch.no_grad():
        two_class = model(images, ids, mask).aux_logits[-1]
    # the word-guided assembly, at stride 4, is the prediction: (0, logit) for the classifier's loss
    assert seen[0].shape == (2, 1, 16, 16)
    torch.testing.assert_close(two_class, torch.cat([torch.zeros_like(seen[0]), seen[0]], dim=1))
    refined = build_model("lts_tiny", decoder="aligner", head="sadlr")
    assert not refined.segment.predicts and refined.segment.aligner.word_block is None
    assert refined.head.refiner.dim == refined.segment.out_channels == refined.segment.aligner.decoded_channels


@pytest.mark.parametrize(
    ("name", "dotted", "flat"),
    [
        ("vlt_tiny", {"decoder": "aligner", "decoder.layers": 2}, {"num_queries": 2}),
        ("lavt_tiny", {"neck": "pwam", "neck.norm_affine": False}, {"decoder_dim": 16}),
    ],
)
def test_parts_that_differ_under_one_flat_name_save_and_load(name, dotted, flat, tmp_path):
    # VLT's transformer and the aligner both read transformer_layers; LAVT's fusion and the pwam neck pwam_norm_affine
    model = build_model(name, **dotted)
    model.save_pretrained(tmp_path / "saved")
    assert RISModel.from_pretrained(tmp_path / "saved", image_size=64).config == model.config
    with pytest.raises(ValueError, match=r"the parts of this config hold different values .*; change them by dotted names$"):
        model.config.replace(**flat)  # a flat name has no single value to start from there


def test_slot_choices_and_their_options_combine_by_any_name():
    config = ModelConfig.create("lavt", neck="coparser", coparser_shift=False, decoder="casg", **{"decoder.stages": 2})
    assert (config.neck.kind, config.neck.shift, config.decoder.kind, config.decoder.stages) == ("coparser", False, "casg", 2)
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("name", "slots", "message"),
    [
        ("lavt_tiny", {"neck": "aligner"}, r"^neck: expected a part with \"kind\" one of \['coparser', 'pwam', 'tile_concat'\]"),
        ("vlt_tiny", {"decoder": "casg", "vlt_response": "spatial"}, r"^decoder: casg reads a pyramid of four maps, but query.response='spatial'"),
        ("lts_tiny", {"decoder": "pwam"}, r"^decoder: expected a part with \"kind\" one of \['aligner', 'casg', 'fpn', 'own'\]"),
        ("vlt_tiny", {"decoder": "aligner", "vlt_response": "spatial"}, r"^decoder: aligner reads the modulated stride-32 map and the words, but query.response='spatial'"),
        ("lavt_tiny", {"decoder": "aligner", "head": "sadlr", "aligner_masks": 4}, r"^aligner_masks: no part of this lavt .*head=sadlr\) model reads it"),
        ("lavt_tiny", {"coparser_shift": False}, r"^coparser_shift: no part of this lavt .* reads it; read by: neck=coparser"),
        ("asda_tiny", {"neck": "coparser"}, r"^neck: asda has no part 'neck'"),
        ("asda_tiny", {"plugin": "sadlr", "aligner_masks": 4}, r"^aligner_masks: no part of this asda .*head=sadlr\) model reads it"),
    ],
)
def test_a_combination_that_cannot_meet_is_refused_in_one_line(name, slots, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, **slots)
