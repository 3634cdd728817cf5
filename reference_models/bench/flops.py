"""``bench flops``: multiply-accumulates of every ``_base`` model at its paper's input size.

Each model is built with random weights (nothing downloaded) and run once at batch 1 under
:class:`torch.utils.flop_counter.FlopCounterMode` (MACs = counted FLOPs / 2). The count
covers every matrix multiply, convolution and attention product of the whole model, text
encoder included; it leaves out element-wise work (norms, activations, resizes, softmax),
as fvcore and the papers' counters do. Each row stands beside the paper's figure, and each
SADLR row beside its baseline as an overhead ratio.

Attention kernels: torch counts its CUDA flash, memory-efficient and cuDNN kernels, and the
math fallback is plain ``bmm``; the kernels it has no formula for (the CPU flash kernel in
torch 2.14, which ``nn.MultiheadAttention`` and ``F.scaled_dot_product_attention`` use on
CPU) get :func:`attention_forward_flops` and :func:`attention_backward_flops`, so that a
count does not depend on the torch version or the kernel chosen.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .report import optional

__all__ = [
    "PAPER_GMACS",
    "attention_forward_flops",
    "attention_backward_flops",
    "attention_formulas",
    "counting",
    "count_macs",
    "macs_by_part",
    "flops_models",
    "flops_table",
    "format_flops",
    "format_parts",
    "experiment_flops_table",
    "format_experiment_flops",
]

# Published multiply-accumulates (G): SADLR Table 3 at 480x480; S2RM Table II at 512x512.
PAPER_GMACS: dict[str, float] = {
    "lavt_base": 197.4,
    "lavt_sadlr_base": 203.5,
    "vlt_base": 142.6,
    "vlt_sadlr_base": 148.6,
    "lts_base": 133.3,
    "lts_sadlr_base": 139.4,
    "s2rm_swint": 92.9,
    "s2rm_base": 199.0,
}


# SDPA kernels torch's counter may have no formula for (torch 2.14 has none for the CPU flash
# kernel behind nn.MultiheadAttention and F.scaled_dot_product_attention, so a model's count
# would depend on the torch version). The CUDA flash, efficient and cuDNN kernels have
# torch's own formulas, and the math fallback runs as bmm calls the counter sees anyway.
_ATTENTION_FORWARD = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math_for_mps",
)
_ATTENTION_BACKWARD = (
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_fused_attention_overrideable_backward",
)


def _attention_sizes(query_shape, key_shape, value_shape) -> tuple[int, int, int, int, int]:
    """``(batch x heads, s_q, s_k, e, e_v)`` of ``(..., s, e)`` query, key and value shapes."""
    *lead, s_q, e = query_shape
    # The query's heads count: grouped-query kernels broadcast fewer key/value heads.
    return math.prod(lead), s_q, key_shape[-2], e, value_shape[-1]


def attention_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a fused attention forward: ``q @ k^T`` then ``attention @ v`` (2 per MAC).

    Softmax, scaling and masking are element-wise work and not counted, as for the matrix
    products elsewhere; a causal mask is not discounted (as in torch's own formulas).

    Args:
        query_shape: ``(..., s_q, e)``.
        key_shape: ``(..., s_k, e)``.
        value_shape: ``(..., s_k, e_v)``.
        *args: the kernel's other arguments (ignored).
        out_shape: the output's shapes (ignored).
        **kwargs: the kernel's keyword arguments (ignored).

    Example:
        >>> attention_forward_flops((2, 4, 10, 8), (2, 4, 12, 8), (2, 4, 12, 6))  # 2 * 8 * 10 * 12 * (8 + 6)
        26880
    """
    batch, s_q, s_k, e, e_v = _attention_sizes(query_shape, key_shape, value_shape)
    return 2 * batch * s_q * s_k * (e + e_v)


def attention_backward_flops(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a fused attention backward, by the convention of torch's own formulas.

    Five products: the scores ``q @ k^T`` recomputed, ``grad @ v^T`` and ``attention^T @
    grad`` (the value's gradient), then the query's and the key's gradients from the scores'.

    Args:
        grad_shape: the output gradient, ``(..., s_q, e_v)``.
        query_shape: ``(..., s_q, e)``.
        key_shape: ``(..., s_k, e)``.
        value_shape: ``(..., s_k, e_v)``.
        *args: the kernel's other arguments (ignored).
        out_shape: the output's shapes (ignored).
        **kwargs: the kernel's keyword arguments (ignored).
    """
    batch, s_q, s_k, e, e_v = _attention_sizes(query_shape, key_shape, value_shape)
    return 2 * batch * s_q * s_k * (3 * e + 2 * e_v)


def attention_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas for the attention kernels of this torch that its flop counter lacks.

    A kernel that torch already counts keeps torch's formula (the two agree where both
    exist); a kernel this torch does not have is skipped.

    Example:
        >>> from torch.utils.flop_counter import flop_registry
        >>> all(op not in flop_registry for op in attention_formulas())
        True
    """
    from torch.utils.flop_counter import flop_registry

    formulas: dict[Any, Callable[..., int]] = {}
    for names, formula in ((_ATTENTION_FORWARD, attention_forward_flops), (_ATTENTION_BACKWARD, attention_backward_flops)):
        for name in names:
            op = getattr(torch.ops.aten, name, None)
            if op is not None and op not in flop_registry:
                formulas[op] = formula
    return formulas


@contextlib.contextmanager
def counting() -> Iterator[FlopCounterMode]:
    """Count the FLOPs of what runs inside, every attention kernel included.

    The counter is :class:`~torch.utils.flop_counter.FlopCounterMode` with
    :func:`attention_formulas` added; nn.MultiheadAttention's inference fast path is
    switched off meanwhile, because it is one fused op the counter cannot see into
    (open_clip's ViT would lose a quarter of its MACs).

    Example:
        >>> with counting() as counter:
        ...     _ = torch.ones(2, 3) @ torch.ones(3, 4)
        >>> counter.get_total_flops()
        48
    """
    counter = FlopCounterMode(display=False, custom_mapping=attention_formulas())
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _count(model: torch.nn.Module, image_size: int, max_words: int) -> FlopCounterMode:
    images = torch.randn(1, 3, image_size, image_size)
    input_ids = torch.randint(1, 1000, (1, max_words))
    attention_mask = torch.ones(1, max_words, dtype=torch.long)
    model.eval()
    with counting() as counter, torch.no_grad():
        model(images, input_ids, attention_mask)
    return counter


def count_macs(model: torch.nn.Module, image_size: int, max_words: int) -> float:
    """Multiply-accumulates (in G) of one forward pass with batch 1 at ``image_size``.

    Args:
        model: a reference model (called as ``model(images, input_ids, attention_mask)``).
        image_size: square input size.
        max_words: sentence length in tokens.
    """
    return _count(model, image_size, max_words).get_total_flops() / 2e9


def macs_by_part(model: torch.nn.Module, image_size: int, max_words: int) -> dict[str, float]:
    """Multiply-accumulates (in G) of one batch-1 forward, split by the model's child modules.

    Each direct child (``text_encoder``, ``backbone``, ``decoder``, ...) gets what ran inside
    it, in the order the children were registered; work done by the model's own ``forward``
    outside every child is ``"(model)"``. The parts sum to :func:`count_macs`.

    Args:
        model: a reference model (called as ``model(images, input_ids, attention_mask)``).
        image_size: square input size.
        max_words: sentence length in tokens.
    """
    counter = _count(model, image_size, max_words)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    parts: dict[str, float] = {}
    for child, _ in model.named_children():
        prefix = f"{root}.{child}"
        entered = [name for name in counts if name == prefix or name.startswith(prefix + ".")]
        # A model may call a child's submodules directly (LAVT runs its Swin stage by stage,
        # never the backbone as a whole): sum the outermost modules that ran under the child.
        outermost = [name for name in entered if not any(name.startswith(other + ".") for other in entered)]
        flops = sum(sum(counts[name].values()) for name in outermost)
        if flops:
            parts[child] = flops / 2e9
    rest = counter.get_total_flops() / 2e9 - sum(parts.values())
    if abs(rest) > 1e-9:
        parts["(model)"] = rest
    return parts


def flops_models() -> list[str]:
    """The models ``flops`` measures by default: the papers' sizes (``_base`` and ``_swint``).

    Example:
        >>> "lavt_sadlr_base" in flops_models()
        True
    """
    from ..registry import list_models

    return [n for n in list_models() if n.endswith(("_base", "_swint"))]


def flops_table(
    names: list[str] | None = None, *, overrides: dict[str, Any] | None = None, progress: bool = True
) -> list[dict]:
    """Measure every named (default: every ``_base``) model; one dict per row.

    Each row also holds ``"parts"``, the split of :func:`macs_by_part` (G per child module).

    Args:
        names: registry names (default: every ``_base`` and ``_swint`` model).
        overrides: config fields changed in every model (e.g. ``{"swin_window": 12}``); the
            paper's figures then stand beside a different architecture.
        progress: report each model's time on stderr.
    """
    from ..registry import build_model

    names = names or flops_models()
    rows = []
    for name in names:
        start = time.perf_counter()
        model = build_model(name, **(overrides or {}))
        parts = macs_by_part(model, model.config.image_size, model.config.text.max_words)
        gmacs = sum(parts.values())
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(
            {
                "model": name,
                "input": model.config.image_size,
                "gmacs": round(gmacs, 6),
                "paper_gmacs": PAPER_GMACS.get(name),
                "params_m": round(params, 2),
                "parts": {part: round(value, 6) for part, value in parts.items()},
            }
        )
        del model
        if progress:
            print(f"  measured {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    by_name = {r["model"]: r for r in rows}
    for row in rows:
        paper = row["paper_gmacs"]
        row["vs_paper"] = round(row["gmacs"] / paper, 3) if paper else None
        base = row["model"].replace("_sadlr", "")
        if base != row["model"] and base in by_name:
            row["sadlr_ratio"] = round(row["gmacs"] / by_name[base]["gmacs"], 3)
            paper_base = PAPER_GMACS.get(base)
            row["paper_sadlr_ratio"] = round(paper / paper_base, 3) if paper and paper_base else None
    return rows


def _gmacs(value: float) -> str:
    # One decimal is enough for the papers' sizes; tiny models cost thousandths of a G.
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def format_flops(rows: list[dict]) -> str:
    """The ``flops`` table: each model's MACs beside the paper's figure and its SADLR ratio.

    Args:
        rows: rows from :func:`flops_table`.
    """
    header = f"{'model':<18} {'input':>5} {'GMACs':>8} {'paper':>7} {'ours/paper':>10} {'params(M)':>9} {'SADLR ratio':>11} {'paper ratio':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<18} {r['input']:>5} {_gmacs(r['gmacs']):>8} {optional(r['paper_gmacs'], '>7.1f'):>7} "
            f"{optional(r['vs_paper'], '>10.3f'):>10} {r['params_m']:>9.1f} {optional(r.get('sadlr_ratio'), '>11.3f'):>11} "
            f"{optional(r.get('paper_sadlr_ratio'), '>11.3f'):>11}"
        )
    return "\n".join(lines)


def format_parts(rows: list[dict]) -> str:
    """The ``--parts`` lines: each model's MACs split by child module.

    Args:
        rows: rows from :func:`flops_table`.
    """
    lines = ["GMACs by part (the model's child modules, in the order they are built):"]
    width = max(len(r["model"]) for r in rows)
    for r in rows:
        parts = "  ".join(f"{part} {_gmacs(value)}" for part, value in r["parts"].items())
        lines.append(f"{r['model']:<{width}}  {parts}")
    return "\n".join(lines)


def experiment_flops_table(experiments: list, *, size: str = "base", progress: bool = True) -> list[dict]:
    """Measure each available experiment's model; one dict per row, beside the paper's FLOPs.

    Args:
        experiments: :class:`~reference_models.experiments.Experiment` rows (the unavailable
            ones are the caller's to leave out).
        size: ``"base"`` (the paper's size for each row) or ``"tiny"``.
        progress: report each row's time on stderr.

    Example:
        >>> from reference_models.experiments import select_experiments
        >>> rows = experiment_flops_table(select_experiments(["sadlr/table4c/sum"]), size="tiny", progress=False)
        >>> rows[0]["experiment"], rows[0]["model"], rows[0]["paper_gmacs"]
        ('sadlr/table4c/sum', 'lavt_sadlr_tiny', None)
    """
    from ..experiments import build_experiment

    rows = []
    for experiment in experiments:
        start = time.perf_counter()
        model = build_experiment(experiment.name, size)
        gmacs = count_macs(model, model.config.image_size, model.config.text.max_words)
        paper = experiment.reported_gmacs
        rows.append({
            "experiment": experiment.name,
            "row": experiment.row,
            "model": model.config.name,
            "input": model.config.image_size,
            "gmacs": round(gmacs, 6),
            "paper_gmacs": paper,
            # a tiny model's count says nothing against the paper's size
            "vs_paper": round(gmacs / paper, 3) if paper and size == "base" else None,
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        })
        del model
        if progress:
            print(f"  measured {experiment.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    _add_plugin_ratios(rows)
    return rows


def _add_plugin_ratios(rows: list[dict]) -> None:
    """SADLR's cost: each ``*_sadlr_*`` row over its baseline's row of the same table.

    SADLR Table 3 prints each baseline beside "+ S", so the ratio of the paper's two FLOPs
    is what the plug-in costs in the paper; ours is the same ratio of our counts.
    """
    by_table_model = {(r["experiment"].rsplit("/", 1)[0], r["model"]): r for r in rows}
    for row in rows:
        base = by_table_model.get((row["experiment"].rsplit("/", 1)[0], row["model"].replace("_sadlr", "")))
        if base is None or base is row:
            continue
        row["sadlr_ratio"] = round(row["gmacs"] / base["gmacs"], 3)
        papers = (row["paper_gmacs"], base["paper_gmacs"])
        row["paper_sadlr_ratio"] = round(papers[0] / papers[1], 3) if all(papers) else None


def format_experiment_flops(rows: list[dict]) -> str:
    """The ``flops --experiment`` table: each row's MACs beside the paper's FLOPs.

    Args:
        rows: rows from :func:`experiment_flops_table`.
    """
    width = max([len("experiment"), *(len(r["experiment"]) for r in rows)])
    header = (
        f"{'experiment':<{width}} {'row':<16} {'model':<16} {'input':>5} {'GMACs':>8} {'paper':>7} {'ours/paper':>10} "
        f"{'params(M)':>9} {'SADLR ratio':>11} {'paper ratio':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['experiment']:<{width}} {r['row']:<16} {r['model']:<16} {r['input']:>5} {_gmacs(r['gmacs']):>8} "
            f"{optional(r['paper_gmacs'], '>7.1f'):>7} {optional(r['vs_paper'], '>10.3f'):>10} {r['params_m']:>9.1f} "
            f"{optional(r.get('sadlr_ratio'), '>11.3f'):>11} {optional(r.get('paper_sadlr_ratio'), '>11.3f'):>11}"
        )
    return "\n".join(lines)
