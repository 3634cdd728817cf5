"""VLT and LTS reference models (with and without SADLR) and their building blocks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from layer_checks import assert_close_outputs, assert_finite, assert_model_batch_independent, pad_words

from reference_models import build_model, get_config, list_models
from reference_models.config import LEGACY_DEFAULTS, ModelConfig, to_flat
from reference_models.models.lts import LOCALIZATION_STRIDE, RelevanceFilter, localization_target
from reference_models.models.vlt import PyramidDecoder, QueryGeneration, TransformerLayer, masked_softmax
from reference_models.models.vlt_parts import QueryResponseMaps, ResponseDecoder
from rislayers import ShapeError
from rislayers.functional import sine_position_encoding_2d

# "<registry name>:spatial" is that model with vlt_response="spatial".
NAMES = ["vlt_tiny", "vlt_sadlr_tiny", "vlt_tiny:spatial", "vlt_sadlr_tiny:spatial", "lts_tiny", "lts_sadlr_tiny"]
SIZE = 64
# The top-level modules of VLT before vlt_response existed, in their build order: the
# "modulate" reading must keep building exactly these (so a seed gives the same weights).
MODULATE_CHILDREN = [
    "text_encoder", "backbone", "vis_proj", "text_proj", "query_generation",
    "encoder", "decoder", "query_balance", "mask_decoder", "head",
]  # fmt: skip
# The VLT query part's response default (flat name vlt_response): the registered VLT models must build exactly it.
DEFAULT_RESPONSE = "spatial"
TINY_RESPONSE = "modulate"
# "spatial" reads only the stride-16 and stride-32 Swin maps: the output norms of the
# stride-4 and stride-8 maps are computed but unused, so they get no gradient.
SPATIAL_UNREAD = ("backbone.out_norms.0.", "backbone.out_norms.1.")


def _build(name, **overrides):
    registry_name, _, response = name.partition(":")
    if response:
        overrides["vlt_response"] = response
    return build_model(registry_name, **overrides)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: _build(name) for name in NAMES}


def _batch(b=2, l=8, vocab=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, SIZE, SIZE, generator=g)
    ids = torch.randint(1, vocab, (b, l), generator=g)
    mask = torch.ones(b, l, dtype=torch.long)
    mask[0, l // 2 :] = 0
    return images, ids * mask, mask


def _expected_aux(name, b, refiner_iters=3):
    head = [(b, 2, SIZE // 4, SIZE // 4)] * (refiner_iters if "sadlr" in name else 1)
    loc = [(b, 1, SIZE // LOCALIZATION_STRIDE, SIZE // LOCALIZATION_STRIDE)] if name.startswith("lts") else []
    return loc + head


def test_registered_in_both_sizes():
    names = set(list_models())
    for arch in ("vlt", "vlt_sadlr", "lts", "lts_sadlr"):
        assert {f"{arch}_tiny", f"{arch}_base"} <= names


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_shapes_and_finite_grads(models, name):
    model = models[name].train()
    model.zero_grad()
    out = model(*_batch())
    assert out.logits.shape == (2, 1, SIZE, SIZE)
    assert [tuple(a.shape) for a in out.aux_logits] == _expected_aux(name, 2)
    assert_finite(out)
    loss = model.loss(out, torch.rand(2, SIZE, SIZE) > 0.5)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    query = getattr(model.config, "query", None)
    spatial = model.config.architecture == "vlt" and query is not None and query.response == "spatial"
    unread = SPATIAL_UNREAD if spatial else ()
    for pname, param in model.named_parameters():
        if pname.startswith(unread):
            assert param.grad is None, f"{pname} should not be read"
            continue
        assert param.grad is not None, f"{pname} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"
        # Swin's stochastic depth can drop a whole block in one training step, so only the
        # layers around the backbone must see a non-zero gradient every time.
        if not pname.startswith("backbone."):
            assert param.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_in_eval(models, name):
    out = models[name].eval()(*_batch(b=1))
    assert out.logits.shape == (1, 1, SIZE, SIZE)
    assert [tuple(a.shape) for a in out.aux_logits] == _expected_aux(name, 1)


@pytest.mark.parametrize("name", NAMES)
def test_padding_words_do_not_change_output(models, name):
    model = models[name].eval()
    images, ids, mask = _batch()
    extra = 5
    garbage = torch.randint(1, 100, (2, extra), generator=torch.Generator().manual_seed(1))
    padded_ids = torch.cat([ids, garbage], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, extra, dtype=torch.long)], dim=1)
    with torch.no_grad():
        before = model(images, ids, mask)
        after = model(images, padded_ids, padded_mask)
        # The check must be able to fail: the same garbage words made real do change it.
        changed = model(images, padded_ids, torch.ones_like(padded_mask))
    assert_close_outputs(before, after)
    assert not torch.allclose(before.logits, changed.logits, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batch_independent(models, name):
    model = models[name].eval()
    assert_model_batch_independent(model, *_batch(b=3), vocab=100, changed=2, watched=0)


def test_modulate_builds_the_modules_it_built_before_the_option():
    for name in ("vlt_tiny", "vlt_sadlr_tiny"):
        model = build_model(name, vlt_response="modulate")
        assert [child for child, _ in model.named_children()] == MODULATE_CHILDREN
        assert {key.split(".", 1)[0] for key in model.state_dict()} <= set(MODULATE_CHILDREN)
        assert isinstance(model.mask_decoder, PyramidDecoder)
    spatial = build_model("vlt_tiny", vlt_response="spatial")
    assert [child for child, _ in spatial.named_children()] == [
        "text_encoder", "backbone", "vis_proj", "text_proj", "fuse_16", "query_generation",
        "encoder", "decoder", "query_balance", "response_maps", "mask_decoder", "head",
    ]  # fmt: skip
    assert isinstance(spatial.mask_decoder, ResponseDecoder)


@pytest.mark.parametrize("name", ["vlt_tiny", "vlt_sadlr_tiny"])
def test_default_model_is_the_default_reading_bit_for_bit(name):
    hint = f"the default VLT is no longer vlt_response={DEFAULT_RESPONSE!r} (on purpose? update DEFAULT_RESPONSE)"
    assert ModelConfig.create("vlt").query.response == DEFAULT_RESPONSE, hint
    assert get_config(name.replace("_tiny", "_base")).query.response == DEFAULT_RESPONSE, hint
    # the tiny VLTs keep the first reading, the one that trains from random weights on a CPU
    assert get_config(name).query.response == TINY_RESPONSE
    torch.manual_seed(0)
    default = build_model(name).eval()
    torch.manual_seed(0)
    explicit = build_model(name, vlt_response=TINY_RESPONSE).eval()
    assert list(default.state_dict()) == list(explicit.state_dict()), hint
    for key, value in default.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[key]), f"{key}: {hint}"
    with torch.no_grad():
        assert torch.equal(default(*_batch()).logits, explicit(*_batch()).logits), hint


def test_modulate_forward_is_the_documented_formula():
    torch.manual_seed(0)
    model = build_model("vlt_tiny", vlt_response="modulate").eval()
    images, ids, mask = _batch()
    with torch.no_grad():
        out = model(images, ids, mask)
        text = model.encode_text(ids, mask)
        pyramid = model.backbone(images)
        fused = model.vis_proj(pyramid[-1]) * torch.tanh(model.text_proj(text.sentence))[:, :, None, None]
        queries = model.query_generation(fused, text.words, text.word_mask)
        b, c, h, w = fused.shape
        pos = sine_position_encoding_2d(h, w, c).flatten(1).T[None]
        memory = fused.flatten(2).transpose(1, 2)
        for layer in model.encoder:
            memory = layer(memory, pos)
        answers = queries
        for layer in model.decoder:
            answers = layer(answers, memory=memory, memory_pos=pos)
        mean_answer = (model.query_balance(queries, answers)[..., None] * answers).mean(1)
        modulated = (memory * mean_answer[:, None]).transpose(1, 2).reshape(b, c, h, w)
        expected = model.head(model.mask_decoder([*pyramid[:-1], modulated]), text)
    torch.testing.assert_close(out.aux_logits[-1], expected[-1])


@pytest.mark.parametrize("name", ["vlt_tiny:spatial", "vlt_sadlr_tiny:spatial"])
def test_spatial_all_padding_sentence_is_finite(models, name):
    model = models[name].train()
    model.zero_grad()
    images, ids, _ = _batch()
    out = model(images, ids, torch.zeros_like(ids))
    assert_finite(out)
    model.loss(out, torch.rand(2, SIZE, SIZE) > 0.5).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_sadlr_aux_logits_one_per_iteration():
    for refiner_iters, weights in ((3, (0.15, 0.15, 0.7)), (2, (0.3, 0.7))):
        vlt = build_model("vlt_sadlr_tiny", refiner_iters=refiner_iters, loss_weights=weights).eval()
        lts = build_model("lts_sadlr_tiny", refiner_iters=refiner_iters, loss_weights=weights).eval()
        with torch.no_grad():
            assert len(vlt(*_batch()).aux_logits) == refiner_iters
            # LTS puts its localization map first, so the last entry stays the prediction.
            assert len(lts(*_batch()).aux_logits) == refiner_iters + 1


def test_lts_localization_loss_finite_for_empty_target(models):
    model = models["lts_sadlr_tiny"].train()
    model.zero_grad()
    out = model(*_batch())
    localization = out.aux_logits[0]
    assert localization.shape == (2, 1, SIZE // LOCALIZATION_STRIDE, SIZE // LOCALIZATION_STRIDE)
    empty = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    loss = model.loss(out, empty)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.relevance.generate.weight.grad.abs().sum() > 0


def test_lts_loss_includes_localization_term(models):
    model = models["lts_tiny"].eval()
    target = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    target[:, 8:40, 16:48] = True
    with torch.no_grad():
        out = model(*_batch())
        full = model.loss(out, target)
        dice_only = model.head.loss(out.aux_logits[1:], target)
    located = torch.nn.functional.binary_cross_entropy_with_logits(
        out.aux_logits[0], localization_target(target, out.aux_logits[0].shape[-2:])
    )
    torch.testing.assert_close(full, dice_only + model.localization_weight * located)


@given(b=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6), scale=st.integers(1, 4))
def test_localization_target_is_cell_coverage(b, h, w, scale):
    target = torch.rand(b, h * scale, w * scale, generator=torch.Generator().manual_seed(b * h * w)) > 0.6
    prior = localization_target(target, (h, w))
    assert prior.shape == (b, 1, h, w)
    assert prior.min() >= 0 and prior.max() <= 1
    torch.testing.assert_close(prior.sum(dim=(1, 2, 3)) * scale * scale, target.sum(dim=(1, 2)).float())


def test_wrong_inputs_raise():
    model = build_model("vlt_tiny")
    images, ids, mask = _batch()
    with pytest.raises(ShapeError, match="images"):
        model(images[:, :2], ids, mask)
    with pytest.raises(ShapeError, match="input_ids"):
        model(images, ids[:1], mask)
    with pytest.raises(ShapeError, match="feats"):
        RelevanceFilter(8, 4)(torch.randn(2, 6, 3, 3), torch.randn(2, 4))
    with pytest.raises(ShapeError, match="words"):
        QueryGeneration(8, 4, num_queries=2)(torch.randn(2, 8, 3, 3), torch.randn(3, 5, 4))
    decoder = PyramidDecoder((4, 8), 8, convs=(1,))
    with pytest.raises(ShapeError, match=r"feats\[1\]"):
        decoder([torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)])
    with pytest.raises(ValueError, match="convs"):
        PyramidDecoder((4, 8), 8, convs=(1, 1))
    for arch in ("vlt_tiny", "lts_tiny"):
        with pytest.raises(ValueError, match="decoder_dim"):
            build_model(arch, decoder_dim=30)


@given(b=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5), l=st.integers(1, 6), k=st.integers(1, 4))
def test_query_generation_shapes_and_padding(b, h, w, l, k):
    torch.manual_seed(0)
    qgm = QueryGeneration(16, 12, num_queries=k).eval()
    vis, words = torch.randn(b, 16, h, w), torch.randn(b, l, 12)
    word_mask = torch.ones(b, l, dtype=torch.bool)
    word_mask[0, l // 2 + 1 :] = False
    out = qgm(vis, words, word_mask)
    assert out.shape == (b, k, 16)
    assert_close_outputs(out, qgm(vis, *pad_words(words, word_mask, 3)))


def test_all_padding_sentence_is_finite():
    weights = masked_softmax(torch.randn(2, 4, 5), torch.zeros(2, 5, dtype=torch.bool))  # word_mask: (b, l)
    assert torch.equal(weights, torch.zeros(2, 4, 5))
    qgm = QueryGeneration(16, 12, num_queries=3)
    vis = torch.randn(2, 16, 3, 3, requires_grad=True)
    out = qgm(vis, torch.randn(2, 4, 12), torch.zeros(2, 4, dtype=torch.bool))
    out.sum().backward()
    assert_finite(out)
    assert torch.isfinite(vis.grad).all()


def test_relevance_filter_uses_each_samples_own_kernel():
    torch.manual_seed(0)
    relevance = RelevanceFilter(8, 6)
    feats, sentence = torch.randn(3, 8, 4, 4), torch.randn(3, 6)
    out = relevance(feats, sentence)
    for i in range(3):
        alone = relevance(feats[i : i + 1], sentence[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], alone)
    swapped = relevance(feats, sentence.flip(0))
    assert not torch.allclose(out[0], swapped[0])


def test_transformer_layer_cross_attention_needs_memory_width():
    layer = TransformerLayer(16, num_heads=2, ffn_dim=32, cross_attention=True)
    tokens, memory = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    assert layer(tokens, memory=memory).shape == (2, 3, 16)
    with pytest.raises(ShapeError, match="memory"):
        layer(tokens, memory=torch.randn(2, 7, 8))
    with pytest.raises(ValueError, match="num_heads"):
        TransformerLayer(16, num_heads=3, ffn_dim=32)


@given(b=st.integers(1, 3), k=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5))
def test_query_response_maps_shapes_and_confidence_scaling(b, k, h, w):
    torch.manual_seed(0)
    maps = QueryResponseMaps(16)
    responses, confidence = torch.randn(b, k, 16), torch.rand(b, k)
    out = maps(responses, confidence, size=(h, w))
    assert out.shape == (b, k, h, w)
    assert (out >= 0).all()
    # the confidence scales each answer: halving it equals halving the answer
    torch.testing.assert_close(maps(responses, confidence / 2, (h, w)), maps(responses / 2, confidence, (h, w)))
    # a zero-confidence query reads out the position term alone, whatever its answer was
    silent = torch.zeros(b, k)
    torch.testing.assert_close(maps(responses, silent, (h, w)), maps(torch.randn(b, k, 16), silent, (h, w)))


def test_query_response_maps_read_each_position_from_its_encoding():
    torch.manual_seed(0)
    maps = QueryResponseMaps(16)
    responses, confidence = torch.randn(2, 3, 16), torch.rand(2, 3)
    out = maps(responses, confidence, size=(4, 5))
    pos = sine_position_encoding_2d(4, 5, 16)[:, 2, 3]
    weighted = responses * confidence[..., None]
    expected = torch.relu(weighted @ maps.position_weight(pos) + maps.position_bias(pos))
    torch.testing.assert_close(out[:, :, 2, 3], expected)


def test_query_response_maps_batch_independent_finite_grads_and_dtype():
    torch.manual_seed(0)
    maps = QueryResponseMaps(16).double()
    responses = torch.randn(3, 2, 16, dtype=torch.float64, requires_grad=True)
    confidence = torch.rand(3, 2, dtype=torch.float64, requires_grad=True)
    out = maps(responses, confidence, size=(3, 3))
    assert out.dtype == torch.float64
    out.sum().backward()
    assert torch.isfinite(responses.grad).all() and torch.isfinite(confidence.grad).all()
    with torch.no_grad():
        changed = responses.detach().clone()
        changed[0] = torch.randn_like(changed[0])
        torch.testing.assert_close(maps(changed, confidence, (3, 3))[1:], out[1:].detach())
    with pytest.raises(ShapeError, match="confidence"):
        maps(responses, confidence[:, :1], size=(3, 3))
    with pytest.raises(ValueError, match="dim"):
        QueryResponseMaps(30)


@given(b=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4), grow=st.integers(1, 3))
def test_response_decoder_shapes_and_batch_independence(b, h, w, grow):
    torch.manual_seed(0)
    decoder = ResponseDecoder(3, 8, top_convs=2, steps=2).eval()
    maps = torch.rand(b, 3, h, w)
    sizes = [(h * grow, w * grow), (h * grow + 1, w * 2 * grow)]
    out = decoder(maps, sizes)
    assert out.shape == (b, 8, *sizes[-1])
    assert_finite(out)
    if b > 1:
        changed = maps.clone()
        changed[0] = torch.rand_like(changed[0])
        torch.testing.assert_close(decoder(changed, sizes)[1:], out[1:])


def test_response_decoder_rejects_wrong_inputs():
    decoder = ResponseDecoder(3, 8, top_convs=1, steps=1)
    with pytest.raises(ShapeError, match="sizes"):
        decoder(torch.rand(1, 3, 2, 2), [(4, 4), (8, 8)])
    with pytest.raises(ShapeError, match="maps"):
        decoder(torch.rand(1, 4, 2, 2), [(4, 4)])
    with pytest.raises(ValueError, match="top_convs"):
        ResponseDecoder(3, 8, top_convs=0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        ResponseDecoder(3, 8, top_convs=1, steps=-1)


def test_a_config_saved_before_vlt_response_existed_loads_as_the_old_reading():
    # Weights saved then were built by the "modulate" architecture; the new default would not fit them.
    saved = {**LEGACY_DEFAULTS, "architecture": "vlt"}  # a flat config.json of before
    del saved["vlt_response"]
    assert ModelConfig.from_dict(saved).query.response == "modulate"
    # a flat config saved with the field, and a nested one, keep what they hold
    assert ModelConfig.from_dict({**saved, "vlt_response": "spatial"}).query.response == "spatial"
    assert ModelConfig.from_dict(to_flat(ModelConfig.create("vlt"))).query.response == "spatial"
    assert ModelConfig.from_dict(ModelConfig.create("vlt").to_dict()).query.response == "spatial"
