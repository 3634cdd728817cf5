"""LAVT's fusion blocks (PixelWordAttention, LanguageGate): shapes, semantics, robustness."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from rislayers import ShapeError
from rislayers.pixel_word import LanguageGate, PixelWordAttention
from tests.layer_checks import (
    assert_batch_independent,
    assert_close_outputs,
    assert_finite,
    assert_inputs_grads_finite,
    assert_param_grads,
    backward_sum,
    pad_words,
)

C, D = 8, 6


def make_inputs(b=2, c=C, h=3, w=4, l=5, d=D, *, dtype=torch.float32, lengths=None):
    vis = torch.randn(b, c, h, w, dtype=dtype)
    words = torch.randn(b, l, d, dtype=dtype)
    lengths = lengths if lengths is not None else [max(1, l - i) for i in range(b)]
    word_mask = torch.arange(l)[None, :] < torch.tensor(lengths)[:, None]
    return vis, words, word_mask


def requires_grad(*tensors):
    return [t.clone().requires_grad_(True) if t is not None and t.is_floating_point() else t for t in tensors]


# ------------------------------------------------------------------- literal references


def _linear(layer: nn.Linear, vector: torch.Tensor) -> torch.Tensor:
    out = layer.weight @ vector
    return out if layer.bias is None else out + layer.bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _instance_norm(rows: list[torch.Tensor], norm) -> list[torch.Tensor]:
    """Normalise each channel over the positions (one row per position), then scale and shift
    (when the norm has an affine part)."""
    stacked = torch.stack(rows)
    mean = stacked.mean(0)
    var = ((stacked - mean) ** 2).mean(0)
    normed = [(row - mean) / torch.sqrt(var + norm.eps) for row in rows]
    return normed if norm.weight is None else [row * norm.weight + norm.bias for row in normed]


def literal_pixel_word(module: PixelWordAttention, vis, words, word_mask):
    """PWAM one pixel, one head and one word at a time, with an explicit masked softmax."""
    b, c, h, w = vis.shape
    l = words.shape[1]
    heads = module.num_heads
    key_width = module.query.out_features // heads
    value_width = c // heads
    out = torch.empty_like(vis)
    for i in range(b):
        pixels = [vis[i, :, y, x] for y in range(h) for x in range(w)]
        queries = _instance_norm([_linear(module.query, p) for p in pixels], module.query_norm)
        keys = [_linear(module.key, words[i, j]) for j in range(l)]
        values = [_linear(module.value, words[i, j]) for j in range(l)]
        real = [j for j in range(l) if word_mask is None or bool(word_mask[i, j])]
        gathered = []
        for query in queries:
            per_head = []
            for m in range(heads):
                head_keys = slice(m * key_width, (m + 1) * key_width)
                head_values = slice(m * value_width, (m + 1) * value_width)
                head_value = torch.zeros(value_width, dtype=vis.dtype)
                if real:  # a sentence of padding only gathers nothing
                    scores = {j: float(query[head_keys] @ keys[j][head_keys]) / math.sqrt(key_width) for j in real}
                    top = max(scores.values())
                    weights = {j: math.exp(s - top) for j, s in scores.items()}
                    total = sum(weights.values())
                    for j in real:
                        head_value = head_value + weights[j] / total * values[j][head_values]
                per_head.append(head_value)
            gathered.append(_linear(module.gathered_proj, torch.cat(per_head)))
        gathered = _instance_norm(gathered, module.gathered_norm)
        for position, (pixel, language) in enumerate(zip(pixels, gathered)):
            fused = _gelu(_linear(module.vis_proj[0], pixel)) * language
            y, x = divmod(position, w)
            out[i, :, y, x] = _gelu(_linear(module.out_proj[0], fused))
    return out


def literal_gate(module: LanguageGate, x, fused):
    out = torch.empty_like(x)
    b, _, h, w = x.shape
    for i in range(b):
        for y in range(h):
            for z in range(w):
                f = fused[i, :, y, z]
                gate = torch.tanh(module.out.weight @ torch.relu(module.hidden.weight @ f))
                out[i, :, y, z] = x[i, :, y, z] + gate * f
    return out


class FusionStage(nn.Module):
    """LAVT's use of the two blocks after one backbone stage (what torch.compile sees)."""

    def __init__(self, dim, text_dim):
        super().__init__()
        self.fusion = PixelWordAttention(dim, text_dim, num_heads=2, dropout=0.1)
        self.gate = LanguageGate(dim, zero_init=False)

    def forward(self, vis, words, word_mask):
        return self.gate(vis, self.fusion(vis, words, word_mask))


# ============================================================ PixelWordAttention: shapes


@given(
    b=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 4]),
    per_head=st.integers(1, 4),
    key_per_head=st.none() | st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    l=st.integers(1, 5),
    d=st.integers(1, 8),
    lengths=st.lists(st.integers(0, 5), min_size=3, max_size=3),
    use_mask=st.booleans(),
    norm_affine=st.booleans(),
)
def test_pixel_word_output_shapes(b, heads, per_head, key_per_head, h, w, l, d, lengths, use_mask, norm_affine):
    c = heads * per_head
    key_dim = None if key_per_head is None else heads * key_per_head
    module = PixelWordAttention(c, d, key_dim=key_dim, num_heads=heads, norm_affine=norm_affine)
    assert module.query.out_features == (c if key_dim is None else key_dim)
    vis, words, word_mask = make_inputs(b, c, h, w, l, d, lengths=[min(n, l) for n in lengths[:b]])
    out = module(vis, words, word_mask if use_mask else None)
    assert out.shape == (b, c, h, w)
    assert out.dtype == vis.dtype
    assert_finite(out)


def test_pixel_word_defaults_are_lavt():
    module = PixelWordAttention(128, 768, device="meta")
    assert module.num_heads == 1
    assert module.query.out_features == module.key.out_features == 128  # key_dim = dim
    assert module.value.out_features == 128
    # the paper's stage-1 size at 480 px (120 x 120 positions, 20 BERT tokens), shape only
    out = module(torch.randn(2, 128, 120, 120, device="meta"), torch.randn(2, 20, 768, device="meta"))
    assert out.shape == (2, 128, 120, 120)


# ======================================================== PixelWordAttention: semantics


@pytest.mark.parametrize(("heads", "key_dim", "norm_affine"), [(1, None, True), (2, None, True), (4, 12, True), (1, None, False), (2, 12, False)])
def test_pixel_word_matches_literal_reference(heads, key_dim, norm_affine):
    module = PixelWordAttention(C, D, key_dim=key_dim, num_heads=heads, norm_affine=norm_affine, dtype=torch.float64).eval()
    with torch.no_grad():  # non-trivial affine norms so the reference checks where they act
        for norm in (module.query_norm, module.gathered_norm):
            if norm_affine:
                norm.weight.normal_()
                norm.bias.normal_()
    # a full sentence, a short one, and one of padding only
    vis, words, word_mask = make_inputs(b=3, dtype=torch.float64, lengths=[5, 2, 0])
    with torch.no_grad():
        for mask in (word_mask, None):
            torch.testing.assert_close(
                module(vis, words, mask), literal_pixel_word(module, vis, words, mask), atol=1e-10, rtol=1e-10
            )


def test_channel_norm_is_instance_norm():
    module = PixelWordAttention(C, D, dtype=torch.float64)
    with torch.no_grad():
        module.query_norm.weight.normal_()
        module.query_norm.bias.normal_()
    x = torch.randn(3, C, 10, dtype=torch.float64)
    norm = module.query_norm
    expected = nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    torch.testing.assert_close(norm(x), expected, atol=1e-12, rtol=1e-12)
    # one position: defined (no NaN) and equal to the bias
    torch.testing.assert_close(norm(x[..., :1]), norm.bias[None, :, None].expand(3, C, 1))


def test_pixel_word_without_norm_affine_is_lavts_instance_norm():
    # LAVT's code: nn.InstanceNorm1d without affine after the query and gathered projections
    module = PixelWordAttention(C, D, norm_affine=False, dtype=torch.float64)
    assert module.query_norm.weight is None and module.gathered_norm.bias is None
    assert not [k for k in module.state_dict() if "norm" in k]
    affine = PixelWordAttention(C, D, dtype=torch.float64)
    assert set(affine.state_dict()) - set(module.state_dict()) == {
        "query_norm.weight", "query_norm.bias", "gathered_norm.weight", "gathered_norm.bias"
    }
    x = torch.randn(3, C, 10, dtype=torch.float64)
    for norm in (nn.InstanceNorm1d(C), nn.InstanceNorm1d(C).train()):
        torch.testing.assert_close(module.query_norm(x), norm(x), atol=1e-12, rtol=1e-12)
    # one position: defined, and zero (nothing to shift it with)
    assert torch.equal(module.query_norm(x[..., :1]), torch.zeros(3, C, 1, dtype=torch.float64))
    # a freshly initialised affine norm (scale 1, shift 0) computes the same function
    affine.load_state_dict(module.state_dict(), strict=False)
    vis, words, word_mask = make_inputs(b=3, dtype=torch.float64, lengths=[5, 2, 0])
    with torch.no_grad():
        assert_close_outputs(affine(vis, words, word_mask), module(vis, words, word_mask), atol=1e-12, rtol=1e-12)
        # ... and a trained-looking one does not
        affine.gathered_norm.bias.normal_()
        assert (affine(vis, words, word_mask) - module(vis, words, word_mask)).abs().max() > 1e-3


def test_pixel_word_all_padding_without_norm_affine_reads_no_language():
    module = PixelWordAttention(C, D, num_heads=2, norm_affine=False)
    vis, words, _ = make_inputs(b=2)
    no_words = torch.zeros(words.shape[:2], dtype=torch.bool)
    vis, words = requires_grad(vis, words)
    out = module(vis, words, no_words)
    backward_sum(out)
    assert_inputs_grads_finite([vis, words])
    with torch.no_grad():  # the gathered feature is zero and no shift follows it
        pixels = vis.detach().flatten(2).transpose(1, 2)
        expected = module.out_proj(module.vis_proj(pixels) * 0.0)
        torch.testing.assert_close(out, expected.transpose(1, 2).reshape(out.shape))


@pytest.mark.parametrize("extra", [1, 4])
@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("norm_affine", [True, False])
def test_pixel_word_ignores_padding_words(extra, with_mask, norm_affine):
    module = PixelWordAttention(C, D, num_heads=2, norm_affine=norm_affine).eval()
    vis, words, word_mask = make_inputs(b=3, lengths=[5, 3, 1])
    word_mask = word_mask if with_mask else None
    padded_words, padded_mask = pad_words(words, word_mask, extra, fill=50.0)
    with torch.no_grad():
        assert_close_outputs(module(vis, padded_words, padded_mask), module(vis, words, word_mask))


def test_pixel_word_full_mask_equals_no_mask():
    module = PixelWordAttention(C, D).eval()
    vis, words, _ = make_inputs()
    with torch.no_grad():
        full = torch.ones(words.shape[:2], dtype=torch.bool)
        assert_close_outputs(module(vis, words, full), module(vis, words, None), atol=0, rtol=0)


def test_pixel_word_changes_with_the_real_words():
    # guards the padding tests: the words do matter when they are real
    module = PixelWordAttention(C, D).eval()
    vis, words, word_mask = make_inputs(lengths=[5, 2])
    other = words.clone()
    other[1, :2] = torch.randn(2, D)
    with torch.no_grad():
        a, b = module(vis, words, word_mask), module(vis, other, word_mask)
    assert (a[1] - b[1]).abs().max() > 1e-3
    torch.testing.assert_close(a[0], b[0])


def test_pixel_word_all_padding_gathers_nothing():
    module = PixelWordAttention(C, D, num_heads=2)
    vis, words, _ = make_inputs(b=2)
    no_words = torch.zeros(words.shape[:2], dtype=torch.bool)
    vis, words = requires_grad(vis, words)
    out = module(vis, words, no_words)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([vis, words])
    assert_param_grads(module, nonzero=False)
    assert torch.equal(words.grad, torch.zeros_like(words))  # nothing is read from the words
    with torch.no_grad():
        # the output does not depend on the word values at all ...
        other = module(vis, torch.randn_like(words) * 100.0, no_words)
        assert torch.equal(other, out)
        # ... because the gathered language feature is zero: after the position norm only its bias is left
        pixels = vis.detach().flatten(2).transpose(1, 2)
        expected = module.out_proj(module.vis_proj(pixels) * module.gathered_norm.bias)
        torch.testing.assert_close(out, expected.transpose(1, 2).reshape(out.shape))


@pytest.mark.parametrize(("b", "h", "w"), [(1, 3, 4), (2, 1, 1), (1, 1, 1)])
def test_pixel_word_batch_of_one_and_single_position(b, h, w):
    module = PixelWordAttention(C, D, num_heads=2)
    vis, words, word_mask = make_inputs(b, h=h, w=w, lengths=[3, 0][:b])
    vis, words = requires_grad(vis, words)
    out = module(vis, words, word_mask)
    assert out.shape == (b, C, h, w)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([vis, words])
    assert_param_grads(module, nonzero=False)


@pytest.mark.parametrize("norm_affine", [True, False])
def test_pixel_word_batch_independence(norm_affine):
    module = PixelWordAttention(C, D, num_heads=2, dropout=0.3, norm_affine=norm_affine).eval()
    vis, words, word_mask = make_inputs(b=3, lengths=[5, 3, 2])
    inputs = {"feats": vis, "words": words, "word_mask": word_mask}

    def perturb(inputs, j):
        new = {key: value.clone() for key, value in inputs.items()}
        new["feats"][j] = torch.randn_like(new["feats"][j]) * 3.0
        new["words"][j] = torch.randn_like(new["words"][j])
        new["word_mask"][j] = ~new["word_mask"][j]
        return new

    def run(inputs):
        return module(**inputs)

    for changed, watched in [(0, 1), (2, 0), (1, 2)]:
        assert_batch_independent(run, inputs, perturb, changed=changed, watched=watched)
    with torch.no_grad():  # the perturbation really changes the perturbed sample
        assert (run(perturb(inputs, 1))[1] - run(inputs)[1]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm_affine", [True, False])
def test_pixel_word_keeps_dtype(dtype, norm_affine):
    reference = PixelWordAttention(C, D, num_heads=2, norm_affine=norm_affine).eval()
    module = PixelWordAttention(C, D, num_heads=2, norm_affine=norm_affine, dtype=dtype).eval()
    module.load_state_dict(reference.state_dict())
    assert all(p.dtype == dtype for p in module.parameters())
    vis, words, word_mask = make_inputs(b=3, lengths=[5, 2, 0])
    vis_t, words_t = requires_grad(vis.to(dtype), words.to(dtype))
    out = module(vis_t, words_t, word_mask)
    assert out.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([vis_t, words_t])
    assert_param_grads(module, nonzero=False)
    with torch.no_grad():
        expected = reference(vis, words, word_mask)
    scale = expected.abs().max().item()
    assert (out.detach().float() - expected).abs().max() <= 0.05 * scale + 0.02


@pytest.mark.parametrize("norm_affine", [True, False])
def test_pixel_word_every_parameter_gets_a_gradient(norm_affine):
    module = PixelWordAttention(C, D, num_heads=2, norm_affine=norm_affine)
    vis, words, word_mask = make_inputs(b=2, h=3, w=4, lengths=[5, 2])  # >1 position: the norms' weights act
    out = module(vis, words, word_mask)
    backward_sum(out)
    assert_param_grads(module)


@pytest.mark.parametrize("norm_affine", [True, False])
def test_pixel_word_has_no_dead_parameters(norm_affine):
    # a parameter whose change never changes the output (e.g. a bias in front of the
    # position norm, or a key bias under the softmax) is useless; every one here must matter
    module = PixelWordAttention(C, D, num_heads=2, norm_affine=norm_affine, dtype=torch.float64).eval()
    vis, words, word_mask = make_inputs(b=2, dtype=torch.float64, lengths=[5, 2])
    with torch.no_grad():
        before = module(vis, words, word_mask)
        for name, param in module.named_parameters():
            saved = param.clone()
            param.add_(torch.randn_like(param) * 0.5)
            change = (module(vis, words, word_mask) - before).abs().max().item()
            param.copy_(saved)
            assert change > 1e-6, f"{name} does not change the output"


def test_pixel_word_shape_errors_name_the_argument():
    module = PixelWordAttention(C, D)
    vis, words, word_mask = make_inputs()
    with pytest.raises(ShapeError, match=r"^feats: .*\(c: 7 != 8\)"):
        module(torch.randn(2, 7, 3, 4), words, word_mask)
    with pytest.raises(ShapeError, match=r"^feats: "):
        module(vis[0], words, word_mask)
    with pytest.raises(ShapeError, match=r"^feats: "):
        module(vis.flatten(2), words, word_mask)
    with pytest.raises(ShapeError, match=r"^words: .*\(d: 5 != 6\)"):
        module(vis, torch.randn(2, 5, 5), word_mask)
    with pytest.raises(ShapeError, match=r"^words: .*\(b: 3 != 2\)"):
        module(vis, torch.randn(3, 5, D), word_mask)
    with pytest.raises(ShapeError, match=r"^words: "):
        module(vis, words[0], word_mask)
    with pytest.raises(ShapeError, match=r"^word_mask: .*\(l: 4 != 5\)"):
        module(vis, words, word_mask[:, :4])
    with pytest.raises(ShapeError, match=r"^word_mask: .*\(b: 1 != 2\)"):
        module(vis, words, word_mask[:1])
    with pytest.raises(TypeError, match=r"^word_mask: "):
        module(vis, words, word_mask.long())


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("dim", {"dim": 0}),
        ("text_dim", {"text_dim": 0}),
        ("key_dim", {"key_dim": 0}),
        ("key_dim", {"key_dim": -4}),
        ("num_heads", {"num_heads": 0}),
        ("num_heads", {"num_heads": 3}),  # does not divide dim = 8
        ("num_heads", {"num_heads": 4, "key_dim": 6}),  # divides dim, not key_dim
    ],
)
def test_pixel_word_bad_constructor_arguments(name, args):
    kwargs = {"dim": C, "text_dim": D, **args}
    value = str(args[name])
    with pytest.raises(ValueError, match=rf"^{name}: .*{value}"):
        PixelWordAttention(kwargs.pop("dim"), kwargs.pop("text_dim"), **kwargs)


def test_pixel_word_bad_norm_affine():
    with pytest.raises(ValueError, match=r"^norm_affine: expected True or False; got 'no'"):
        PixelWordAttention(C, D, norm_affine="no")


def test_pixel_word_bad_dropout():
    with pytest.raises(ValueError, match="dropout"):
        PixelWordAttention(C, D, dropout=1.5)


# ================================================================= LanguageGate


@given(
    b=st.integers(1, 3),
    c=st.integers(1, 16),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    zero_init=st.booleans(),
)
def test_gate_output_shapes(b, c, h, w, zero_init):
    gate = LanguageGate(c, zero_init=zero_init)
    x, fused = torch.randn(b, c, h, w), torch.randn(b, c, h, w)
    out = gate(x, fused)
    assert out.shape == (b, c, h, w) and out.dtype == x.dtype
    assert_finite(out)
    # |tanh| <= 1: the gate never adds more than the fused feature itself
    assert ((out - x).abs() <= fused.abs() + 1e-6).all()
    if zero_init:
        assert torch.equal(out, x)


def test_gate_matches_literal_reference():
    gate = LanguageGate(C, zero_init=False, dtype=torch.float64)
    x, fused = torch.randn(2, C, 3, 4, dtype=torch.float64), torch.randn(2, C, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        out = gate(x, fused)
        torch.testing.assert_close(out, literal_gate(gate, x, fused), atol=1e-12, rtol=1e-12)
    assert (out - x).abs().max() > 1e-3  # a non-zero-initialised gate does let the fused signal in


def test_gate_structure_is_lavt():
    gate = LanguageGate(16)
    assert gate.hidden.bias is None and gate.out.bias is None
    assert torch.equal(gate.out.weight, torch.zeros(16, 16))
    assert gate.hidden.weight.abs().sum() > 0
    assert LanguageGate(16, zero_init=False).out.weight.abs().sum() > 0


def test_gate_zero_init_returns_x_exactly():
    gate = LanguageGate(C)
    x = torch.randn(2, C, 5, 3)
    fused = torch.randn(2, C, 5, 3) * 1e3
    assert torch.equal(gate(x, fused), x)


def test_gate_zero_init_first_step_gradients():
    gate = LanguageGate(C)
    x, fused = requires_grad(torch.randn(2, C, 3, 4), torch.randn(2, C, 3, 4))
    backward_sum(gate(x, fused))
    # documented: W2 = 0, so no gradient reaches W1 (nor the fused input) on the first step ...
    assert gate.hidden.weight.grad is not None
    assert torch.equal(gate.hidden.weight.grad, torch.zeros_like(gate.hidden.weight))
    assert torch.equal(fused.grad, torch.zeros_like(fused))
    assert gate.out.weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()
    # ... and after one update of W2 it does
    with torch.no_grad():
        gate.out.weight -= 0.1 * gate.out.weight.grad
    gate.zero_grad()
    backward_sum(gate(x, fused))
    assert_param_grads(gate)


def test_gate_every_parameter_gets_a_gradient_without_zero_init():
    gate = LanguageGate(C, zero_init=False)
    x, fused = requires_grad(torch.randn(2, C, 3, 4), torch.randn(2, C, 3, 4))
    backward_sum(gate(x, fused))
    assert_param_grads(gate)
    assert fused.grad.abs().sum() > 0


@pytest.mark.parametrize("zero_init", [True, False])
@pytest.mark.parametrize(("b", "h", "w"), [(1, 3, 4), (2, 1, 1), (1, 1, 1)])
def test_gate_batch_of_one_and_single_position(b, h, w, zero_init):
    gate = LanguageGate(C, zero_init=zero_init)
    x, fused = requires_grad(torch.randn(b, C, h, w), torch.randn(b, C, h, w))
    out = gate(x, fused)
    assert out.shape == (b, C, h, w)
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([x, fused])
    assert_param_grads(gate, nonzero=False)


def test_gate_batch_independence():
    gate = LanguageGate(C, zero_init=False).eval()
    inputs = {"x": torch.randn(3, C, 3, 4), "fused": torch.randn(3, C, 3, 4)}

    def perturb(inputs, j):
        new = {key: value.clone() for key, value in inputs.items()}
        new["x"][j] = torch.randn_like(new["x"][j])
        new["fused"][j] = torch.randn_like(new["fused"][j]) * 5.0
        return new

    for changed, watched in [(0, 1), (2, 0)]:
        assert_batch_independent(lambda inp: gate(**inp), inputs, perturb, changed=changed, watched=watched)


@pytest.mark.parametrize("zero_init", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gate_keeps_dtype(dtype, zero_init):
    gate = LanguageGate(C, zero_init=zero_init, dtype=dtype)
    assert all(p.dtype == dtype for p in gate.parameters())
    x, fused = requires_grad(torch.randn(2, C, 3, 4, dtype=dtype), torch.randn(2, C, 3, 4, dtype=dtype))
    out = gate(x, fused)
    assert out.dtype == dtype
    assert_finite(out)
    backward_sum(out)
    assert_inputs_grads_finite([x, fused])
    assert_param_grads(gate, nonzero=False)


def test_gate_shape_errors_name_the_argument():
    gate = LanguageGate(C)
    x, fused = torch.randn(2, C, 4, 5), torch.randn(2, C, 4, 5)
    with pytest.raises(ShapeError, match=r"^x: .*\(c: 7 != 8\)"):
        gate(torch.randn(2, 7, 4, 5), fused)
    with pytest.raises(ShapeError, match=r"^x: "):
        gate(x[0], fused)
    with pytest.raises(ShapeError, match=r"^fused: .*\(h: 5 != 4\)"):
        gate(x, torch.randn(2, C, 5, 5))
    with pytest.raises(ShapeError, match=r"^fused: .*\(w: 4 != 5\)"):
        gate(x, torch.randn(2, C, 4, 4))
    with pytest.raises(ShapeError, match=r"^fused: .*\(b: 1 != 2\)"):
        gate(x, fused[:1])
    with pytest.raises(ShapeError, match=r"^fused: .*\(c: 4 != 8\)"):
        gate(x, torch.randn(2, 4, 4, 5))


@pytest.mark.parametrize("dim", [0, -3])
def test_gate_bad_constructor_arguments(dim):
    with pytest.raises(ValueError, match=rf"^dim: .*{dim}"):
        LanguageGate(dim)


# ======================================================================== compile


def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    stage = FusionStage(C, D).eval()
    vis, words, word_mask = make_inputs(b=2, lengths=[5, 0])
    compiled = torch.compile(stage)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(vis, words, word_mask), stage(vis, words, word_mask), atol=1e-5, rtol=1e-5
        )
