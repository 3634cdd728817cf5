"""A LAVT release at toy size: LAVT's key names and shapes, random values, its file layout.

The names and shapes were read from LAVT's code (yz93/LAVT-RIS: ``lib/backbone.py``'s
``MultiModalSwinTransformer``, ``lib/mask_predictor.py``'s ``SimpleDecoding``, the
Transformers-3 BERT it saves as ``bert_model`` without its pooler, and ``train.py``'s
checkpoint dict); this generator is ours. Parity with LAVT's own forward is measured outside
the repository (see docs/guides/lavt_weights.md); these fixtures test the conversion.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

__all__ = ["lavt_model_state", "bert_state", "save_release"]


def _normal(*shape: int, g: torch.Generator, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * std + mean


def _norm(prefix: str, dim: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _normal(dim, g=g, std=0.1, mean=1.0), f"{prefix}.bias": _normal(dim, g=g, std=0.1)}


def _linear(prefix: str, out_dim: int, in_dim: int, g: torch.Generator, *, bias: bool = True, conv1d: bool = False) -> dict[str, torch.Tensor]:
    weight = _normal(out_dim, in_dim, 1, g=g) if conv1d else _normal(out_dim, in_dim, g=g)
    return {f"{prefix}.weight": weight, **({f"{prefix}.bias": _normal(out_dim, g=g)} if bias else {})}


def _batch_norm(prefix: str, dim: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        **_norm(prefix, dim, g),
        f"{prefix}.running_mean": _normal(dim, g=g, std=0.1),
        f"{prefix}.running_var": torch.rand(dim, generator=g) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(1234),
    }


def _block(prefix: str, dim: int, heads: int, window: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        **_norm(f"{prefix}.norm1", dim, g),
        f"{prefix}.attn.relative_position_bias_table": _normal((2 * window - 1) ** 2, heads, g=g),
        f"{prefix}.attn.relative_position_index": torch.randint(0, (2 * window - 1) ** 2, (window**2, window**2), generator=g),
        **_linear(f"{prefix}.attn.qkv", 3 * dim, dim, g),
        **_linear(f"{prefix}.attn.proj", dim, dim, g),
        **_norm(f"{prefix}.norm2", dim, g),
        **_linear(f"{prefix}.mlp.fc1", 4 * dim, dim, g),
        **_linear(f"{prefix}.mlp.fc2", dim, 4 * dim, g),
    }


def _fusion(prefix: str, dim: int, text_dim: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """PWAM (1x1 Conv1d everywhere) and the language gate of one stage."""
    attention = f"{prefix}.fusion.image_lang_att"
    return {
        **_linear(f"{prefix}.fusion.vis_project.0", dim, dim, g, conv1d=True),
        **_linear(f"{attention}.f_key.0", dim, text_dim, g, conv1d=True),
        **_linear(f"{attention}.f_query.0", dim, dim, g, conv1d=True),
        **_linear(f"{attention}.f_value.0", dim, text_dim, g, conv1d=True),
        **_linear(f"{attention}.W.0", dim, dim, g, conv1d=True),
        **_linear(f"{prefix}.fusion.project_mm.0", dim, dim, g, conv1d=True),
        **_linear(f"{prefix}.res_gate.0", dim, dim, g, bias=False),
        **_linear(f"{prefix}.res_gate.2", dim, dim, g, bias=False),
    }


def _decoder(embed_dim: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """``SimpleDecoding(8 * embed_dim)``: hidden width 4 * embed_dim, levels 4, 3, 2, then 1x1 to 2."""
    hidden = 4 * embed_dim
    state: dict[str, torch.Tensor] = {}
    for level, skip in ((4, 8 * embed_dim + 4 * embed_dim), (3, hidden + 2 * embed_dim), (2, hidden + embed_dim)):
        state[f"classifier.conv1_{level}.weight"] = _normal(hidden, skip, 3, 3, g=g)
        state.update(_batch_norm(f"classifier.bn1_{level}", hidden, g))
        state[f"classifier.conv2_{level}.weight"] = _normal(hidden, hidden, 3, 3, g=g)
        state.update(_batch_norm(f"classifier.bn2_{level}", hidden, g))
    state["classifier.conv1_1.weight"] = _normal(2, hidden, 1, 1, g=g, std=0.5)
    state["classifier.conv1_1.bias"] = _normal(2, g=g)
    return state


def lavt_model_state(
    embed_dim: int = 8, depths=(1, 1, 2, 1), heads=(1, 1, 2, 2), window: int = 2, text_dim: int = 64, seed: int = 0
) -> dict[str, torch.Tensor]:
    """LAVT's ``model`` state dict (its ``lavt`` model: multimodal Swin and decoder).

    Args:
        embed_dim: Swin's stage-1 channels (LAVT's Swin-B: 128).
        depths: blocks per stage.
        heads: attention heads per stage.
        window: Swin's window (LAVT: 12).
        text_dim: BERT's width, which every PWAM reads (LAVT: 768).
        seed: the random values.
    """
    g = torch.Generator().manual_seed(seed)
    state = {
        **_linear("backbone.patch_embed.proj", embed_dim, 3, g),
        **_norm("backbone.patch_embed.norm", embed_dim, g),
    }
    state["backbone.patch_embed.proj.weight"] = _normal(embed_dim, 3, 4, 4, g=g, std=0.2)
    for i, (depth, head) in enumerate(zip(depths, heads)):
        dim = embed_dim * 2**i
        for j in range(depth):
            state.update(_block(f"backbone.layers.{i}.blocks.{j}", dim, head, window, g))
        state.update(_fusion(f"backbone.layers.{i}", dim, text_dim, g))
        if i + 1 < len(depths):  # patch merging at the end of the stage
            state[f"backbone.layers.{i}.downsample.reduction.weight"] = _normal(2 * dim, 4 * dim, g=g)
            state.update(_norm(f"backbone.layers.{i}.downsample.norm", 4 * dim, g))
    for i in range(len(depths)):
        state.update(_norm(f"backbone.norm{i}", embed_dim * 2**i, g))
    state.update(_decoder(embed_dim, g))
    return state


def bert_state(dim: int = 64, layers: int = 1, intermediate: int = 128, vocab: int = 30522, seed: int = 1) -> dict[str, torch.Tensor]:
    """LAVT's ``bert_model``: a ``BertModel`` state dict without its pooler.

    Args:
        dim: hidden width.
        layers: encoder layers.
        intermediate: MLP width.
        vocab: vocabulary size (bert-base-uncased: 30522).
        seed: the random values.
    """
    g = torch.Generator().manual_seed(seed)
    state = {
        "embeddings.word_embeddings.weight": _normal(vocab, dim, g=g),
        "embeddings.position_embeddings.weight": _normal(512, dim, g=g),
        "embeddings.token_type_embeddings.weight": _normal(2, dim, g=g),
        **_norm("embeddings.LayerNorm", dim, g),
    }
    for k in range(layers):
        layer = f"encoder.layer.{k}"
        for name in ("query", "key", "value"):
            state.update(_linear(f"{layer}.attention.self.{name}", dim, dim, g))
        state.update(_linear(f"{layer}.attention.output.dense", dim, dim, g))
        state.update(_norm(f"{layer}.attention.output.LayerNorm", dim, g))
        state.update(_linear(f"{layer}.intermediate.dense", intermediate, dim, g))
        state.update(_linear(f"{layer}.output.dense", dim, intermediate, g))
        state.update(_norm(f"{layer}.output.LayerNorm", dim, g))
    return state


def save_release(path: Path, model: dict[str, torch.Tensor] | None = None, bert: dict[str, torch.Tensor] | None = None,
                 *, lavt_one: bool = False) -> Path:
    """Write a release as LAVT's ``train.py`` does: weights, optimizer, epoch, args, scheduler.

    Args:
        path: the ``.pth`` to write.
        model: LAVT's model state (default: :func:`lavt_model_state`).
        bert: its BERT's (default: :func:`bert_state`).
        lavt_one: the ``lavt_one`` layout: BERT inside ``model`` as ``text_encoder.*``.
    """
    model = lavt_model_state() if model is None else model
    bert = bert_state() if bert is None else bert
    args = argparse.Namespace(model="lavt_one" if lavt_one else "lavt", swin_type="base", img_size=480, window12=True,
                              lr=5e-5, weight_decay=1e-2, mha="", fusion_drop=0.0)
    extras = {"optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1]}]}, "epoch": 39, "args": args,
              "lr_scheduler": {"base_lrs": [5e-5], "last_epoch": 1000, "lr_lambdas": [None]}}
    if lavt_one:
        weights = {"model": {**model, **{f"text_encoder.{k}": v for k, v in bert.items()}}}
    else:
        weights = {"model": model, "bert_model": bert}
    torch.save({**weights, **extras}, path)
    return path
