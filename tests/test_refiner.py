"""DynamicQueryRefiner (SADLR): shapes, paper semantics, ablation structures, robustness."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from rislayers import PaddingMaskWarning, ShapeError
from rislayers.functional import masked_mean
from rislayers.refiner import DynamicQueryRefiner, RefinerOutput
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

C, D = 12, 10
SMALL = (6, 8)

# Table 4b of the paper, spelled out by hand: name -> (hidden_dims, repeats, expected
# (in, out) widths of the dynamic layers for C = 512 input channels).
ABLATION_GRID = {
    "[128]": ((128,), 1, [(512, 128)]),
    "[256]": ((256,), 1, [(512, 256)]),
    "[64,256]": ((64, 256), 1, [(512, 64), (64, 256)]),
    "[512]": ((512,), 1, [(512, 512)]),
    "[128,512]": ((128, 512), 1, [(512, 128), (128, 512)]),
    "[128,512]x2": ((128, 512), 2, [(512, 128), (128, 512), (512, 128), (128, 512)]),
}


def make_inputs(b=2, c=C, h=5, w=4, l=6, d=D, *, dtype=torch.float32, lengths=None):
    feats = torch.randn(b, c, h, w, dtype=dtype)
    words = torch.randn(b, l, d, dtype=dtype)
    lengths = lengths if lengths is not None else [max(1, l - i) for i in range(b)]
    word_mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    return feats, words, word_mask


def reference_forward(module: DynamicQueryRefiner, feats, words, word_mask):
    """A slow, literal SADLR: per-sample conv2d with the generated kernels, argmax/softmax masks."""
    b = feats.shape[0]
    sentences = []
    for i in range(b):
        real = words[i][word_mask[i]]
        sentences.append(real.mean(0) if len(real) else torch.zeros(words.shape[-1]))
    query = module.sentence_proj(torch.stack(sentences))
    all_logits, all_queries = [], []
    for _ in range(module.num_iters):
        all_queries.append(query)
        samples = []
        for i in range(b):
            x = feats[i : i + 1]
            for generator, norm, (c_in, c_out) in zip(module.kernel_generators, module.norms, module.layer_widths):
                kernel = generator(query[i]).view(c_in, c_out)
                x = F.conv2d(x, kernel.t()[:, :, None, None])
                x = F.layer_norm(x.permute(0, 2, 3, 1), (c_out,), norm.weight, norm.bias, norm.eps)
                x = x.permute(0, 3, 1, 2).relu()
            samples.append(x)
        z = torch.cat(samples)
        logits = F.conv2d(z, module.classifier.weight[:, :, None, None], module.classifier.bias)
        all_logits.append(logits)
        if module.num_classes == 2:
            mask = (logits.argmax(1) == 1).float() if module.pooling == "hard" else logits.softmax(1)[:, 1]
        else:
            mask = (logits[:, 0] > 0).float() if module.pooling == "hard" else logits[:, 0].sigmoid()
        pooled = (feats * mask[:, None]).sum((2, 3)) / mask.sum((1, 2)).clamp_min(1e-6)[:, None]
        query = query + pooled if module.update == "sum" else pooled
    return all_logits, all_queries


def twin(module: DynamicQueryRefiner, **changes) -> DynamicQueryRefiner:
    """Same weights, different options."""
    options = dict(
        num_iters=module.num_iters,
        hidden_dims=module.hidden_dims,
        repeats=module.repeats,
        update=module.update,
        pooling=module.pooling,
        num_classes=module.num_classes,
    )
    options.update(changes)
    other = DynamicQueryRefiner(module.dim, module.text_dim, **options)
    other.load_state_dict(module.state_dict())
    return other


def force_classifier(module: DynamicQueryRefiner, foreground: bool) -> None:
    """Make every position background (or foreground) by a large classifier bias."""
    sign = 1.0 if foreground else -1.0
    with torch.no_grad():
        if module.num_classes == 2:
            module.classifier.bias.copy_(torch.tensor([-50.0 * sign, 50.0 * sign]))
        else:
            module.classifier.bias.fill_(50.0 * sign)


# ---------------------------------------------------------------------------------- shapes


@given(
    b=st.integers(1, 3),
    c=st.sampled_from([4, 8, 12]),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    l=st.integers(1, 5),
    d=st.integers(1, 9),
    hidden=st.sampled_from([(4,), (3, 8), (8, 4, 6)]),
    repeats=st.integers(1, 2),
    num_iters=st.integers(1, 4),
    num_classes=st.sampled_from([1, 2]),
    update=st.sampled_from(["sum", "replace"]),
    pooling=st.sampled_from(["hard", "soft"]),
)
def test_output_shapes(b, c, h, w, l, d, hidden, repeats, num_iters, num_classes, update, pooling):
    module = DynamicQueryRefiner(
        c, d, num_iters=num_iters, hidden_dims=hidden, repeats=repeats,
        update=update, pooling=pooling, num_classes=num_classes,
    )
    feats, words, word_mask = make_inputs(b, c, h, w, l, d, lengths=[1 + i % l for i in range(b)])
    out = module(feats, words, word_mask)
    assert isinstance(out, RefinerOutput)
    logits, queries = out
    assert len(logits) == num_iters and len(queries) == num_iters
    for score_map, query in zip(logits, queries):
        assert score_map.shape == (b, num_classes, h, w)
        assert query.shape == (b, c)
    assert_finite(out)


@pytest.mark.parametrize("name", list(ABLATION_GRID))
def test_ablation_structure_is_pinned(name):
    hidden, repeats, expected = ABLATION_GRID[name]
    module = DynamicQueryRefiner(512, 768, hidden_dims=hidden, repeats=repeats, device="meta")
    assert list(module.layer_widths) == expected
    assert len(module.kernel_generators) == len(expected) == len(module.norms)
    for generator, norm, (c_in, c_out) in zip(module.kernel_generators, module.norms, expected):
        assert generator.in_features == 512  # every kernel comes from the (b, c) query
        assert generator.out_features == c_in * c_out
        assert norm.normalized_shape == (c_out,)
    assert module.classifier.in_features == expected[-1][1]
    assert module.classifier.out_features == 2
    assert module.sentence_proj.in_features == 768 and module.sentence_proj.out_features == 512
    # Paper scale (a 480 px input gives a 120 x 120 x 512 map) runs shape-only on meta.
    out = module(torch.randn(1, 512, 120, 120, device="meta"), torch.randn(1, 20, 768, device="meta"))
    assert [t.shape for t in out.logits] == [(1, 2, 120, 120)] * 3


@pytest.mark.parametrize("name", list(ABLATION_GRID))
def test_ablation_grid_runs(name):
    hidden, repeats, expected = ABLATION_GRID[name]
    module = DynamicQueryRefiner(16, D, hidden_dims=hidden, repeats=repeats)
    assert len(module.layer_widths) == len(expected)
    out = module(*make_inputs(c=16, h=3, w=3))
    assert len(out.logits) == 3 and out.logits[-1].shape == (2, 2, 3, 3)
    assert_finite(out)


def test_paper_defaults():
    module = DynamicQueryRefiner(512, 768, device="meta")
    assert (module.num_iters, module.hidden_dims, module.repeats) == (3, (128, 512), 1)
    assert (module.update, module.pooling, module.num_classes) == ("sum", "hard", 2)


# ------------------------------------------------------------------------ paper semantics


@pytest.mark.parametrize("num_classes", [1, 2])
@pytest.mark.parametrize("pooling", ["hard", "soft"])
@pytest.mark.parametrize("update", ["sum", "replace"])
def test_matches_literal_reference(update, pooling, num_classes):
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, update=update, pooling=pooling, num_classes=num_classes)
    feats, words, word_mask = make_inputs(b=3, lengths=[6, 2, 4])
    with torch.no_grad():
        out = module(feats, words, word_mask)
        ref_logits, ref_queries = reference_forward(module, feats, words, word_mask)
    assert_close_outputs(out.logits, ref_logits)
    assert_close_outputs(out.queries, ref_queries)
    # the masks are neither empty nor full here, so every branch above was really exercised
    if num_classes == 2:
        fg = ref_logits[0].argmax(1) == 1
    else:
        fg = ref_logits[0][:, 0] > 0
    assert fg.any() and not fg.all()


def test_replace_and_sum_differ_for_same_weights():
    summed = DynamicQueryRefiner(C, D, hidden_dims=SMALL, update="sum")
    force_classifier(summed, foreground=True)  # a full mask: O_1 = spatial mean, never zero
    replaced = twin(summed, update="replace")
    inputs = make_inputs()
    with torch.no_grad():
        a, b = summed(*inputs), replaced(*inputs)
    torch.testing.assert_close(a.queries[0], b.queries[0])
    torch.testing.assert_close(a.logits[0], b.logits[0])
    pooled = inputs[0].mean((2, 3))
    torch.testing.assert_close(a.queries[1], a.queries[0] + pooled)
    torch.testing.assert_close(b.queries[1], pooled)
    assert not torch.allclose(a.logits[-1], b.logits[-1], atol=1e-4)


def test_hard_and_soft_pooling():
    hard = DynamicQueryRefiner(C, D, hidden_dims=SMALL, num_iters=2, pooling="hard")
    soft = twin(hard, pooling="soft")
    inputs = make_inputs()
    a, b = hard(*inputs), soft(*inputs)
    torch.testing.assert_close(a.logits[0], b.logits[0])
    assert not torch.allclose(a.queries[1], b.queries[1], atol=1e-4)
    # The argmax mask passes no gradient to the classifier; the soft mask does.
    a.queries[1].sum().backward()
    assert hard.classifier.weight.grad is None
    b.queries[1].sum().backward()
    assert soft.classifier.weight.grad is not None and soft.classifier.weight.grad.abs().sum() > 0


def test_parameters_are_shared_across_iterations():
    one = DynamicQueryRefiner(C, D, hidden_dims=SMALL, num_iters=1)
    four = twin(one, num_iters=4)
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in four.parameters())
    inputs = make_inputs()
    torch.testing.assert_close(one(*inputs).logits[0], four(*inputs).logits[0])


def test_macs_match_flop_counter():
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, repeats=2, num_iters=3)
    inputs = make_inputs(b=2, h=5, w=4)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    assert counter.get_total_flops() == 2 * module.macs(5, 4, batch=2)


# ------------------------------------------------------------------------------ robustness


@pytest.mark.parametrize("update", ["sum", "replace"])
def test_empty_mask_gives_finite_queries_and_gradients(update):
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, update=update)
    force_classifier(module, foreground=False)
    feats, words, word_mask = make_inputs()
    feats.requires_grad_(True)
    words.requires_grad_(True)
    out = module(feats, words, word_mask)
    for score_map in out.logits:
        assert (score_map.argmax(1) == 0).all()
    assert_finite(out)
    if update == "sum":
        for query in out.queries[1:]:
            torch.testing.assert_close(query, out.queries[0])
    else:
        for query in out.queries[1:]:
            assert torch.equal(query, torch.zeros_like(query))
    backward_sum(out)
    assert_param_grads(module)
    assert_inputs_grads_finite([feats, words])


def test_all_padding_sentence_and_batch_of_one():
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, pooling="soft")
    feats, words, _ = make_inputs(b=1)
    word_mask = torch.zeros(1, words.shape[1], dtype=torch.bool)
    feats.requires_grad_(True)
    words.requires_grad_(True)
    # Most likely an inverted mask, so it warns at every call; a really empty sentence computes.
    for _ in range(2):
        with pytest.warns(PaddingMaskWarning, match="^word_mask: row 0 of 1 has no real token"):
            out = module(feats, words, word_mask)
    assert_finite(out)
    torch.testing.assert_close(out.queries[0], module.sentence_proj.bias[None].detach().expand(1, -1))
    backward_sum(out)
    assert_inputs_grads_finite([feats, words])
    for name, param in module.named_parameters():
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("pooling", ["hard", "soft"])
@pytest.mark.parametrize("update", ["sum", "replace"])
def test_every_parameter_gets_a_gradient(update, pooling):
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, repeats=2, update=update, pooling=pooling)
    out = module(*make_inputs())
    backward_sum(out)
    assert_param_grads(module)


@given(extra=st.integers(1, 4), lengths=st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_padding_words_do_not_matter(extra, lengths):
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, pooling="soft").eval()
    feats, words, word_mask = make_inputs(b=len(lengths), l=5, lengths=lengths)
    padded_words, padded_mask = pad_words(words, word_mask, extra)
    with torch.no_grad():
        assert_close_outputs(module(feats, words, word_mask), module(feats, padded_words, padded_mask))
    if min(lengths) == 5:  # no padding at all: None means "all real"
        with torch.no_grad():
            assert_close_outputs(module(feats, words, None), module(feats, words, word_mask))


@pytest.mark.parametrize("pooling", ["hard", "soft"])
def test_batch_independence(pooling):
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, pooling=pooling).eval()
    feats, words, word_mask = make_inputs(b=3, lengths=[6, 3, 5])
    inputs = {"feats": feats, "words": words, "word_mask": word_mask}

    def perturb(values, j):
        values = {k: v.clone() for k, v in values.items()}
        values["feats"][j] = torch.randn_like(values["feats"][j]) * 3
        values["words"][j] = torch.randn_like(values["words"][j])
        values["word_mask"][j] = torch.arange(values["word_mask"].shape[1]) < 2
        return values

    assert_batch_independent(lambda v: module(**v), inputs, perturb, changed=1, watched=0)
    assert_batch_independent(lambda v: module(**v), inputs, perturb, changed=0, watched=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pooling", ["hard", "soft"])
def test_dtype_is_kept(dtype, pooling):
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, pooling=pooling, dtype=dtype)
    feats, words, word_mask = make_inputs(dtype=dtype)
    out = module(feats, words, word_mask)
    for t in [*out.logits, *out.queries]:
        assert t.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.dtype == dtype, name
        assert torch.isfinite(param.grad).all(), name


# -------------------------------------------------------------------------- sentence input


@pytest.mark.parametrize("num_classes", [1, 2])
@pytest.mark.parametrize("pooling", ["hard", "soft"])
def test_a_sentence_vector_equal_to_the_masked_mean_gives_the_same_output(pooling, num_classes):
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, pooling=pooling, num_classes=num_classes).eval()
    feats, words, word_mask = make_inputs(b=3, lengths=[6, 2, 4])
    with torch.no_grad():
        from_words = module(feats, words, word_mask)
        from_sentence = module(feats, sentence=masked_mean(words, word_mask))
    assert_close_outputs(from_sentence, from_words)
    with torch.no_grad():  # and the sentence really is what Q1 projects
        torch.testing.assert_close(from_sentence.queries[0], module.sentence_proj(masked_mean(words, word_mask)))


def test_a_sentence_vector_trains_like_words():
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, pooling="soft")
    feats = make_inputs()[0]
    sentence = torch.randn(2, D, requires_grad=True)
    backward_sum(module(feats, sentence=sentence))
    assert_param_grads(module)
    assert sentence.grad is not None and torch.isfinite(sentence.grad).all()


def test_exactly_one_of_words_and_sentence():
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL)
    feats, words, word_mask = make_inputs()
    sentence = torch.randn(2, D)
    with pytest.raises(ValueError, match=r"^words, sentence: expected exactly one .*got both"):
        module(feats, words, sentence=sentence)
    with pytest.raises(ValueError, match=r"^words, sentence: expected exactly one .*got neither"):
        module(feats)
    with pytest.raises(ValueError, match=r"^word_mask: only used with words"):
        module(feats, word_mask=word_mask, sentence=sentence)
    with pytest.raises(ShapeError, match=r"^sentence: .*\(d: 3 != 10\)"):
        module(feats, sentence=torch.randn(2, 3))
    with pytest.raises(ShapeError, match=r"^sentence: .*\(b: 3 != 2\)"):
        module(feats, sentence=torch.randn(3, D))


# ---------------------------------------------------------------------------------- errors


def test_bad_shapes_raise_shape_error_naming_the_argument():
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL)
    feats, words, word_mask = make_inputs()
    with pytest.raises(ShapeError, match=r"^feats: .*c: 7 != 12"):
        module(torch.randn(2, 7, 5, 4), words, word_mask)
    with pytest.raises(ShapeError, match=r"^feats: "):
        module(feats[0], words, word_mask)
    with pytest.raises(ShapeError, match=r"^words: .*d: 3 != 10"):
        module(feats, torch.randn(2, 6, 3), word_mask)
    with pytest.raises(ShapeError, match=r"^words: .*b: 3 != 2"):
        module(feats, torch.randn(3, 6, D), word_mask)
    with pytest.raises(ShapeError, match=r"^word_mask: .*l: 5 != 6"):
        module(feats, words, word_mask[:, :5])
    with pytest.raises(TypeError, match=r"^word_mask: "):
        module(feats, words, word_mask.long())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dim": 0}, "dim"),
        ({"text_dim": -1}, "text_dim"),
        ({"num_iters": 0}, "num_iters"),
        ({"hidden_dims": ()}, "hidden_dims"),
        ({"hidden_dims": (8, 0)}, "hidden_dims"),
        ({"hidden_dims": 128}, "hidden_dims"),
        ({"repeats": 0}, "repeats"),
        ({"update": "mean"}, "update"),
        ({"pooling": "max"}, "pooling"),
        ({"num_classes": 3}, "num_classes"),
    ],
)
def test_bad_constructor_arguments(kwargs, name):
    args = {"dim": C, "text_dim": D, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}: "):
        DynamicQueryRefiner(args.pop("dim"), args.pop("text_dim"), **args)


# --------------------------------------------------------------------------------- compile


def test_torch_compile_matches_eager():
    module = DynamicQueryRefiner(C, D, hidden_dims=SMALL, pooling="soft").eval()
    assert_compile_matches_eager(module, *make_inputs(), rtol=1e-5)
