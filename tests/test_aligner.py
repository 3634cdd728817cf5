"""rislayers.DualBranchAligner: ASDA's word-guided dual-branch aligner (Eq. 6-10)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rislayers.aligner import (
    AlignerOutput,
    DualBranchAligner,
    PublishedDualBranchAligner,
    PublishedSingleBranchAligner,
    PublishedVisualOnlyAligner,
    SingleBranchAligner,
    VisualOnlyAligner,
)
from rislayers.shapes import ShapeError
from tests.layer_checks import (
    assert_batch_independent,
    assert_close_outputs,
    assert_compile_matches_eager,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    pad_words,
)


# (branches, blocks) of the deprecated keywords -> the class that builds those modules.
CLASSES = {
    ("dual", "pre_norm"): DualBranchAligner,
    ("dual", "published"): PublishedDualBranchAligner,
    ("single", "pre_norm"): SingleBranchAligner,
    ("single", "published"): PublishedSingleBranchAligner,
    ("visual", "pre_norm"): VisualOnlyAligner,
    ("visual", "published"): PublishedVisualOnlyAligner,
}


def small(c=16, d=12, *, branches="dual", blocks="pre_norm", **options):
    """The class for ``(branches, blocks)``, at test sizes (one-channel classes take no ``num_masks``)."""
    cls = CLASSES[branches, blocks]
    options = {"num_heads": 4, "upsample_steps": 2, **options}
    if branches == "dual":
        options.setdefault("num_masks", 4)
    if branches == "visual":
        options.pop("word_mask", None)
    return cls(c, d, **options)


def make_inputs(b=2, c=16, h=3, w=4, l=5, d=12, *, dtype=torch.float32, requires_grad=False, lengths=None):
    coarse = torch.randn(b, c, h, w, dtype=dtype, requires_grad=requires_grad)
    words = torch.randn(b, l, d, dtype=dtype, requires_grad=requires_grad)
    word_mask = None
    if lengths is not None:
        word_mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    return {"feats": coarse, "words": words, "word_mask": word_mask}


def check_output_contract(out, b, num_masks, height, width, offset=0.0):
    assert isinstance(out, AlignerOutput)
    assert out.logits.shape == (b, 1, height, width)
    assert out.masks.shape == (b, num_masks, height, width)
    assert out.coefficients.shape == (b, num_masks)
    assert_finite(out)
    assert ((out.masks >= 0) & (out.masks <= 1)).all()
    assert ((out.coefficients >= -1) & (out.coefficients <= 1)).all()
    expected = (out.coefficients[:, :, None, None] * out.masks).sum(dim=1, keepdim=True) + offset
    torch.testing.assert_close(out.logits, expected)


@given(
    b=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 4]),
    c=st.sampled_from([4, 8, 16]),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    l=st.integers(1, 6),
    d=st.integers(1, 10),
    steps=st.integers(0, 2),
    num_masks=st.integers(1, 5),
    layers=st.integers(1, 2),
    norm=st.sampled_from(["batch", "group", "none"]),
    data=st.data(),
)
def test_output_contract_over_sizes(b, heads, c, h, w, l, d, steps, num_masks, layers, norm, data):
    heads = min(heads, c // 4)
    aligner = DualBranchAligner(
        c, d, num_masks=num_masks, num_layers=layers, num_heads=heads, upsample_steps=steps, norm=norm
    ).eval()
    offset = data.draw(st.floats(-3, 3))
    with torch.no_grad():
        aligner.output_bias.fill_(offset)
    lengths = data.draw(st.lists(st.integers(0, l), min_size=b, max_size=b))
    out = aligner(**make_inputs(b, c, h, w, l, d, lengths=lengths))
    check_output_contract(out, b, num_masks, h * 2**steps, w * 2**steps, offset=offset)


@pytest.mark.parametrize("upsample_mode", ["nearest", "bilinear"])
def test_paper_defaults_at_vit_grid(upsample_mode):
    aligner = DualBranchAligner(32, 16, upsample_mode=upsample_mode).eval()
    with torch.no_grad():
        out = aligner(**make_inputs(1, 32, 13, 13, 4, 16))
    check_output_contract(out, 1, 32, 104, 104)


@given(
    extra=st.integers(1, 4),
    lengths=st.lists(st.integers(1, 5), min_size=2, max_size=2),
    masked=st.booleans(),
    blocks=st.sampled_from(["pre_norm", "published"]),
)
def test_padding_words_change_nothing(extra, lengths, masked, blocks):
    aligner = small(blocks=blocks).eval()
    inputs = make_inputs(lengths=lengths if masked else None)
    words, word_mask = pad_words(inputs["words"], inputs["word_mask"], extra)
    with torch.no_grad():
        before = aligner(**inputs)
        after = aligner(**{**inputs, "words": words, "word_mask": word_mask})
    assert_close_outputs(before, after, atol=1e-5)


def test_real_words_matter_and_padded_ones_do_not():
    aligner = small().eval()
    inputs = make_inputs(lengths=[3, 5])
    with torch.no_grad():
        base = aligner(**inputs)
        words = inputs["words"].clone()
        words[0, 4] = torch.randn(12) * 5  # a padding word of sample 0
        assert_close_outputs(aligner(**{**inputs, "words": words}), base, atol=1e-6)
        words[0, 1] = torch.randn(12) * 5  # a real word of sample 0
        changed = aligner(**{**inputs, "words": words})
    assert not torch.allclose(changed.coefficients[0], base.coefficients[0])
    torch.testing.assert_close(changed.masks, base.masks)  # words never reach the CFS branch


@pytest.mark.parametrize("blocks", ["pre_norm", "published"])
def test_all_padding_sentence_is_finite_and_ignores_word_values(blocks):
    aligner = small(blocks=blocks)
    inputs = make_inputs(lengths=[0, 3], requires_grad=True)
    out = aligner(**inputs)
    assert_finite(out)
    backward_sum(out)
    assert_param_grads(aligner, nonzero=False)
    assert_inputs_grads_finite([inputs["feats"], inputs["words"]])
    assert not inputs["words"].grad[0].any()  # no real word: nothing flows to sample 0's words
    aligner.eval()
    with torch.no_grad():
        words = inputs["words"].detach().clone()
        a = aligner(**{**inputs, "words": words})
        words[0] = torch.randn_like(words[0]) * 10
        b = aligner(**{**inputs, "words": words})
    assert_close_outputs(a, b, atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_every_parameter_gets_a_gradient(norm):
    aligner = small(norm=norm, dropout=0.1)
    inputs = make_inputs(lengths=[2, 5], requires_grad=True)
    backward_sum(aligner(**inputs))
    assert_param_grads(aligner)
    assert_inputs_grads_finite([inputs["feats"], inputs["words"]])


@pytest.mark.parametrize("blocks", ["pre_norm", "published"])
def test_batch_independence(blocks):
    aligner = small(blocks=blocks).eval()
    inputs = make_inputs(b=3, lengths=[5, 2, 4])

    def perturb(inp, j):
        new = {key: value.clone() for key, value in inp.items()}
        new["feats"][j] = torch.randn_like(new["feats"][j]) * 3
        new["words"][j] = torch.randn_like(new["words"][j]) * 3
        new["word_mask"][j] = torch.tensor([True, False, True, False, False])
        return new

    assert_batch_independent(lambda inp: aligner(**inp), inputs, perturb, changed=1, watched=0)
    assert_batch_independent(lambda inp: aligner(**inp), inputs, perturb, changed=0, watched=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_dtype_kept_and_finite(dtype, norm):
    aligner = small(norm=norm, dtype=dtype)
    inputs = make_inputs(dtype=dtype, lengths=[0, 3], requires_grad=True)
    out = aligner(**inputs)
    assert all(t.dtype == dtype for t in out)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([inputs["feats"], inputs["words"]])


def test_batch_of_one():
    aligner = small()
    inputs = make_inputs(b=1, h=2, w=2, l=1, requires_grad=True)
    out = aligner(**inputs)
    check_output_contract(out, 1, 4, 8, 8)
    backward_sum(out)
    assert_param_grads(aligner, nonzero=False)


def test_shape_errors_name_the_argument():
    aligner = small()
    inputs = make_inputs()
    with pytest.raises(ShapeError, match=r"^words: .*\(d: 10 != 12\)"):
        aligner(**{**inputs, "words": torch.randn(2, 5, 10)})
    with pytest.raises(ShapeError, match=r"^feats: .*\(c: 8 != 16\)"):
        aligner(**{**inputs, "feats": torch.randn(2, 8, 3, 4)})
    with pytest.raises(ShapeError, match=r"^word_mask: .*\(l: 4 != 5\)"):
        aligner(**{**inputs, "word_mask": torch.ones(2, 4, dtype=torch.bool)})
    with pytest.raises(TypeError, match="word_mask"):
        aligner(**{**inputs, "word_mask": torch.ones(2, 5)})


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="dim"):
        DualBranchAligner(20, 12, num_heads=8)
    with pytest.raises(ValueError, match="upsample_steps"):
        DualBranchAligner(16, 12, num_heads=4, upsample_steps=-1)
    with pytest.raises(ValueError, match="norm"):
        DualBranchAligner(16, 12, num_heads=4, norm="layer")
    with pytest.raises(ValueError, match="num_masks"):
        DualBranchAligner(16, 12, num_heads=4, num_masks=0)


def test_torch_compile_matches_eager():
    aligner = small(num_layers=1, upsample_steps=1).eval()  # one of each part keeps compiling short
    assert_compile_matches_eager(aligner, **make_inputs(lengths=[2, 5]))


# ------------------------------------------------- Table 2 variants and published-code options

BRANCHES = ("dual", "single", "visual")


def check_one_channel_contract(out, b, height, width):
    assert isinstance(out, AlignerOutput)
    assert out.logits.shape == (b, 1, height, width)
    assert out.masks.shape == (b, 1, height, width)
    assert out.coefficients.shape == (b, 0)
    assert_finite(out)
    torch.testing.assert_close(out.masks, out.logits.sigmoid())


@given(
    b=st.integers(1, 3),
    c=st.sampled_from([4, 8]),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    l=st.integers(1, 5),
    d=st.integers(1, 8),
    steps=st.integers(0, 2),
    branches=st.sampled_from(["single", "visual"]),
    blocks=st.sampled_from(["pre_norm", "published"]),
    word_mask=st.booleans(),
    data=st.data(),
)
def test_one_branch_variants_over_sizes(b, c, h, w, l, d, steps, branches, blocks, word_mask, data):
    options = {} if branches == "visual" else {"word_mask": word_mask}  # the visual one reads no words
    aligner = CLASSES[branches, blocks](c, d, num_heads=1, upsample_steps=steps, **options).eval()
    lengths = data.draw(st.lists(st.integers(0, l), min_size=b, max_size=b))
    out = aligner(**make_inputs(b, c, h, w, l, d, lengths=lengths))
    check_one_channel_contract(out, b, h * 2**steps, w * 2**steps)


def test_one_branch_variants_build_only_their_parts():
    single, visual = small(branches="single"), small(branches="visual")
    assert single.coefficient_head is None and single.word_block is not None
    assert visual.coefficient_head is None and visual.word_block is None
    assert single.mask_head.out_channels == visual.mask_head.out_channels == 1
    assert not any(name.startswith("coefficient_head") for name, _ in single.named_parameters())
    assert not any(name.startswith(("word_block", "coefficient_head")) for name, _ in visual.named_parameters())


def test_single_branch_reads_the_words_and_visual_ignores_them():
    inputs = make_inputs(lengths=[3, 5])
    words = inputs["words"].clone()
    words[0, 1] = torch.randn(12) * 5  # a real word of sample 0
    for branches, words_matter in (("single", True), ("visual", False)):
        aligner = small(branches=branches).eval()
        with torch.no_grad():
            base = aligner(**inputs)
            changed = aligner(**{**inputs, "words": words})
            no_mask = aligner(**{**inputs, "word_mask": None})
        if words_matter:
            assert not torch.allclose(changed.logits[0], base.logits[0])
        else:
            assert_close_outputs(changed, base, atol=0, rtol=0)
            assert_close_outputs(no_mask, base, atol=0, rtol=0)
        torch.testing.assert_close(changed.logits[1], base.logits[1])


@pytest.mark.parametrize("branches", ["dual", "single"])
def test_word_mask_false_lets_padding_words_change_the_output(branches):
    inputs = make_inputs(lengths=[3, 5])
    words = inputs["words"].clone()
    words[0, 4] = torch.randn(12) * 5  # a padding word of sample 0
    for honour in (True, False):
        torch.manual_seed(0)
        aligner = small(branches=branches, word_mask=honour).eval()
        with torch.no_grad():
            base = aligner(**inputs)
            changed = aligner(**{**inputs, "words": words})
        if honour:
            assert_close_outputs(changed, base, atol=1e-6)
        else:
            assert not torch.allclose(changed.logits[0], base.logits[0])
            torch.testing.assert_close(changed.logits[1], base.logits[1])  # sample 1 untouched


def test_word_mask_false_attends_to_padding_like_real_words():
    # Ignoring the mask is the same as declaring every token real.
    torch.manual_seed(0)
    aligner = small(word_mask=False).eval()
    inputs = make_inputs(lengths=[2, 4])
    with torch.no_grad():
        assert_close_outputs(aligner(**inputs), aligner(**{**inputs, "word_mask": None}), atol=0, rtol=0)


def assert_normed(tokens):
    """Tokens fresh out of a LayerNorm at initialisation (unit scale, zero shift)."""
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(tokens.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(tokens.shape[:-1]), atol=1e-3, rtol=0)


def test_published_blocks_are_post_norm_with_ffn_ratio_one():
    aligner = small(blocks="published", num_layers=2).eval()
    assert isinstance(aligner.visual_norm, torch.nn.LayerNorm)  # the code's encoder keeps its final norm
    assert all(block.mlp[0].out_features == 16 for block in aligner.visual_blocks)
    assert small().visual_blocks[0].mlp[0].out_features == 64  # pre-norm keeps mlp_ratio
    assert aligner.word_block.mlp[0].out_features == 64  # the code's word block: 2048 at 512
    outputs = []
    for block in [*aligner.visual_blocks, aligner.word_block]:
        block.register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        aligner(**make_inputs(h=3, w=4))
    assert len(outputs) == 3
    for out in outputs:  # each block, the word block too, ends in a LayerNorm
        assert_normed(out)


def test_published_blocks_read_the_rectified_map():
    aligner = small(blocks="published").eval()
    inputs = make_inputs(lengths=[3, 5])
    with torch.no_grad():
        rectified = aligner(**{**inputs, "feats": inputs["feats"].clamp(min=0)})
        assert_close_outputs(aligner(**inputs), rectified, atol=0, rtol=0)
        pre_norm = small().eval()
        assert not torch.allclose(pre_norm(**inputs).logits, pre_norm(**{**inputs, "feats": inputs["feats"].clamp(min=0)}).logits)


@pytest.mark.parametrize(("blocks", "size_free"), [("published", True), ("pre_norm", False)])
def test_published_position_code_counts_raw_positions(blocks, size_free):
    # Raw positions 1..h do not depend on the map size, positions scaled to [0, 2 pi] do.
    codes = []
    for h, w in ((3, 4), (6, 8)):
        aligner = small(blocks=blocks).eval()
        aligner.visual_blocks[0].register_forward_pre_hook(lambda module, args: codes.append(args[1]))
        with torch.no_grad():
            aligner(**make_inputs(h=h, w=w))
    small_code = codes[0].reshape(3, 4, 16)
    corner = codes[1].reshape(6, 8, 16)[:3, :4]
    assert torch.equal(small_code, corner) == size_free


def test_published_word_block_rectifies_its_projections():
    aligner = small(blocks="published").eval()
    block = aligner.word_block
    assert block.word_proj.bias is None  # the code's fc_2
    with torch.no_grad():  # words whose projection is all negative act as zero words
        block.word_proj.weight.copy_(-block.word_proj.weight.abs())
        inputs = make_inputs(lengths=[3, 5])
        positive = inputs["words"].abs()
        zero = torch.zeros_like(positive)
        assert_close_outputs(aligner(**{**inputs, "words": positive}), aligner(**{**inputs, "words": zero}), atol=0, rtol=0)


def test_pre_norm_blocks_do_not_end_normed():
    aligner = small().eval()
    outputs = []
    aligner.visual_blocks[0].register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        aligner(**{**make_inputs(), "feats": torch.randn(2, 16, 3, 4) * 4 + 2})
    assert not torch.allclose(outputs[0].mean(-1), torch.zeros(2, 12), atol=1e-2)


@pytest.mark.parametrize("branches", BRANCHES)
@pytest.mark.parametrize("blocks", ["pre_norm", "published"])
def test_every_parameter_of_every_variant_gets_a_gradient(branches, blocks):
    aligner = small(branches=branches, blocks=blocks, word_mask=blocks == "pre_norm", dropout=0.1)
    inputs = make_inputs(lengths=[2, 5], requires_grad=True)
    backward_sum(aligner(**inputs))
    assert_param_grads(aligner)
    if branches == "visual":
        assert inputs["words"].grad is None  # the words never enter the graph
        assert_inputs_grads_finite([inputs["feats"]])
    else:
        assert_inputs_grads_finite([inputs["feats"], inputs["words"]])


@pytest.mark.parametrize("branches", ["single", "visual"])
def test_one_branch_variants_are_batch_independent(branches):
    aligner = small(branches=branches, blocks="published").eval()
    inputs = make_inputs(b=3, lengths=[5, 2, 4])

    def perturb(inp, j):
        new = {key: value.clone() for key, value in inp.items()}
        new["feats"][j] = torch.randn_like(new["feats"][j]) * 3
        new["words"][j] = torch.randn_like(new["words"][j]) * 3
        return new

    assert_batch_independent(lambda inp: aligner(**inp), inputs, perturb, changed=1, watched=0)


@pytest.mark.parametrize("branches", ["single", "visual"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_branch_variants_keep_the_dtype_and_handle_edge_cases(branches, dtype):
    aligner = small(branches=branches, norm="group", dtype=dtype)
    inputs = make_inputs(b=1, h=1, w=1, dtype=dtype, lengths=[0], requires_grad=True)  # batch of one, no real word
    out = aligner(**inputs)
    assert all(t.dtype == dtype for t in out)
    check_one_channel_contract(out, 1, 4, 4)
    backward_sum(out)
    assert_param_grads(aligner, nonzero=False)
    assert_inputs_grads_finite([inputs["feats"]] + ([inputs["words"]] if branches == "single" else []))


def test_variant_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^branches: expected one of \('dual', 'single', 'visual'\); got 'triple'"):
        DualBranchAligner(16, 12, num_heads=4, branches="triple")
    with pytest.raises(ValueError, match=r"^blocks: expected one of \('pre_norm', 'published'\); got 'post_norm'"):
        DualBranchAligner(16, 12, num_heads=4, blocks="post_norm")
    with pytest.raises(ValueError, match=r"^word_mask: expected a bool; got 'yes'"):
        small(word_mask="yes")
    with pytest.raises(ValueError, match=r"^output_bias: expected a bool; got 1$"):
        small(output_bias=1)


# -- the logit offset ---------------------------------------------------------------

def test_the_logit_offset_is_one_zero_started_parameter_of_the_dual_aligner_only():
    aligner = small()
    assert aligner.output_bias.shape == (1,) and aligner.output_bias.item() == 0.0
    plain = small(output_bias=False)
    assert plain.output_bias is None and "output_bias" not in plain.state_dict()
    for branches in ("single", "visual"):  # their one channel has the mask head's own bias
        assert small(branches=branches).output_bias is None
    out = plain.eval()(**make_inputs())
    check_output_contract(out, 2, 4, 12, 16)


def test_weights_saved_without_the_offset_load_strictly_and_predict_the_same():
    old = small(output_bias=False).eval()
    new = small().eval()
    new.load_state_dict(old.state_dict())  # strict: the missing offset is filled with 0
    assert new.output_bias.item() == 0.0
    inputs = make_inputs()
    torch.testing.assert_close(new(**inputs).logits, old(**inputs).logits)
    with pytest.raises(RuntimeError, match="output_bias"):  # the other way the key is unexpected
        small(output_bias=False).load_state_dict(new.state_dict())


def _all_coefficients_negative(aligner):
    """Drive every coefficient to about -1: the state 2 of 3 tiny ASDA runs fell into."""
    last = aligner.coefficient_head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-5.0)
    return aligner


def test_without_the_offset_negative_coefficients_cap_the_logit_at_zero_and_with_it_the_cap_moves():
    from rislayers import sigmoid_focal_loss

    inputs = make_inputs(lengths=[5, 3])
    plain = _all_coefficients_negative(small(output_bias=False).eval())
    out = plain(**inputs)
    assert (out.coefficients < -0.99).all() and out.logits.max() <= 0  # nothing can be foreground
    offset = _all_coefficients_negative(small().eval())
    offset.load_state_dict(plain.state_dict())
    target = torch.ones_like(out.logits[:, 0], dtype=torch.bool)
    loss = sigmoid_focal_loss(offset(**inputs).logits[:, 0], target).mean()
    loss.backward()
    assert offset.output_bias.grad.item() < 0  # gradient descent raises the offset, and the cap
    with torch.no_grad():
        offset.output_bias.fill_(5.0)
    assert offset(**inputs).logits.max() > 0


# -- one class per variant; the deprecated keywords -----------------------------------

@pytest.mark.parametrize(("branches", "blocks"), sorted(CLASSES))
def test_deprecated_keywords_build_what_the_class_builds(branches, blocks):
    cls = CLASSES[branches, blocks]
    options = {"num_heads": 4, "upsample_steps": 1, "num_masks": 4 if branches == "dual" else 32}
    torch.manual_seed(3)
    with pytest.warns(DeprecationWarning, match=rf"^branches, blocks: deprecated; build {cls.__name__} instead"):
        old = DualBranchAligner(16, 12, branches=branches, blocks=blocks, **options).eval()
    torch.manual_seed(3)
    if branches != "dual":
        del options["num_masks"]
    new = cls(16, 12, **options).eval()
    assert list(old.state_dict()) == list(new.state_dict())
    assert (old.branches, old.blocks) == (new.branches, new.blocks) == (branches, blocks)
    inputs = make_inputs(lengths=[3, 5])
    for got, want in zip(old(**inputs), new(**inputs)):
        assert torch.equal(got, want)


def test_the_classes_without_deprecated_keywords_do_not_warn(recwarn):
    for (branches, _), cls in CLASSES.items():
        options = {"num_masks": 4} if branches == "dual" else {}
        layer = cls(16, 12, num_heads=4, upsample_steps=1, **options)
        assert layer.out_channels == 1
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_one_channel_classes_refuse_the_dual_only_options():
    with pytest.raises(TypeError, match="num_masks"):
        SingleBranchAligner(16, 12, num_masks=4)
    with pytest.raises(TypeError, match="output_bias"):
        VisualOnlyAligner(16, 12, output_bias=True)
    with pytest.raises(TypeError, match="word_mask"):
        PublishedVisualOnlyAligner(16, 12, word_mask=False)

