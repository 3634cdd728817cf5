"""Cost reports: ``python -m reference_models.bench flops``.

``flops`` builds every ``_base`` model (random init, nothing downloaded), runs one forward
pass at the paper's input size with batch 1, and counts multiply-accumulates with
:class:`torch.utils.flop_counter.FlopCounterMode` (MACs = counted FLOPs / 2). The count
covers every matrix multiply, convolution and attention product of the whole model, text
encoder included; it leaves out element-wise work (norms, activations, resizes, softmax),
as fvcore and the papers' counters do. Each row stands beside the paper's figure, and each
SADLR row beside its baseline as an overhead ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

__all__ = ["PAPER_GMACS", "count_macs", "flops_table", "main"]

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


def _environment() -> str:
    threads = torch.get_num_threads()
    return f"{platform.node()} | {platform.processor() or platform.machine()} | torch {torch.__version__} | {threads} threads"


def count_macs(model: torch.nn.Module, image_size: int, max_words: int) -> float:
    """Multiply-accumulates (in G) of one forward pass with batch 1 at ``image_size``."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.randn(1, 3, image_size, image_size)
    input_ids = torch.randint(1, 1000, (1, max_words))
    attention_mask = torch.ones(1, max_words, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    model.eval()
    # nn.MultiheadAttention's eval fast path is one fused op the counter cannot see into
    # (open_clip's ViT would lose a quarter of its MACs); count the ordinary path.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter, torch.no_grad():
            model(images, input_ids, attention_mask)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() / 2e9


def flops_table(names: list[str] | None = None, *, progress: bool = True) -> list[dict]:
    """Measure every named (default: every ``_base``) model; one dict per row."""
    from . import build_model, list_models

    names = names or [n for n in list_models() if n.endswith(("_base", "_swint"))]
    rows = []
    for name in names:
        start = time.perf_counter()
        model = build_model(name)
        gmacs = count_macs(model, model.config.image_size, model.config.max_words)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(
            {
                "model": name,
                "input": model.config.image_size,
                "gmacs": round(gmacs, 2),
                "paper_gmacs": PAPER_GMACS.get(name),
                "params_m": round(params, 2),
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


def _format_flops(rows: list[dict]) -> str:
    header = f"{'model':<18} {'input':>5} {'GMACs':>8} {'paper':>7} {'ours/paper':>10} {'params(M)':>9} {'SADLR ratio':>11} {'paper ratio':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        lines.append(
            f"{r['model']:<18} {r['input']:>5} {r['gmacs']:>8.1f} {fmt(r['paper_gmacs'], '>7.1f'):>7} "
            f"{fmt(r['vs_paper'], '>10.3f'):>10} {r['params_m']:>9.1f} {fmt(r.get('sadlr_ratio'), '>11.3f'):>11} "
            f"{fmt(r.get('paper_sadlr_ratio'), '>11.3f'):>11}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_models.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="section", required=True)
    flops = sub.add_parser("flops", help="multiply-accumulates of every _base model at the paper's input size")
    flops.add_argument("--models", nargs="*", help="registry names (default: every _base model)")
    flops.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)

    print(f"# {args.section} | {_environment()} | device cpu | float32")
    if args.section == "flops":
        rows = flops_table(args.models)
        print(_format_flops(rows))
        print("MACs: matmul/conv/attention multiply-accumulates of one batch-1 forward (text encoder included).")
    if args.json:
        args.json.write_text(json.dumps({"section": args.section, "environment": _environment(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
