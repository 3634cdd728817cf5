"""``python -m reference_models.convert lavt``: LAVT's release layout in, a strict
``save_pretrained`` folder out; every tensor placed once, foreign files refused in one line.

The releases here are toy-sized fixtures with LAVT's key names and shapes
(``tests/fixtures_lavt.py``); parity with LAVT's own forward is measured outside the
repository (docs/guides/lavt_weights.md).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from reference_models.config import to_flat

from reference_models import build_model
from reference_models.base import RISModel
from reference_models.checkpoint import save_checkpoint
from reference_models.cli import run
from reference_models.convert import LAVT_COMPATIBLE, ConversionError, convert_lavt, lavt_config, main, read_lavt_release
from reference_models.encoders.swin import SwinEncoder
from tests.fixtures_lavt import bert_state, lavt_model_state, save_release

SMALL = {"image_size": 64}  # the fixture's Swin (window 2) at a CPU-sized input


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return save_release(tmp_path_factory.mktemp("lavt") / "refcoco.pth")


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    folder, conversion = convert_lavt(release, tmp_path_factory.mktemp("out") / "lavt", overrides=SMALL)
    return folder, conversion


def _digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().contiguous().reshape(-1)
    return f"{flat.dtype}|" + hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def _batch(b=2, size=64):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (b, 20), generator=g)
    mask = (torch.arange(20)[None] < torch.tensor([20, 5])[:b, None]).long()
    return torch.randn(b, 3, size, size, generator=g), ids * mask, mask


# ----------------------------------------------------------------------- conversion


def test_converted_folder_loads_strictly_with_lavts_configuration(converted):
    folder, _ = converted
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    model = RISModel.from_pretrained(folder).eval()  # strict
    config = to_flat(model.config)  # the flat names the conversion sets
    for key, value in {**LAVT_COMPATIBLE, **SMALL}.items():
        assert config[key] == value, key
    # the sizes come from the tensors' shapes
    assert (config["swin_embed_dim"], config["swin_depths"], config["swin_heads"], config["swin_window"]) == (8, (1, 1, 2, 1), (1, 1, 2, 2), 2)
    assert (config["text_dim"], config["text_layers"], config["text_heads"], config["text_intermediate"]) == (64, 1, 1, 128)
    assert config["decoder_dim"] == 32 and config["head_loss"] == "weighted_ce" and config["plugin"] is None
    with torch.no_grad():
        logits = model(*_batch()).logits
    assert logits.shape == (2, 1, 64, 64) and torch.isfinite(logits).all()


def test_every_tensor_of_the_release_is_placed_once_and_nothing_else_is_kept(release, converted):
    folder, conversion = converted
    data = torch.load(release, weights_only=False)
    sources = {**data["model"], **{f"bert_model.{k}": v for k, v in data["bert_model"].items()}}
    # what LAVT holds and cannot use: rebuilt index buffers and the biases an instance
    # norm or the word softmax removes (written out here, not taken from the converter)
    unused = {k for k in sources if k.endswith("relative_position_index")}
    unused |= {k for k in sources if ".image_lang_att." in k and k.endswith(".0.bias")}
    assert set(conversion.dropped) == unused and len(unused) == 5 + 4 * 4
    expected = Counter(_digest(v[..., 0] if v.dim() == 3 else v) for k, v in sources.items() if k not in unused)
    ours = RISModel.from_pretrained(folder).state_dict()
    assert Counter(_digest(v) for v in ours.values()) == expected
    assert not conversion.fresh


@pytest.mark.parametrize(
    ("lavt", "ours"),
    [
        ("backbone.patch_embed.proj.weight", "backbone.swin.patch_embed.proj.weight"),
        ("backbone.layers.2.blocks.1.attn.qkv.weight", "backbone.swin.layers.2.blocks.1.attn.qkv.weight"),
        ("backbone.layers.2.blocks.1.attn.relative_position_bias_table", "backbone.swin.layers.2.blocks.1.attn.relative_position_bias_table"),
        # LAVT merges patches at the end of a stage, timm at the start of the next
        ("backbone.layers.1.downsample.reduction.weight", "backbone.swin.layers.2.downsample.reduction.weight"),
        ("backbone.layers.0.downsample.norm.bias", "backbone.swin.layers.1.downsample.norm.bias"),
        ("backbone.layers.3.fusion.image_lang_att.f_query.0.weight", "fusions.3.query.weight"),
        ("backbone.layers.1.fusion.image_lang_att.f_key.0.weight", "fusions.1.key.weight"),
        ("backbone.layers.1.fusion.image_lang_att.f_value.0.weight", "fusions.1.value.weight"),
        ("backbone.layers.0.fusion.image_lang_att.W.0.weight", "fusions.0.gathered_proj.weight"),
        ("backbone.layers.2.fusion.vis_project.0.bias", "fusions.2.vis_proj.0.bias"),
        ("backbone.layers.2.fusion.project_mm.0.weight", "fusions.2.out_proj.0.weight"),
        ("backbone.layers.0.res_gate.0.weight", "gates.0.hidden.weight"),
        ("backbone.layers.3.res_gate.2.weight", "gates.3.out.weight"),
        ("backbone.norm2.bias", "backbone.out_norms.2.bias"),
        ("classifier.conv1_4.weight", "decoder.blocks.0.0.0.weight"),
        ("classifier.bn1_4.running_mean", "decoder.blocks.0.0.1.running_mean"),
        ("classifier.bn2_3.running_var", "decoder.blocks.1.1.1.running_var"),
        ("classifier.conv2_2.weight", "decoder.blocks.2.1.0.weight"),
        ("classifier.conv1_1.bias", "head.classifier.bias"),
        ("bert_model.embeddings.word_embeddings.weight", "text_encoder.bert.embeddings.word_embeddings.weight"),
        ("bert_model.encoder.layer.0.attention.self.key.weight", "text_encoder.bert.encoder.layer.0.attention.self.key.weight"),
    ],
)
def test_tensors_land_where_lavts_forward_reads_them(release, converted, lavt, ours):
    data = torch.load(release, weights_only=False)
    entry, _, key = lavt.partition(".") if lavt.startswith("bert_model.") else ("model", "", lavt)
    source = data[entry][key]
    loaded = RISModel.from_pretrained(converted[0]).state_dict()[ours]
    assert torch.equal(loaded, source[..., 0] if source.dim() == 3 else source)


def test_round_trip_of_the_converted_model_is_exact(converted, tmp_path):
    folder, conversion = converted
    first = RISModel.from_pretrained(folder).eval()
    assert all(torch.equal(first.state_dict()[k], v) for k, v in conversion.state.items())
    second = RISModel.from_pretrained(first.save_pretrained(tmp_path / "again")).eval()
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(second(*batch).logits, first(*batch).logits, rtol=0, atol=0)
    assert second.config == first.config


def test_sadlr_target_keeps_lavt_and_starts_the_refiner_fresh(release, converted, tmp_path):
    folder, conversion = convert_lavt(release, tmp_path / "sadlr", model="lavt_sadlr_base", overrides=SMALL)
    assert conversion.fresh and all(k.startswith("head.refiner.") for k in conversion.fresh)
    assert {k for k, why in conversion.dropped.items() if "classifier" in why} == {"classifier.conv1_1.weight", "classifier.conv1_1.bias"}
    model = RISModel.from_pretrained(folder)
    assert model.config.head.kind == "sadlr" and model.config.head.loss == "dice"  # SADLR trains its refiner with Dice
    plain = RISModel.from_pretrained(converted[0]).state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, plain[key]), key
    with torch.no_grad():
        assert torch.isfinite(model.eval()(*_batch()).logits).all()


def test_without_the_last_gate_its_weights_are_dropped_by_name(release, converted, tmp_path):
    folder, conversion = convert_lavt(release, tmp_path / "lean", overrides={**SMALL, "lavt_last_gate": False})
    assert {k for k, why in conversion.dropped.items() if "gate" in why} == {"backbone.layers.3.res_gate.0.weight", "backbone.layers.3.res_gate.2.weight"}
    lean, full = RISModel.from_pretrained(folder).eval(), RISModel.from_pretrained(converted[0]).eval()
    assert len(lean.gates) == 3
    with torch.no_grad():
        torch.testing.assert_close(lean(*_batch()).logits, full(*_batch()).logits, rtol=0, atol=0)


def test_lavt_one_layout_and_a_ddp_prefix_convert_to_the_same_weights(tmp_path, converted):
    one = save_release(tmp_path / "one.pth", lavt_one=True)
    folder, _ = convert_lavt(one, tmp_path / "one", overrides=SMALL)
    ddp = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in lavt_model_state().items()}, "bert_model": bert_state()}, ddp)
    folder_ddp, _ = convert_lavt(ddp, tmp_path / "ddp", overrides=SMALL)
    reference = RISModel.from_pretrained(converted[0]).state_dict()
    for other in (folder, folder_ddp):
        state = RISModel.from_pretrained(other).state_dict()
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


def test_evaluate_and_predict_take_the_converted_folder(converted, tmp_path):
    import numpy as np
    from PIL import Image

    from reference_models.evaluate import main as evaluate_main
    from reference_models.predict import main as predict_main

    folder, _ = converted
    report = tmp_path / "eval.json"
    evaluate_main(["--checkpoint", str(folder), "--data", "synthetic", "--size", "2", "--batch-size", "2", "--workers", "0",
                   "--device", "cpu", "--json", str(report)])
    assert "oIoU" in json.loads(report.read_text())["val"]
    picture = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(picture)
    predict_main(["--checkpoint", str(folder), "--image", str(picture), "--text", "the cat on the left", "--out", str(tmp_path / "o.png")])
    assert (tmp_path / "o.png").is_file() and (tmp_path / "o_mask.png").is_file()


def test_command_line_says_what_it_dropped_and_wrote(release, tmp_path, capsys):
    assert main(["lavt", str(release), "--out", str(tmp_path / "cli"), "--model", "lavt_sadlr_base", "--model-arg", "image_size=64"]) == 0
    out = capsys.readouterr().out
    assert "converted into lavt_sadlr_base" in out and "freshly initialised" in out and "SADLR's refiner" in out
    assert "dropped 2: LAVT's 2-class classifier" in out and "not read: args, epoch, lr_scheduler, optimizer" in out
    assert f"wrote {tmp_path / 'cli'}" in out
    RISModel.from_pretrained(tmp_path / "cli")


# ------------------------------------------------------------- what is refused


def _fails(path: Path, out: Path, **kwargs) -> str:
    with pytest.raises(ConversionError) as info:
        convert_lavt(path, out, overrides=SMALL, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert not out.exists()  # nothing written
    return message


def test_a_renamed_or_missing_key_is_reported_by_name(tmp_path):
    model, bert = lavt_model_state(), bert_state()
    model["backbone.layers.1.fusion.project_mmm.0.weight"] = model.pop("backbone.layers.1.fusion.project_mm.0.weight")
    del model["classifier.bn1_3.running_mean"]
    del bert["encoder.layer.0.output.dense.bias"]
    message = _fails(save_release(tmp_path / "renamed.pth", model, bert), tmp_path / "out")
    assert "keys with no place in the model: backbone.layers.1.fusion.project_mmm.0.weight;" in message
    missing = message.split("weights the file does not hold: ")[1]
    for key in ("fusions.1.out_proj.0.weight", "decoder.blocks.1.0.1.running_mean", "text_encoder.bert.encoder.layer.0.output.dense.bias"):
        assert key in missing
    # an unknown BERT key is named as the release spells it
    bert = bert_state()
    bert["encoder.layer.0.extra.weight"] = torch.zeros(2)
    assert "keys with no place in the model: bert_model.encoder.layer.0.extra.weight" in _fails(
        save_release(tmp_path / "extra.pth", bert=bert), tmp_path / "out"
    )


def test_a_tensor_of_another_shape_is_reported_with_both_shapes(tmp_path):
    model = lavt_model_state()
    model["backbone.layers.0.blocks.0.mlp.fc2.bias"] = torch.zeros(9)
    message = _fails(save_release(tmp_path / "shape.pth", model), tmp_path / "out")
    assert "shapes that differ (file vs model): backbone.swin.layers.0.blocks.0.mlp.fc2.bias ((9,) vs (8,))" in message


class Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/reference_models_convert_pwned"),))


def _timm_swin_file(path: Path, *, microsoft: bool) -> Path:
    swin = SwinEncoder(64, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2).swin.state_dict()
    torch.save({"model": swin} if microsoft else swin, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not a checkpoint at all\n") and p, "not a LAVT release (not a torch checkpoint: neither a zip archive nor a pickle)"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 64) and p, "not a LAVT release (torch cannot read it: truncated or corrupt?"),
        (lambda p: _timm_swin_file(p, microsoft=False), "not a LAVT release: expected a dict whose 'model' holds LAVT's weights (a Swin checkpoint? pass it as --vision-weights)"),
        (lambda p: _timm_swin_file(p, microsoft=True), "not a LAVT release: its 'model' has no PWAM weights (backbone.layers.0.fusion.*) (a Swin checkpoint?"),
        (lambda p: save_checkpoint({"model": build_model("lavt_tiny").state_dict(), "model_config": {}}, p),
         "a reference_models checkpoint, not a LAVT release; evaluate and predict read it as it is"),
        (lambda p: torch.save({"model": lavt_model_state()}, p) or p, "not a complete LAVT release: no 'bert_model' beside 'model'"),
        (lambda p: torch.save({"model": lavt_model_state(), "bert_model": bert_state(), "args": Evil()}, p) or p,
         "needs more than torch.load(weights_only=True) to read (it pickles getattr); refusing to run code from it"),
    ],
    ids=["garbage", "truncated-zip", "timm-swin", "microsoft-swin", "ours", "no-bert", "pickled-object"],
)
def test_files_that_are_not_lavt_releases_are_refused_in_one_line(tmp_path, make, message):
    path = tmp_path / "file.pth"
    make(path)
    assert message in _fails(path, tmp_path / "out")
    assert not Path("/tmp/reference_models_convert_pwned").exists()


def test_the_command_line_error_is_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "swin.pth"
    _timm_swin_file(path, microsoft=False)
    assert run(lambda: main(["lavt", str(path), "--out", str(tmp_path / "out")]), "python -m reference_models.convert") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"python -m reference_models.convert: error: {path}: not a LAVT release")
    with pytest.raises(FileNotFoundError, match="nothing.pth: checkpoint not found"):
        read_lavt_release(tmp_path / "nothing.pth")
    with pytest.raises(ConversionError, match=r"^--model: expected a LAVT model .* got 'vlt_base' \(vlt\)"):
        lavt_config(read_lavt_release(save_release(tmp_path / "r.pth")), "vlt_base")


# ------------------------------------------- LAVT's Swin window layout (windows="segmentation")


def _literal_padded_shifted_attention(block, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: each real token attends to the tokens sharing its window on the
    zero-padded, then cyclically shifted map (padding tokens included, as zeros through
    ``qkv``); tokens of another shift region get -100, as the Swin segmentation code does."""
    b, h, w, c = x.shape
    ws, shift = block.window_size[0], block.shift_size[0]
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    padded = x.new_zeros(b, hp, wp, c)
    padded[:, :h, :w] = x
    attn = block.attn
    heads, width = attn.num_heads, c // attn.num_heads
    q, k, v = attn.qkv(padded).split(c, dim=-1)
    bias = attn._get_rel_pos_bias()[0]

    def moved(p: int, size: int) -> int:
        return (p - shift) % size

    def region(p: int, size: int) -> int:
        return 0 if shift == 0 or p < size - ws else 1 if p < size - shift else 2

    out = x.new_zeros(b, h, w, c)
    for i in range(h):
        for j in range(w):
            pi, pj = moved(i, hp), moved(j, wp)
            members = [(a, e) for a in range(hp) for e in range(wp) if moved(a, hp) // ws == pi // ws and moved(e, wp) // ws == pj // ws]
            heads_out = []
            for m in range(heads):
                part = slice(m * width, (m + 1) * width)
                scores = []
                for a, e in members:
                    pa, pe = moved(a, hp), moved(e, wp)
                    local_q, local_k = (pi % ws) * ws + pj % ws, (pa % ws) * ws + pe % ws
                    same = region(pi, hp) == region(pa, hp) and region(pj, wp) == region(pe, wp)
                    score = (q[:, i, j, part] * k[:, a, e, part]).sum(-1) * attn.scale + bias[m, local_q, local_k]
                    scores.append(score + (0.0 if same else -100.0))
                weights = torch.stack(scores, dim=-1).softmax(dim=-1)
                heads_out.append(sum(weights[:, n, None] * v[:, a, e, part] for n, (a, e) in enumerate(members)))
            out[:, i, j] = attn.proj(torch.cat(heads_out, dim=-1))
    return out


def _swin(windows: str, image_size: int = 64, **sizes) -> SwinEncoder:
    torch.manual_seed(0)
    options = {"embed_dim": 8, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 2), "window_size": 4, **sizes}
    return SwinEncoder(image_size, drop_path_rate=0.0, windows=windows, **options).double().eval()


@pytest.mark.parametrize("size", [5, 7, 3, 6, 4, 8])  # padded by other than the shift, smaller than a window, padded by the shift, multiples
@pytest.mark.parametrize("index", [0, 1])  # plain and shifted blocks
def test_segmentation_windows_pad_the_map_before_the_shift(size, index):
    from timm.models.swin_transformer import SwinTransformerBlock

    encoder = _swin("segmentation")
    block = encoder.swin.layers[1].blocks[index]  # 2 heads, window 4, shift 2 in the odd block
    assert tuple(block.window_size) == (4, 4) and tuple(block.shift_size) == ((2, 2) if index else (0, 0))
    x = torch.randn(2, size, size, block.attn.qkv.in_features, dtype=torch.float64)
    with torch.no_grad():
        expected = _literal_padded_shifted_attention(block, x)
        torch.testing.assert_close(block._attn(x), expected, rtol=1e-9, atol=1e-9)
        if index == 1 and size % 2:  # timm shifts first, then pads: other windows here
            assert (SwinTransformerBlock._attn(block, x) - expected).abs().max() > 1e-4


def test_segmentation_windows_equal_timms_where_no_map_is_padded_or_small():
    timm, segmentation = _swin("timm", 256), _swin("segmentation", 256)  # maps 64, 32, 16, 8: multiples of 4
    segmentation.load_state_dict(timm.state_dict())
    images = torch.randn(1, 3, 256, 256, dtype=torch.float64)
    with torch.no_grad():
        for ours, theirs in zip(segmentation(images), timm(images)):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
        # a padded map (15 x 15 at the last stage) is where they part
        padded_timm, padded_ours = _swin("timm", 240), _swin("segmentation", 240)
        padded_ours.load_state_dict(padded_timm.state_dict())
        small = torch.randn(1, 3, 240, 240, dtype=torch.float64)
        first, *_, last = zip(padded_ours(small), padded_timm(small))
        torch.testing.assert_close(*first, rtol=1e-9, atol=1e-9)
        assert (last[0] - last[1]).abs().max() > 1e-4


def test_segmentation_windows_keep_full_windows_and_shifts_on_small_maps():
    # timm shrinks a window to a map no larger than it and drops the shift; the
    # segmentation code keeps both, so the position tables keep the checkpoint's size
    timm, segmentation = _swin("timm"), _swin("segmentation")  # 64 px: the last map is 2 x 2
    assert tuple(timm.swin.layers[3].blocks[1].window_size) == (2, 2) and not any(timm.swin.layers[3].blocks[1].shift_size)
    last = segmentation.swin.layers[3].blocks[1]
    assert tuple(last.window_size) == (4, 4) and tuple(last.shift_size) == (2, 2)
    assert last.attn.relative_position_bias_table.shape == (49, 2)
    with torch.no_grad():
        assert all(torch.isfinite(f).all() for f in segmentation(torch.randn(1, 3, 64, 64, dtype=torch.float64)))


def test_segmentation_windows_survive_pickle_and_copy_and_refuse_unknown_layouts():
    import copy
    import pickle

    encoder = _swin("segmentation")
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = encoder(images)[-1]
        for clone in (pickle.loads(pickle.dumps(encoder)), copy.deepcopy(encoder)):
            assert clone.windows == "segmentation" and type(clone.swin.layers[0].blocks[1]).__name__ == "_PadFirstSwinBlock"
            assert torch.equal(clone(images)[-1], expected)
    with pytest.raises(ValueError, match=r"^windows: expected one of \('timm', 'segmentation'\); got 'lavt'"):
        SwinEncoder(64, windows="lavt")
