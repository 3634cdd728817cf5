"""CPU benchmark of SpatialRecurrentCoparser: implementation="gemm" vs the literal "shift".

Run it as ``.venv/bin/python benchmarks/coparser.py`` (``--help`` for options). For every
map size ``h = w`` and channel count ``c`` it measures, side by side in one run:

- part ``coparse``: the coparsing step alone (Eq. 5-8, the four groups,
  :meth:`SpatialRecurrentCoparser.coparse` on ``(b, n, c)`` inputs);
- part ``layer``: the whole layer (Eq. 1-10 and the fusion) in training mode, with
  ``--words`` words of ``--text-dim`` channels (a third of them padding).

Columns: forward time (under ``torch.no_grad``, i.e. inference), forward+backward time
(a training step: output summed and back-propagated into the inputs and parameters), and
the peak memory of each, for "gemm" and "shift" and their ratio shift/gemm. Times are the
median of ``--repeats`` runs after ``--warmup`` runs.

Peak memory on CPU: there is no allocator high-water mark to read as on CUDA, and the
process RSS mixes in the allocator's caching and earlier work. So each step is run once
more under ``torch.profiler.profile(profile_memory=True)``, which records every
allocation and free made through PyTorch's CPU allocator (all threads) with a timestamp.
Sorting those events by time and taking the maximum of the running sum gives the peak
number of bytes of tensor storage the step had live *on top of* what existed before it
(inputs and parameters are allocated beforehand, so they are not counted; activations
saved for backward, temporaries and the gradients produced are). This is the quantity
the implementation controls and the one that grows with batch size.

The measurement itself lives in :mod:`reference_models.bench.coparser`, which the ``layers``
section and the ``gpu`` check of ``python -m reference_models.bench`` share.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_models.bench.coparser import (  # noqa: E402
    coparser_header,
    coparser_rows,
    coparser_targets,
    format_coparser_row,
)
from reference_models.bench.report import cpu_name  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 15, 16, 20], help="map sizes h = w")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768], help="visual channels c")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-dim", type=int, default=768, help="word channels d (whole layer)")
    parser.add_argument("--words", type=int, default=20, help="words per sentence l (whole layer)")
    parser.add_argument("--parts", nargs="+", choices=("coparse", "layer"), default=["coparse", "layer"])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"batch {args.batch}, median of {args.repeats} after {args.warmup} warm-up; "
          f"layer: l={args.words} words, d={args.text_dim}, training mode")
    print("times in ms; peak = extra tensor bytes live during the step (MiB); x = shift/gemm")
    print(coparser_header())
    rows = coparser_rows(
        args.parts, args.sizes, args.dims, batch=args.batch, text_dim=args.text_dim, words=args.words,
        warmup=args.warmup, repeats=args.repeats, on_row=lambda row: print(format_coparser_row(row), flush=True),
    )

    # Acceptance targets of issue #3 (h = w = 16, c = 768, batch 8).
    checks = coparser_targets(rows)
    if checks is not None:
        print("targets at h=w=16, c=768, batch 8: " + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
