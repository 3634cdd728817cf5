"""``bench layers``: every rislayers layer alone, at the size it has in its paper's system.

Forward and forward+backward time with peak extra memory of each layer; the ``layers``
command then adds the S2RM coparser's "gemm" against the literal "shift"
(:mod:`reference_models.bench.coparser`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..devices import resolve_device
from .measure import MIB, make_steps, measure_steps
from .report import optional

__all__ = ["LayerCase", "layer_cases", "layers_table", "layers_header", "format_layer_row"]


@dataclass(frozen=True)
class LayerCase:
    """One row of the ``layers`` section: a layer, the size it runs at, and its inputs.

    Args:
        layer: the rislayers class name.
        setting: the sizes, in words (shown in the table).
        build: ``build(batch, device)`` -> ``(module, run, tensors)``: the module, a
            zero-argument callable running it, and the inputs that take gradients.
    """

    layer: str
    setting: str
    build: Callable[[int, torch.device], tuple[torch.nn.Module, Callable[[], Any], list[torch.Tensor]]]


def _words(batch: int, length: int, dim: int, device: torch.device):
    """Word features with a third of the tokens padding (the mask honoured by every layer)."""
    words = torch.randn(batch, length, dim, device=device, requires_grad=True)
    mask = torch.arange(length, device=device)[None, :] < max(1, length - length // 3)
    return words, mask.expand(batch, length).contiguous()


def _refiner_case(dim, text_dim, hw, words, hidden):
    def build(batch, device):
        from rislayers import DynamicQueryRefiner

        module = DynamicQueryRefiner(dim, text_dim, hidden_dims=hidden, device=device)
        feats = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(feats, text, mask), [feats, text]

    return LayerCase("DynamicQueryRefiner", f"c={dim} {hw}x{hw}, d={text_dim} l={words}, 3 iters {list(hidden)}", build)


def _pixel_word_case(dim, text_dim, hw, words, stage):
    def build(batch, device):
        from rislayers import PixelWordAttention

        module = PixelWordAttention(dim, text_dim, device=device)
        vis = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(vis, text, mask), [vis, text]

    return LayerCase("PixelWordAttention", f"stage {stage}: c={dim} {hw}x{hw}, d={text_dim} l={words}", build)


def _gate_case(dim, hw):
    def build(batch, device):
        from rislayers import LanguageGate

        module = LanguageGate(dim, device=device)
        vis = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        fused = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        return module, lambda: module(vis, fused), [vis, fused]

    return LayerCase("LanguageGate", f"stage 1: c={dim} {hw}x{hw}", build)


def _selector_case(dim, text_dim, hw, k):
    def build(batch, device):
        from rislayers import AdaptiveLayerSelector

        module = AdaptiveLayerSelector(dim, text_dim, num_candidates=k, device=device)
        candidates = torch.randn(batch, k, dim, hw, hw, device=device, requires_grad=True)
        cls_tokens = torch.randn(batch, k, dim, device=device, requires_grad=True)
        sentence = torch.randn(batch, text_dim, device=device, requires_grad=True)
        return module, lambda: module(candidates, cls_tokens, sentence), [candidates, cls_tokens, sentence]

    return LayerCase("AdaptiveLayerSelector", f"k={k} c={dim} {hw}x{hw}, d={text_dim}", build)


def _aggregator_case(dim, text_dim, hw):
    def build(batch, device):
        from rislayers import ScaleWiseAggregator

        module = ScaleWiseAggregator(dim, text_dim, device=device)
        maps = [torch.randn(batch, dim, hw, hw, device=device, requires_grad=True) for _ in range(3)]
        sentence = torch.randn(batch, text_dim, device=device, requires_grad=True)
        return module, lambda: module(*maps, sentence), [*maps, sentence]

    return LayerCase("ScaleWiseAggregator", f"c={dim} {hw}x{hw}, d={text_dim}", build)


def _aligner_case(dim, text_dim, hw, words, masks):
    def build(batch, device):
        from rislayers import DualBranchAligner

        module = DualBranchAligner(dim, text_dim, num_masks=masks, device=device)
        coarse = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(coarse, text, mask), [coarse, text]

    out = hw * 8
    return LayerCase("DualBranchAligner", f"c={dim} {hw}x{hw}->{out}x{out}, d={text_dim} l={words}, {masks} masks", build)


def _coparser_case(dim, text_dim, hw, words, implementation):
    def build(batch, device):
        from rislayers import SpatialRecurrentCoparser

        module = SpatialRecurrentCoparser(dim, text_dim, size=(hw, hw), implementation=implementation, device=device)
        vis = torch.randn(batch, dim, hw, hw, device=device, requires_grad=True)
        text, mask = _words(batch, words, text_dim, device)
        return module, lambda: module(vis, text, mask), [vis, text]

    return LayerCase("SpatialRecurrentCoparser", f"{implementation}: c={dim} {hw}x{hw}, d={text_dim} l={words}", build)


def _casg_case(dims, text_dim, hw):
    def build(batch, device):
        from rislayers import CASGDecoder

        module = CASGDecoder(dims, text_dim, device=device)
        features = [
            torch.randn(batch, c, hw >> k, hw >> k, device=device, requires_grad=True) for k, c in enumerate(dims)
        ]
        sentence = torch.randn(batch, text_dim, device=device, requires_grad=True)
        return module, lambda: module(features, sentence), [*features, sentence]

    sizes = "/".join(str(hw >> k) for k in range(4))
    return LayerCase("CASGDecoder", f"c={'/'.join(map(str, dims))} at {sizes} px, d={text_dim}", build)


def layer_cases(quick: bool = False) -> list[LayerCase]:
    """Every rislayers layer at its paper's size (``quick``: small sizes for a smoke run).

    Paper sizes: SADLR refines LAVT's 512-channel stride-4 map at 480 px (120x120) with
    BERT-base words (768, l=20); LAVT's PWAMs sit on Swin-B's four stages at 480 px; ASDA
    works on CLIP ViT-B/16's 26x26 grid at 416 px (768 channels, 512-d CLIP text, 17 tokens,
    aligner width 512, 32 masks, 3 candidate layers); S2RM's coparser fuses Swin-B's
    stride-32 map at 512 px (16x16, 1024 channels) and CASG decodes Swin-B's pyramid at 512 px.

    Args:
        quick: small widths and maps instead.

    Example:
        >>> [case.layer for case in layer_cases()][:2]
        ['DynamicQueryRefiner', 'PixelWordAttention']
    """
    if quick:
        return [
            _refiner_case(32, 16, 16, 8, (8, 32)),
            _pixel_word_case(16, 16, 16, 8, 1),
            _gate_case(16, 16),
            _selector_case(32, 16, 8, 3),
            _aggregator_case(32, 16, 8),
            _aligner_case(32, 16, 4, 8, 4),
            _coparser_case(32, 16, 6, 8, "gemm"),
            _coparser_case(32, 16, 6, 8, "shift"),
            _casg_case((8, 16, 16, 32), 16, 32),
        ]
    return [
        _refiner_case(512, 768, 120, 20, (128, 512)),
        *[_pixel_word_case(128 << k, 768, 120 >> k, 20, k + 1) for k in range(4)],
        _gate_case(128, 120),
        _selector_case(768, 512, 26, 3),
        _aggregator_case(768, 512, 26),
        _aligner_case(512, 512, 26, 17, 32),
        _coparser_case(1024, 768, 16, 20, "gemm"),
        _coparser_case(1024, 768, 16, 20, "shift"),
        _casg_case((128, 256, 512, 1024), 768, 128),
    ]


def layers_table(
    cases: Sequence[LayerCase],
    *,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Forward and forward+backward time and peak extra memory of each layer case.

    Modules are in training mode (batch statistics); the forward runs under
    ``torch.no_grad``; the backward reaches the inputs and every parameter
    (:func:`~reference_models.bench.measure.make_steps`).

    Args:
        cases: the rows to measure (e.g. :func:`layer_cases`).
        batch: batch size of every case.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"bf16"`` (autocast).
        repeats: timed runs (median).
        warmup: untimed runs first.
        memory: also measure peak extra memory.
        on_row: called with each row as soon as it is measured.
    """
    device = resolve_device(str(device))
    rows = []
    for case in cases:
        torch.manual_seed(0)
        module, run, tensors = case.build(batch, device)
        module.train()
        steps = make_steps(module, run, tensors, device=device, dtype=dtype)
        res = measure_steps(*steps, warmup=warmup, repeats=repeats, device=device, memory=memory)
        row = {
            "layer": case.layer,
            "setting": case.setting,
            "batch": batch,
            "params_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 3),
            "fwd_ms": round(res["fwd"] * 1e3, 3),
            "fb_ms": round(res["fb"] * 1e3, 3),
            "peak_fwd_mib": None if res["mem_fwd"] is None else round(res["mem_fwd"] / MIB, 1),
            "peak_fb_mib": None if res["mem_fb"] is None else round(res["mem_fb"] / MIB, 1),
        }
        rows.append(row)
        if on_row is not None:
            on_row(row)
        del module, run, tensors, steps
    return rows


def layers_header() -> str:
    """Column titles of the layer table."""
    return (
        f"{'layer':<25} {'setting':<48} {'params(M)':>9} {'fwd ms':>9} {'f+b ms':>9} "
        f"{'pk fwd MiB':>10} {'pk f+b MiB':>10}"
    )


def format_layer_row(r: dict) -> str:
    """One line of the layer table.

    Args:
        r: a row from :func:`layers_table`.
    """
    return (
        f"{r['layer']:<25} {r['setting']:<48} {r['params_m']:>9.3f} {r['fwd_ms']:>9.2f} {r['fb_ms']:>9.2f} "
        f"{optional(r['peak_fwd_mib'], '>10.1f'):>10} {optional(r['peak_fb_mib'], '>10.1f'):>10}"
    )
