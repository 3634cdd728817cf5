"""The autocast convention of every layer: under autocast, floating outputs have the autocast dtype.

Documented in docs/guides/plug_a_layer.md ("Device and dtype"). Each layer runs at small
widths under CPU autocast (bfloat16) with float32 weights and inputs; its float outputs
must come back in bfloat16, as ``nn.Linear`` and ``nn.TransformerEncoderLayer`` do, and in
float32 outside autocast.
"""

from __future__ import annotations

import pytest
import torch

import rislayers as R
from tests.layer_checks import float_tensors_of

B, C, D = 2, 16, 8


def _words():
    return torch.randn(B, 3, D), torch.tensor([[True, True, False], [True, True, True]])


def _maps(dims=(8, 16, 24, 32), size=16):
    return [torch.randn(B, c, size >> i, size >> i) for i, c in enumerate(dims)]


def _cases():
    feats = lambda: torch.randn(B, C, 4, 4)  # noqa: E731
    word_call = lambda: (feats(), *_words())  # noqa: E731
    levels = lambda: (feats(), feats(), feats(), torch.randn(B, D))  # noqa: E731
    return {
        "PixelWordAttention": (lambda: R.PixelWordAttention(C, D), word_call),
        "LanguageGate": (lambda: R.LanguageGate(C, zero_init=False), lambda: (feats(), feats())),
        "SpatialRecurrentCoparser": (lambda: R.SpatialRecurrentCoparser(C, D, size=4), word_call),
        "SpatialRecurrentCoparser-concat": (lambda: R.SpatialRecurrentCoparser(C, D, size=4, fusion="concat"), word_call),
        "TileConcatFusion": (lambda: R.TileConcatFusion(C, D), word_call),
        "DualBranchAligner": (lambda: R.DualBranchAligner(C, D, num_masks=4, num_heads=4, upsample_steps=1), word_call),
        "PublishedDualBranchAligner": (
            lambda: R.PublishedDualBranchAligner(C, D, num_masks=4, num_heads=4, upsample_steps=1), word_call
        ),
        "SingleBranchAligner": (lambda: R.SingleBranchAligner(C, D, num_heads=4, upsample_steps=1), word_call),
        "VisualOnlyAligner": (lambda: R.VisualOnlyAligner(C, D, num_heads=4, upsample_steps=1), word_call),
        "ScaleWiseAggregator": (lambda: R.ScaleWiseAggregator(C, D, hidden_dim=4), levels),
        "PublishedScaleWiseAggregator": (lambda: R.PublishedScaleWiseAggregator(C, D, hidden_dim=4), levels),
        "ConcatProjectFusion": (lambda: R.ConcatProjectFusion((C, C), D, 12), lambda: ([feats(), feats()], torch.randn(B, D))),
        "CASGDecoder": (lambda: R.CASGDecoder((8, 16, 24, 32), D), lambda: (_maps(), torch.randn(B, D))),
        "FPNDecoder": (lambda: R.FPNDecoder((8, 16, 24, 32), dim=8), lambda: (_maps(),)),
        "AdaptiveLayerSelector-straight_through": (
            lambda: R.AdaptiveLayerSelector(C, D, num_candidates=3),
            lambda: (torch.randn(B, 3, C, 4, 4), torch.randn(B, 3, C), torch.randn(B, D)),
        ),
        "AdaptiveLayerSelector-none": (
            lambda: R.AdaptiveLayerSelector(C, D, num_candidates=3, gradient="none"),
            lambda: (torch.randn(B, 3, C, 4, 4), torch.randn(B, 3, C), torch.randn(B, D)),
        ),
        "AdaptiveLayerSelector-soft": (
            lambda: R.AdaptiveLayerSelector(C, D, num_candidates=3, gradient="soft"),
            lambda: (torch.randn(B, 3, C, 4, 4), torch.randn(B, 3, C), torch.randn(B, D)),
        ),
        "DynamicQueryRefiner": (lambda: R.DynamicQueryRefiner(C, D, hidden_dims=(8, 8)), word_call),
    }


CASES = _cases()


def _outputs(name, output):
    if name == "DynamicQueryRefiner":
        return [*output.logits, *output.queries]
    return float_tensors_of(output)


@pytest.mark.parametrize("name", sorted(CASES))
def test_under_cpu_autocast_every_float_output_has_the_autocast_dtype(name):
    build, inputs = CASES[name]
    torch.manual_seed(0)
    layer = build().eval()
    args = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = _outputs(name, layer(*args))
    assert outputs and [t.dtype for t in outputs] == [torch.bfloat16] * len(outputs)
    with torch.no_grad():
        plain = _outputs(name, layer(*args))
    assert [t.dtype for t in plain] == [torch.float32] * len(plain)  # outside autocast: unchanged


def test_integer_outputs_keep_their_dtype_under_autocast():
    build, inputs = CASES["AdaptiveLayerSelector-straight_through"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert build()(*inputs()).index.dtype == torch.int64


def test_torch_layers_follow_the_same_convention():
    # The reason for the convention: a torch residual block returns the autocast dtype too.
    block = torch.nn.TransformerEncoderLayer(C, 4, batch_first=True).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(torch.randn(B, 5, C)).dtype == torch.bfloat16
