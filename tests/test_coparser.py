"""SpatialRecurrentCoparser (S2RM Eq. 1-10): shapes, the gemm == shift identity, properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layer_checks import (
    assert_batch_independent,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    pad_words,
)
from rislayers.coparser import SpatialRecurrentCoparser, coparse_index
from rislayers.shapes import ShapeError

DIRECTION_SETS = [("l2v", "v2l"), ("l2v",), ("v2l",)]


def make_inputs(b, c, h, w, l, d, *, dtype=torch.float32, real=None):
    vis = torch.randn(b, c, h, w, dtype=dtype)
    words = torch.randn(b, l, d, dtype=dtype)
    lengths = real if real is not None else torch.randint(1, l + 1, (b,)).tolist()
    mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    return vis, words, mask


def naive_groups(vis_flat, lang_flat, h, w, directions):
    """The four groups straight from the paper's definitions (Eq. 5-8), with Python loops."""
    b, n, _ = vis_flat.shape
    vis = vis_flat.reshape(b, h, w, -1)
    lang = lang_flat.reshape(b, h, w, -1)
    pairs = {"l2v": (vis, lang), "v2l": (lang, vis)}
    out = []
    for direction in ("l2v", "v2l"):
        if direction not in directions:
            continue
        parsed, generator = pairs[direction]
        col_wise = torch.zeros(b, h, w, n, dtype=vis.dtype)
        row_wise = torch.zeros(b, h, w, n, dtype=vis.dtype)
        for i in range(h):
            for j in range(w):
                for s in range(h):
                    # Shift_Row by s moves row r to row (r + s) mod h: row i now holds row i - s.
                    for t in range(w):
                        col_wise[:, i, j, s * w + t] = (parsed[:, i, j] * generator[:, (i - s) % h, t]).sum(-1)
                for s in range(w):
                    for t in range(h):
                        row_wise[:, i, j, s * h + t] = (parsed[:, i, j] * generator[:, t, (j - s) % w]).sum(-1)
        out += [col_wise.reshape(b, n, n), row_wise.reshape(b, n, n)]
    return torch.cat(out, dim=2)


def twin_layers(c, d, size, **options):
    """The same weights under both implementations (float64)."""
    gemm = SpatialRecurrentCoparser(c, d, size=size, dtype=torch.float64, **options)
    shift = SpatialRecurrentCoparser(c, d, size=size, dtype=torch.float64, implementation="shift", **options)
    shift.load_state_dict(gemm.state_dict())
    return gemm, shift


@settings(max_examples=30)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    c=st.integers(1, 12),
    d=st.integers(1, 10),
    l=st.integers(1, 6),
    directions=st.sampled_from(DIRECTION_SETS),
    balance=st.booleans(),
    fusion=st.sampled_from(["add", "concat"]),
)
def test_gemm_matches_shift(b, h, w, c, d, l, directions, balance, fusion):
    gemm, shift = twin_layers(c, d, (h, w), directions=directions, balance=balance, fusion=fusion)
    vis, words, mask = make_inputs(b, c, h, w, l, d, dtype=torch.float64)
    results = []
    for layer in (gemm, shift):
        layer.train(b * h * w > 1)  # BatchNorm needs two values per channel to train
        vis_in = vis.clone().requires_grad_()
        words_in = words.clone().requires_grad_()
        out = layer(vis_in, words_in, mask)
        (out * torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads = [vis_in.grad, words_in.grad] + [p.grad for p in layer.parameters()]
        results.append((out, grads))
    (out_gemm, grads_gemm), (out_shift, grads_shift) = results
    torch.testing.assert_close(out_gemm, out_shift, atol=1e-5, rtol=1e-5)
    assert len(grads_gemm) == len(grads_shift)
    for g_gemm, g_shift in zip(grads_gemm, grads_shift):
        torch.testing.assert_close(g_gemm, g_shift, atol=1e-5, rtol=1e-5)


@settings(max_examples=20)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    c=st.integers(1, 8),
    directions=st.sampled_from(DIRECTION_SETS),
)
def test_coparse_groups_are_reindexed_affinity(b, h, w, c, directions):
    gemm, shift = twin_layers(c, 3, (h, w), directions=directions)
    vis_flat = torch.randn(b, h * w, c, dtype=torch.float64)
    lang_flat = torch.randn(b, h * w, c, dtype=torch.float64)
    fast = gemm.coparse(vis_flat, lang_flat)
    literal = shift.coparse(vis_flat, lang_flat)
    assert fast.shape == (b, h * w, 2 * len(directions) * h * w)
    torch.testing.assert_close(fast, literal, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("size", [(3, 4), (2, 5), (1, 3)])
def test_shift_follows_the_paper_definitions(size):
    h, w = size
    layer = SpatialRecurrentCoparser(5, 3, size=size, implementation="shift", dtype=torch.float64)
    vis_flat = torch.randn(2, h * w, 5, dtype=torch.float64)
    lang_flat = torch.randn(2, h * w, 5, dtype=torch.float64)
    expected = naive_groups(vis_flat, lang_flat, h, w, ("l2v", "v2l"))
    torch.testing.assert_close(layer.coparse(vis_flat, lang_flat), expected)


def test_coparse_index_is_a_permutation_of_each_affinity_row():
    # Every group reads each entry of its row of A (or A^T) exactly once.
    h, w = 3, 4
    n = h * w
    index = coparse_index(h, w).view(n, 4, n)
    rows = torch.arange(n)[:, None, None]
    assert torch.equal((index[:, :2] // n), rows.expand(n, 2, n))  # l2v: row q of A
    assert torch.equal((index[:, 2:] % n), rows.expand(n, 2, n))  # v2l: column q of A
    for group in range(4):
        sources = index[:, group] % n if group < 2 else index[:, group] // n
        assert torch.equal(sources.sort(dim=1).values, torch.arange(n).expand(n, n))


@settings(max_examples=12)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    c=st.integers(1, 32),
    d=st.integers(1, 16),
    l=st.integers(1, 6),
    implementation=st.sampled_from(["gemm", "shift"]),
)
def test_output_shape_and_dtype(b, h, w, c, d, l, implementation):
    layer = SpatialRecurrentCoparser(c, d, size=(h, w), implementation=implementation).eval()
    vis, words, mask = make_inputs(b, c, h, w, l, d)
    out = layer(vis, words, mask)
    assert out.shape == (b, c, h, w)
    assert out.dtype == torch.float32
    assert_finite(out)
    assert layer(vis, words).shape == (b, c, h, w)  # word_mask=None: all real


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
def test_other_size_raises_shape_error_naming_feats(implementation):
    layer = SpatialRecurrentCoparser(8, 6, size=(4, 5), implementation=implementation)
    words = torch.randn(2, 3, 6)
    with pytest.raises(ShapeError, match=r"^feats: .*h=4, w=5.*\(h: 5 != 4\)"):
        layer(torch.randn(2, 8, 5, 5), words)
    with pytest.raises(ShapeError, match=r"^feats: .*\(w: 4 != 5\)"):
        layer(torch.randn(2, 8, 4, 4), words)
    with pytest.raises(ShapeError, match=r"^feats: .*\(c: 7 != 8\)"):
        layer(torch.randn(2, 7, 4, 5), words)


def test_other_wrong_shapes_raise_shape_error():
    layer = SpatialRecurrentCoparser(8, 6, size=(4, 5))
    vis = torch.randn(2, 8, 4, 5)
    with pytest.raises(ShapeError, match=r"^words: .*\(d: 5 != 6\)"):
        layer(vis, torch.randn(2, 3, 5))
    with pytest.raises(ShapeError, match=r"^words: .*\(b: 3 != 2\)"):
        layer(vis, torch.randn(3, 3, 6))
    with pytest.raises(ShapeError, match=r"^word_mask: "):
        layer(vis, torch.randn(2, 3, 6), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match=r"^vis_flat: .*\(n: 16 != 20\)"):
        layer.coparse(torch.randn(2, 16, 8), torch.randn(2, 16, 8))
    with pytest.raises(ShapeError, match=r"^groups: "):
        layer.compress(torch.randn(2, 20, 40))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"dim": 0}, "dim"),
        ({"text_dim": -1}, "text_dim"),
        ({"size": (4,)}, "size"),
        ({"size": (4, 0)}, "size"),
        ({"pos_dim": 6}, "pos_dim"),
        ({"pos_dim": -8}, "pos_dim"),
        ({"directions": ()}, "directions"),
        ({"directions": "l2v"}, "directions"),
        ({"directions": ("l2v", "l2v")}, "directions"),
        ({"directions": ("v2v",)}, "directions"),
        ({"balance": "yes"}, "balance"),
        ({"implementation": "fft"}, "implementation"),
        ({"fusion": "mul"}, "fusion"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, arg):
    args = {"dim": 8, "text_dim": 6, "size": (3, 3)} | kwargs
    dim, text_dim = args.pop("dim"), args.pop("text_dim")
    with pytest.raises(ValueError, match=rf"^{arg}: "):
        SpatialRecurrentCoparser(dim, text_dim, **args)


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
def test_padding_words_do_not_change_the_output(implementation):
    layer = SpatialRecurrentCoparser(12, 10, size=(3, 4), implementation=implementation).eval()
    vis, words, mask = make_inputs(3, 12, 3, 4, 5, 10, real=[2, 5, 3])
    with torch.no_grad():
        before = layer(vis, words, mask)
        padded_words, padded_mask = pad_words(words, mask, 4)
        after = layer(vis, padded_words, padded_mask)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
def test_batch_independence(implementation):
    layer = SpatialRecurrentCoparser(12, 10, size=(3, 4), implementation=implementation).eval()
    vis, words, mask = make_inputs(3, 12, 3, 4, 5, 10, real=[2, 5, 3])
    inputs = {"feats": vis, "words": words, "word_mask": mask}

    def perturb(values, j):
        new = {key: value.clone() for key, value in values.items()}
        new["feats"][j] = torch.randn_like(new["feats"][j]) * 3
        new["words"][j] = torch.randn_like(new["words"][j])
        new["word_mask"][j] = torch.tensor([True, False, False, False, False])
        return new

    assert_batch_independent(lambda x: layer(**x), inputs, perturb, changed=1, watched=0)
    assert_batch_independent(lambda x: layer(**x), inputs, perturb, changed=0, watched=2)


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
def test_all_padding_sentence_is_finite(implementation):
    layer = SpatialRecurrentCoparser(12, 10, size=(3, 4), implementation=implementation)
    vis, words, _ = make_inputs(2, 12, 3, 4, 5, 10)
    mask = torch.tensor([[False] * 5, [True, True, False, False, False]])
    vis.requires_grad_()
    words.requires_grad_()
    out = layer(vis, words, mask)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([vis, words])
    assert_param_grads(layer, nonzero=False)
    # Nothing reached sample 0 from its (all-padding) words.
    assert words.grad[0].abs().sum() == 0


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
def test_batch_of_one(implementation):
    layer = SpatialRecurrentCoparser(12, 10, size=(2, 3), implementation=implementation)
    vis, words, mask = make_inputs(1, 12, 2, 3, 4, 10)
    vis.requires_grad_()
    out = layer(vis, words, mask)
    assert out.shape == (1, 12, 2, 3)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([vis])
    layer.eval()
    assert_finite(layer(vis, words, mask))


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtype_is_kept(implementation, dtype):
    layer = SpatialRecurrentCoparser(16, 8, size=(3, 4), implementation=implementation, dtype=dtype)
    vis, words, mask = make_inputs(2, 16, 3, 4, 5, 8, dtype=dtype, real=[0, 3])
    out = layer(vis, words, mask)
    assert out.dtype == dtype
    assert_finite(out)
    assert layer.coparse(vis.flatten(2).transpose(1, 2), vis.flatten(2).transpose(1, 2)).dtype == dtype


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"implementation": "shift"},
        {"balance": False},
        {"directions": ("l2v",)},
        {"directions": ("v2l",), "fusion": "concat"},
        {"pos_dim": 0},
        {"pos_dim": 12},
    ],
)
def test_every_parameter_gets_a_gradient(options):
    layer = SpatialRecurrentCoparser(12, 10, size=(3, 4), **options)
    vis, words, mask = make_inputs(3, 12, 3, 4, 5, 10, real=[2, 5, 3])
    backward_sum(layer(vis, words, mask))
    assert_param_grads(layer)


def test_options_change_the_structure():
    full = SpatialRecurrentCoparser(8, 6, size=(3, 4))
    assert full.num_groups == 4 and full.balance_proj.in_channels == 48 and full.balance_proj.out_channels == 4
    one_way = SpatialRecurrentCoparser(8, 6, size=(3, 4), directions=("v2l",), balance=False)
    assert one_way.num_groups == 2 and one_way.balance_proj is None
    assert one_way.compress_proj.in_channels == 24
    assert SpatialRecurrentCoparser(8, 6, size=5).size == (5, 5)
    # Index buffers are not saved: a state dict moves between implementations unchanged.
    assert "group_index" not in full.state_dict() and "positions" not in full.state_dict()
    assert SpatialRecurrentCoparser(8, 6, size=(3, 4), implementation="shift").load_state_dict(full.state_dict())


def test_macs_count_one_affinity_instead_of_four():
    gemm = SpatialRecurrentCoparser(64, 32, size=(6, 6))
    shift = SpatialRecurrentCoparser(64, 32, size=(6, 6), implementation="shift")
    n = 36
    assert shift.macs(10) > gemm.macs(10)
    assert shift.macs(10, batch=3) == 3 * shift.macs(10)
    # The coparsing difference alone: 4 n^2 c vs n^2 c.
    extra_correlations = 3 * n * n * 64
    extra_tile = n * 32 * 64 - 32 * 64
    extra_balance = n * 4 * n * 4 - 4 * n * 4
    assert shift.macs(10) - gemm.macs(10) == extra_correlations + extra_tile + extra_balance


def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    layer = SpatialRecurrentCoparser(16, 8, size=(3, 4)).eval()
    vis, words, mask = make_inputs(2, 16, 3, 4, 5, 8, real=[3, 5])
    compiled = torch.compile(layer)
    with torch.no_grad():
        torch.testing.assert_close(compiled(vis, words, mask), layer(vis, words, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["add", "concat"])
@pytest.mark.parametrize("implementation", ["gemm", "shift"])
def test_an_empty_batch_gives_an_empty_output(implementation, fusion):
    layer = SpatialRecurrentCoparser(8, 6, size=(3, 4), implementation=implementation, fusion=fusion)
    vis, words, mask = make_inputs(0, 8, 3, 4, 5, 6)
    running = layer.compress_norm.running_mean.clone()
    out = layer(vis, words, mask)  # training mode: BatchNorm must not see the empty batch
    assert out.shape == (0, 8, 3, 4) and out.dtype == vis.dtype
    assert torch.equal(layer.compress_norm.running_mean, running)
    with torch.no_grad():
        assert layer.eval()(vis, words, mask).shape == (0, 8, 3, 4)
    # the groups of an empty batch reshape with explicit sizes (no -1 to infer from 0 elements)
    assert layer.coparse(torch.randn(0, 12, 8), torch.randn(0, 12, 8)).shape == (0, 12, 48)


# --------------------------------------------------------------------------- shift=False (Table IV "-Shift")


@settings(max_examples=15)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    c=st.integers(1, 8),
    directions=st.sampled_from(DIRECTION_SETS),
    balance=st.booleans(),
)
def test_without_shift_gemm_matches_shift(b, h, w, c, directions, balance):
    gemm, shift = twin_layers(c, 4, (h, w), directions=directions, balance=balance, shift=False)
    assert gemm.compress_proj.in_channels == len(directions) * (h + w)
    vis, words, mask = make_inputs(b, c, h, w, 3, 4, dtype=torch.float64)
    gemm.eval(), shift.eval()
    torch.testing.assert_close(gemm(vis, words, mask), shift(vis, words, mask), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
@pytest.mark.parametrize("directions", DIRECTION_SETS)
def test_without_shift_only_the_unshifted_slice_is_correlated(implementation, directions):
    # The s = 0 channels of the paper's groups: the position's own row (C) and column (R).
    h, w = 3, 4
    layer = SpatialRecurrentCoparser(5, 3, size=(h, w), directions=directions, shift=False, implementation=implementation, dtype=torch.float64)
    vis_flat = torch.randn(2, h * w, 5, dtype=torch.float64)
    lang_flat = torch.randn(2, h * w, 5, dtype=torch.float64)
    full = naive_groups(vis_flat, lang_flat, h, w, directions).split(h * w, dim=2)
    expected = torch.cat([g[..., : (w if k % 2 == 0 else h)] for k, g in enumerate(full)], dim=2)
    assert layer.group_sizes == (w, h) * len(directions)
    torch.testing.assert_close(layer.coparse(vis_flat, lang_flat), expected)


def test_shift_option_changes_the_output():
    # On a 1x1 map there is no shift to remove: the same weights give the same output.
    with_shift = SpatialRecurrentCoparser(6, 4, size=(1, 1)).eval()
    without = SpatialRecurrentCoparser(6, 4, size=(1, 1), shift=False).eval()
    without.load_state_dict(with_shift.state_dict())
    vis, words, mask = make_inputs(2, 6, 1, 1, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(with_shift(vis, words, mask), without(vis, words, mask))
    # On a larger map the -Shift layer reads fewer channels, and they are the s = 0 ones.
    wide, narrow = SpatialRecurrentCoparser(6, 4, size=(3, 3)), SpatialRecurrentCoparser(6, 4, size=(3, 3), shift=False)
    assert wide.compress_proj.in_channels == 36 and narrow.compress_proj.in_channels == 12
    vis_flat, lang_flat = torch.randn(1, 9, 6), torch.randn(1, 9, 6)
    full, cut = wide.coparse(vis_flat, lang_flat), narrow.coparse(vis_flat, lang_flat)
    torch.testing.assert_close(cut[..., :3], full[..., :3])  # C_l2v, s = 0
    assert not torch.allclose(full[..., 3:6], cut[..., 3:6])  # past s = 0 the layouts part


@pytest.mark.parametrize("implementation", ["gemm", "shift"])
def test_without_shift_padding_batch_and_edge_cases(implementation):
    layer = SpatialRecurrentCoparser(12, 10, size=(3, 4), shift=False, implementation=implementation).eval()
    vis, words, mask = make_inputs(3, 12, 3, 4, 5, 10, real=[2, 5, 3])
    with torch.no_grad():
        padded_words, padded_mask = pad_words(words, mask, 4)
        torch.testing.assert_close(layer(vis, words, mask), layer(vis, padded_words, padded_mask), atol=1e-5, rtol=1e-5)
    inputs = {"feats": vis, "words": words, "word_mask": mask}

    def perturb(values, j):
        new = {key: value.clone() for key, value in values.items()}
        new["feats"][j] = torch.randn_like(new["feats"][j]) * 3
        new["words"][j] = torch.randn_like(new["words"][j])
        return new

    assert_batch_independent(lambda x: layer(**x), inputs, perturb, changed=1, watched=0)
    layer.train()
    vis1, words1 = vis[:1].clone().requires_grad_(), words[:1].clone().requires_grad_()
    out = layer(vis1, words1, torch.zeros(1, 5, dtype=torch.bool))  # batch of one, all padding
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([vis1, words1])
    assert_param_grads(layer, nonzero=False)


def test_without_shift_every_parameter_gets_a_gradient_and_macs_shrink():
    layer = SpatialRecurrentCoparser(12, 10, size=(3, 4), shift=False)
    backward_sum(layer(*make_inputs(3, 12, 3, 4, 5, 10, real=[2, 5, 3])))
    assert_param_grads(layer)
    assert layer.macs(5) < SpatialRecurrentCoparser(12, 10, size=(3, 4)).macs(5)
    with pytest.raises(ValueError, match=r"^shift: "):
        SpatialRecurrentCoparser(8, 6, size=(3, 3), shift="no")
