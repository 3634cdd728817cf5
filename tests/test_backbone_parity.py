"""Every pretrained backbone format loads exactly (issue 16, item 4).

For each weight format the docs name, the reference implementation is built at random
init (open_clip's ``ViT-B-16-quickgelu`` family, timm's Swin, transformers' BertModel) at a
reduced size that keeps its layout and switches, saved in that format, loaded through the
path the CLI uses (``--vision-weights``/``--text-weights`` are the options ``vision_weights``
and ``text_weights``, ``config.vision.weights`` and ``config.text.weights``, read by
:func:`~reference_models.build_model`), and its features are
compared with ours to 1e-5 (float32, eval mode).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from reference_models import build_model
from reference_models.weights import WeightsError

pytest.importorskip("open_clip")
pytest.importorskip("timm")

TOL = 1e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- CLIP ------------------------------------------------------------------------------

# ViT-B/16's family at a reduced size: open_clip's own config file, shrunk, with its
# quick_gelu switch and its layout (one CLIP module, ``visual.*`` beside the text tower).
CLIP_IMAGE = 64
CLIP_SIZES = {"vision": {"width": 128, "layers": 3, "patch_size": 16}, "text": {"width": 64, "heads": 2, "layers": 2}}


def _reference_clip():
    import open_clip
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config("ViT-B-16-quickgelu")
    assert cfg["quick_gelu"] is True and cfg["vision_cfg"]["patch_size"] == 16
    vision = {**cfg["vision_cfg"], **CLIP_SIZES["vision"], "image_size": CLIP_IMAGE}
    text = {**cfg["text_cfg"], **CLIP_SIZES["text"]}
    model = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=cfg["quick_gelu"]).eval()
    # open_clip zero-initialises nothing that matters here, but its random init is small:
    # widen the MLP inputs so the activation's shape (GELU vs QuickGELU) is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("c_fc.weight"):
                p.mul_(4.0)
    return model


def _asda(path, activation: str = "quick_gelu", **overrides):
    """An ASDA model sized like the reference, loading ``path`` as the CLI would."""
    return build_model(
        "asda_tiny",
        image_size=CLIP_IMAGE,
        clip_width=128, clip_layers=3, clip_heads=2, clip_patch=16, clip_embed_dim=32,
        selector_layers=((1, 2), (3, 3)),
        text_dim=64, text_layers=2, text_heads=2, vocab_size=49408, tokenizer="clip", max_words=17,
        clip_activation=activation,
        vision_weights=str(path), text_weights=str(path),
        **overrides,
    ).eval()


def _clip_inputs():
    images = torch.randn(2, 3, CLIP_IMAGE, CLIP_IMAGE)
    ids = torch.zeros(2, 77, dtype=torch.long)
    lengths = (7, 12)
    for row, n in enumerate(lengths):
        ids[row, 0] = 49406  # [SOS]
        ids[row, 1 : n - 1] = torch.randint(1, 49405, (n - 2,))
        ids[row, n - 1] = 49407  # [EOS]: open_clip pools at the largest id
    mask = (torch.arange(77)[None] < torch.tensor(lengths)[:, None]).long()
    return images, ids, mask


def _clip_diffs(reference, ours) -> dict[str, float]:
    images, ids, mask = _clip_inputs()
    captured = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append(o)) for b in reference.visual.transformer.resblocks]
    with torch.no_grad():
        ref_image = reference.encode_image(images)
        ref_sentence = reference.encode_text(ids)
        words = []
        hook = reference.ln_final.register_forward_hook(lambda m, i, o: words.append(o))
        reference.encode_text(ids)
        hook.remove()
        maps, cls_tokens = ours.backbone(images)
        text = ours.text_encoder(ids, mask)
    for h in hooks:
        h.remove()
    layer_tokens = torch.stack([torch.cat([c[:, None], m.flatten(2).transpose(1, 2)], dim=1) for m, c in zip(maps, cls_tokens.unbind(1))])
    visual = ours.backbone.visual
    our_image = visual.ln_post(cls_tokens[:, -1]) @ visual.proj
    return {
        "vision layers": _max_diff(layer_tokens, torch.stack(captured)),
        "image embedding": _max_diff(our_image, ref_image),
        "words": _max_diff(text.words, words[0]),
        "sentence": _max_diff(text.sentence, ref_sentence),
    }


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    """The reduced ViT-B-16-quickgelu, saved as open_clip saves a state dict, under a neutral name."""
    torch.manual_seed(0)
    reference = _reference_clip()
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_clip_quickgelu_checkpoint_loads_exactly(clip_checkpoint):
    reference, path = clip_checkpoint
    ours = _asda(path)
    assert ours.config.vision.activation == "quick_gelu" and ours.config.to_dict()["vision"]["activation"] == "quick_gelu"
    diffs = _clip_diffs(reference, ours)
    assert max(diffs.values()) <= TOL, diffs


def test_clip_with_gelu_differs_from_the_quickgelu_reference(clip_checkpoint):
    """The activation matters: the same weights under nn.GELU are measurably different."""
    reference, path = clip_checkpoint
    diffs = _clip_diffs(reference, _asda(path, activation="gelu"))
    assert min(diffs.values()) > 1e-3, diffs


def test_asda_recipes_use_quickgelu_and_old_configs_keep_gelu():
    from reference_models.config import ModelConfig, to_flat
    from reference_models.registry import get_config

    for name in ("asda_base", "asda_tiny"):  # clip_activation: both CLIP towers
        assert get_config(name).vision.activation == get_config(name).text.activation == "quick_gelu"
    # a (flat) config.json written before the field existed rebuilds what it was trained as
    old = {k: v for k, v in to_flat(get_config("asda_tiny")).items() if k != "clip_activation"}
    assert ModelConfig.from_dict(old).vision.activation == ModelConfig.from_dict(old).text.activation == "gelu"
    with pytest.raises(ValueError, match=r"^clip_activation: expected one of \('gelu', 'quick_gelu'\); got 'relu'$"):
        get_config("asda_tiny").replace(clip_activation="relu")


@pytest.mark.parametrize("name", ["ViT-B-16-quickgelu.bin", "vit_b16_openai.pt"])
def test_clip_file_name_hint_refuses_gelu(clip_checkpoint, tmp_path, name):
    _, path = clip_checkpoint
    hinted = tmp_path / name
    hinted.write_bytes(path.read_bytes())
    with pytest.raises(WeightsError, match=r"trained with quick_gelu .* clip_activation='gelu'; pass --model-arg clip_activation=quick_gelu$") as err:
        _asda(hinted, activation="gelu")
    assert "\n" not in str(err.value) and str(hinted) in str(err.value)
    _asda(hinted)  # the matching activation loads


@pytest.mark.parametrize("quick", [True, False])
def test_clip_open_clip_config_beside_the_file_must_agree(clip_checkpoint, tmp_path, quick):
    import open_clip

    _, path = clip_checkpoint
    copy = tmp_path / "open_clip_model.bin"
    copy.write_bytes(path.read_bytes())
    cfg = dict(open_clip.get_model_config("ViT-B-16-quickgelu"))
    if not quick:
        cfg.pop("quick_gelu")  # open_clip's default: GELU
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    wrong, right = ("gelu", "quick_gelu") if quick else ("quick_gelu", "gelu")
    with pytest.raises(WeightsError, match=rf"open_clip_config.json has quick_gelu={str(quick).lower()}.*clip_activation={wrong!r}"):
        _asda(copy, activation=wrong)
    _asda(copy, activation=right)


def test_clip_checkpoint_of_another_width_fails_in_one_line(clip_checkpoint):
    _, path = clip_checkpoint
    with pytest.raises(WeightsError, match=r"shape mismatch: .*\(file \(128,.*vs model \(96,") as err:
        build_model("asda_tiny", image_size=CLIP_IMAGE, clip_width=96, clip_layers=3, clip_heads=2, clip_patch=16,
                    selector_layers=((1, 2), (3, 3)), vision_weights=str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


# -- Swin -------------------------------------------------------------------------------

SWIN_IMAGE = 128
SWIN = {"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8), "window_size": 4}
SWIN_CONFIG = {"swin_embed_dim": 32, "swin_depths": (2, 2, 2, 2), "swin_heads": (1, 2, 4, 8), "swin_window": 4}


def _reference_swin():
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=SWIN_IMAGE, num_classes=10, drop_path_rate=0.0, **SWIN).eval()


def _microsoft_layout(reference) -> dict:
    """The reference's weights as the original Swin release saves them.

    The Microsoft code downsamples at the end of stages 0-2 (timm: at the start of 1-3),
    calls the classifier ``head`` (timm: ``head.fc``), keeps the ``relative_position_index``
    and shifted blocks' ``attn_mask`` buffers in the file, and wraps it all in ``{"model": ...}``.
    """
    state = {}
    for key, value in reference.state_dict().items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        state[key.replace("head.fc.", "head.")] = value
    window = SWIN["window_size"]
    for name, module in reference.named_modules():
        if name.endswith(".attn"):
            state[f"{name}.relative_position_index"] = torch.randint(0, (2 * window - 1) ** 2, (window**2, window**2))
            block = reference.get_submodule(name[: -len(".attn")])
            if getattr(block, "shift_size", (0, 0)) != (0, 0) and max(block.shift_size) > 0:
                tokens = block.input_resolution[0] * block.input_resolution[1] // window**2
                state[f"{name[: -len('.attn')]}.attn_mask"] = torch.zeros(tokens, window**2, window**2)
    assert any(k.endswith("attn_mask") for k in state) and "layers.0.downsample.reduction.weight" in state
    return {"model": state}


def _swin_model(path, **overrides):
    return build_model("lavt_tiny", image_size=SWIN_IMAGE, vision_weights=str(path), **{**SWIN_CONFIG, **overrides}).eval()


def _swin_diffs(reference, ours) -> tuple[float, float]:
    images = torch.randn(2, 3, SWIN_IMAGE, SWIN_IMAGE)
    backbone = ours.backbone
    with torch.no_grad():
        x, stages = reference.patch_embed(images), []
        for layer in reference.layers:
            x = layer(x)
            stages.append(x)
        y, raw = backbone.stem(images), 0.0
        for i, stage in enumerate(stages):
            y = backbone.run_stage(i, y)
            raw = max(raw, _max_diff(y, stage))
        # forward() adds our (freshly initialised, identity-affine) output norms
        normed = max(
            _max_diff(mine, F.layer_norm(stage, stage.shape[-1:]).permute(0, 3, 1, 2))
            for mine, stage in zip(backbone(images), stages)
        )
    return raw, normed


@pytest.fixture(scope="module")
def swin_reference():
    torch.manual_seed(0)
    return _reference_swin()


@pytest.mark.parametrize("layout", ["timm", "microsoft"])
def test_swin_checkpoint_loads_exactly(swin_reference, tmp_path, layout):
    if layout == "timm":
        path = tmp_path / "swin_timm.pth"
        torch.save(swin_reference.state_dict(), path)
    else:
        path = tmp_path / "swin_tiny_patch4_window4_128_22k.pth"
        torch.save(_microsoft_layout(swin_reference), path)
    raw, normed = _swin_diffs(swin_reference, _swin_model(path))
    assert raw <= TOL and normed <= TOL, (layout, raw, normed)


def test_swin_at_random_init_differs(swin_reference):
    """The parity check can fail: an unloaded backbone is far from the reference."""
    ours = build_model("lavt_tiny", image_size=SWIN_IMAGE, **SWIN_CONFIG).eval()
    raw, _ = _swin_diffs(swin_reference, ours)
    assert raw > 1e-2


def test_swin_checkpoint_of_other_depths_fails_in_one_line(swin_reference, tmp_path):
    path = tmp_path / "swin.pth"
    torch.save(_microsoft_layout(swin_reference), path)
    with pytest.raises(WeightsError, match=r"not in model: layers\.\d\.blocks\.1\.") as err:
        _swin_model(path, swin_depths=(2, 2, 1, 2))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(WeightsError, match=r"shape mismatch"):
        _swin_model(path, swin_embed_dim=16, swin_heads=(1, 2, 4, 8))


# -- BERT -------------------------------------------------------------------------------


def test_bert_directory_loads_exactly(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    reference = BertModel(config).eval()
    reference.save_pretrained(tmp_path)
    ours = build_model("lavt_tiny", text_dim=64, text_weights=str(tmp_path)).eval()
    assert ours.config.text.layers == 2 and ours.config.text.intermediate == 128
    ids = torch.randint(1000, 30000, (2, 9))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours.text_encoder(ids, mask)
        fresh = build_model("lavt_tiny", text_dim=64, text_layers=2, text_heads=2, text_intermediate=128).eval()
        unloaded = fresh.text_encoder(ids, mask).words
    assert _max_diff(got.words, expected) <= TOL
    assert _max_diff(unloaded, expected) > 1e-2
    with pytest.raises(ValueError, match=r"^text_dim: 32 does not match .*hidden_size 64; pass text_dim=64$"):
        build_model("lavt_tiny", text_dim=32, text_weights=str(tmp_path))


def test_swin_checkpoint_of_another_window_is_resized_with_a_warning(swin_reference, tmp_path):
    path = tmp_path / "swin.pth"
    torch.save(_microsoft_layout(swin_reference), path)
    with pytest.warns(UserWarning, match=r"resized to swin_window=2 \(first: layers\.0\.blocks\.0\.attn\.relative_position_bias_table \(49, 1\)\)"):
        _swin_model(path, swin_window=2)
