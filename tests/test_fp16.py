"""float16 at the papers' sizes: every public layer stays finite and close to float32.

Two ways of running in half precision are checked, each against the float32 forward of the
same weights: a float32 layer under ``torch.autocast("cpu", torch.float16)`` and a layer
converted with ``.half()`` fed float16 inputs. Inputs are post-ReLU magnitudes (``|N(0, 1)| *
12``), large enough that a float16 sum over a 120 x 120 map overflows (65504 is float16's
largest value), as it did in the refiner's mask pooling before the reductions accumulated in
float32.

Sizes are the papers': SADLR's 512 x 120 x 120 map at 480 px, LAVT's first and last stages,
ASDA's 26 x 26 ViT-B/16 grid at 416 px, S2RM's Swin-B pyramid at 512 px. The spatial sizes,
word counts and the channels every reduction runs over are the papers'; the visual widths of
every case with convolutions (ASDA's aggregators, aligner and concat fusion, CASG, the FPN)
are cut on the CPU, where torch runs float16 convolutions through a slow reference kernel
unless the processor has native float16 arithmetic (more than 15 minutes for CASG at full
width, 863 s for ASDA's published aggregator); full widths belong to the GPU check. No case
takes more than a few seconds on any x86-64. Forward passes only.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rislayers as R
from rislayers.functional import masked_avg_pool2d, masked_mean
from tests.layer_checks import tensors_of

# Measured relative errors (max |fp16 - fp32| / max |fp32| per output) are 4e-4 to 2.4e-3;
# the bound leaves headroom without letting an overflow or a lost count pass.
RELATIVE = 1e-2
SCALE = 12.0


def magnitudes(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).abs() * SCALE


#: The visual width of the cases whose convolutions run at the paper's width on a GPU only:
#: without native float16 arithmetic (AVX-512 without FP16, most x86-64) torch runs float16
#: convolutions through a reference kernel, and ASDA's published aggregator at 768 channels
#: took 863 s on a 2-core CPU. Spatial sizes, word counts and text widths stay the papers';
#: the full widths are the GPU check's (``python -m reference_models.bench gpu``).
_CPU_WIDTH = 64


def sentence_words(length: int, dim: int, *, padding: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    words = torch.randn(1, length, dim)
    return words, torch.arange(length)[None] < length - padding


PAPER_CASES: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], tuple]]] = {
    "refiner (SADLR, 480 px)": (
        lambda: R.DynamicQueryRefiner(512, 768),
        lambda: (magnitudes(1, 512, 120, 120), *sentence_words(20, 768)),
    ),
    "pixel-word attention (LAVT stage 1)": (
        lambda: R.PixelWordAttention(128, 768),
        lambda: (magnitudes(1, 128, 120, 120), *sentence_words(20, 768)),
    ),
    "pixel-word attention (LAVT stage 4)": (
        lambda: R.PixelWordAttention(1024, 768),
        lambda: (magnitudes(1, 1024, 15, 15), *sentence_words(20, 768)),
    ),
    "language gate (LAVT stage 1)": (
        lambda: R.LanguageGate(128, zero_init=False),
        lambda: (magnitudes(1, 128, 120, 120), magnitudes(1, 128, 120, 120)),
    ),
    "selector (ASDA, 416 px)": (
        lambda: R.AdaptiveLayerSelector(768, 512, num_candidates=3),
        lambda: (magnitudes(1, 3, 768, 26, 26), torch.randn(1, 3, 768), torch.randn(1, 512)),
    ),
    "aggregator (ASDA, 416 px)": (
        lambda: R.ScaleWiseAggregator(_CPU_WIDTH, 512),
        lambda: (magnitudes(1, _CPU_WIDTH, 26, 26), magnitudes(1, _CPU_WIDTH, 26, 26), magnitudes(1, _CPU_WIDTH, 26, 26), torch.randn(1, 512)),
    ),
    "aligner (ASDA, 416 px)": (
        lambda: R.DualBranchAligner(_CPU_WIDTH, 512, decoder_dim=16),
        lambda: (magnitudes(1, _CPU_WIDTH, 26, 26), *sentence_words(20, 512)),
    ),
    "coparser (S2RM, Swin-B, 512 px)": (
        lambda: R.SpatialRecurrentCoparser(1024, 768, size=16),
        lambda: (magnitudes(1, 1024, 16, 16), *sentence_words(20, 768)),
    ),
    "CASG decoder (S2RM, 512 px)": (
        lambda: R.CASGDecoder((8, 8, 8, 16), 768),
        lambda: (
            [magnitudes(1, 8, 128, 128), magnitudes(1, 8, 64, 64), magnitudes(1, 8, 32, 32), magnitudes(1, 16, 16, 16)],
            torch.randn(1, 768),
        ),
    ),
    "tile & concat fusion (S2RM Table IV, 512 px)": (
        lambda: R.TileConcatFusion(1024, 768),
        lambda: (magnitudes(1, 1024, 16, 16), *sentence_words(20, 768)),
    ),
    # widths cut as for CASG (fp16 convolutions on the CPU are ~100x slower), sizes the paper's
    "FPN decoder (S2RM Table IV, 512 px)": (
        lambda: R.FPNDecoder((8, 8, 8, 16), dim=8),
        lambda: ([magnitudes(1, 8, 128, 128), magnitudes(1, 8, 64, 64), magnitudes(1, 8, 32, 32), magnitudes(1, 16, 16, 16)],),
    ),
    "concat fusion (ASDA Table 2 (b), 416 px)": (
        lambda: R.ConcatProjectFusion((_CPU_WIDTH,) * 3, 512, _CPU_WIDTH),
        lambda: ([magnitudes(1, _CPU_WIDTH, 26, 26) for _ in range(3)], torch.randn(1, 512)),
    ),
    "published aggregator (ASDA code, 416 px)": (
        lambda: R.PublishedScaleWiseAggregator(_CPU_WIDTH, 512, hidden_dim=16),
        lambda: (magnitudes(1, _CPU_WIDTH, 26, 26), magnitudes(1, _CPU_WIDTH, 26, 26), magnitudes(1, _CPU_WIDTH, 26, 26), torch.randn(1, 512)),
    ),
}


def to_half(value):
    if isinstance(value, (list, tuple)):
        return type(value)(to_half(v) for v in value)
    return value.half() if value.is_floating_point() else value


def relative_error(output, reference) -> float:
    """Largest ``max |a - b| / max |b|`` over the floating outputs (inf when one is not finite)."""
    worst = 0.0
    for a, b in zip(tensors_of(output), tensors_of(reference)):
        if not a.is_floating_point():
            assert torch.equal(a, b)
            continue
        if not torch.isfinite(a).all():
            return float("inf")
        scale = b.float().abs().max().clamp_min(1e-6)
        worst = max(worst, ((a.float() - b.float()).abs().max() / scale).item())
    return worst


def half_precision_run(module: torch.nn.Module, args: tuple, mode: str):
    with torch.no_grad():
        if mode == "autocast":
            with torch.autocast("cpu", dtype=torch.float16):
                return module(*args)
        return module.half()(*to_half(args))


@pytest.mark.parametrize("mode", ["autocast", "half"])
@pytest.mark.parametrize("case", list(PAPER_CASES))
def test_paper_size_half_precision_is_finite_and_close(case, mode):
    build, make_args = PAPER_CASES[case]
    module = build().eval()
    args = make_args()
    with torch.no_grad():
        reference = module(*args)
    output = half_precision_run(module, args, mode)
    if mode == "half":
        assert all(t.dtype == torch.float16 for t in tensors_of(output) if t.is_floating_point())
    error = relative_error(output, reference)
    assert error < RELATIVE, f"{case}, {mode}: relative error {error:.3g}"


def test_half_refiner_pools_a_256_map_without_losing_the_count():
    """65536 positions: a float16 count is inf, and a constant 0.5 map used to pool to 0."""
    feats = torch.full((1, 4, 256, 256), 0.5, dtype=torch.float16)
    pooled = masked_avg_pool2d(feats, torch.ones(1, 256, 256, dtype=torch.float16))
    assert pooled.dtype == torch.float16
    torch.testing.assert_close(pooled, torch.full((1, 4), 0.5, dtype=torch.float16))
    refiner = R.DynamicQueryRefiner(4, 3, hidden_dims=(4,), num_iters=2, update="replace").half()
    with torch.no_grad():
        refiner.classifier.bias.copy_(torch.tensor([-50.0, 50.0]))  # everything is the object
        out = refiner(feats, sentence=torch.randn(1, 3, dtype=torch.float16))
    torch.testing.assert_close(out.queries[1], pooled)  # "replace": Q2 = O1, the pooled map


@settings(max_examples=8)
@given(
    h=st.integers(1, 260),
    w=st.integers(1, 260),
    scale=st.floats(0.01, 30.0),
    density=st.floats(0.0, 1.0),
    mode=st.sampled_from(["autocast", "half"]),
)
def test_pooling_in_half_precision_matches_float32(h, w, scale, density, mode):
    feats = torch.randn(2, 3, h, w).abs() * scale
    weights = (torch.rand(2, h, w) < density).float()
    reference = masked_avg_pool2d(feats, weights)
    if mode == "autocast":
        with torch.autocast("cpu", dtype=torch.float16):
            pooled = masked_avg_pool2d(feats.half(), weights.half())
    else:
        pooled = masked_avg_pool2d(feats.half(), weights.half())
    assert pooled.dtype == torch.float16
    torch.testing.assert_close(pooled.float(), reference, rtol=2e-3, atol=1e-3 * scale)


@settings(max_examples=8)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    l=st.integers(1, 30),
    scale=st.floats(0.1, 30.0),
    mode=st.sampled_from(["autocast", "half"]),
)
def test_refiner_and_word_mean_in_half_precision_match_float32(b, h, w, l, scale, mode):
    words = torch.randn(b, l, 16) * scale
    word_mask = torch.arange(l)[None] < torch.randint(1, l + 1, (b, 1))
    torch.testing.assert_close(
        masked_mean(words.half(), word_mask).float(), masked_mean(words, word_mask), rtol=2e-3, atol=2e-3 * scale
    )
    # Soft pooling: at a few positions a hard mask can flip on a rounding, which is not an error.
    refiner = R.DynamicQueryRefiner(32, 16, hidden_dims=(16, 32), pooling="soft").eval()
    args = (torch.randn(b, 32, h, w).abs() * scale, words, word_mask)
    with torch.no_grad():
        reference = refiner(*args)
    error = relative_error(half_precision_run(refiner, args, mode), reference)
    assert error < RELATIVE, f"relative error {error:.3g}"
